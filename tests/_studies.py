"""Shared inputs of the study tests: an HH-format pair file on the embedded task's vocabulary,
and a recipe that trains on its labels."""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

from lire_ray.demo import reviews

ROOT = Path(__file__).resolve().parents[1]


def write_hh_pairs(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` HH records: the chosen reply a positive review, the rejected one a negative one."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            product = reviews.TRAIN_PRODUCTS[i % len(reviews.TRAIN_PRODUCTS)]
            prompt = f"\n\nHuman: {reviews.prompt_for(product, 'classic')}\n\nAssistant:"
            good = reviews.write_review(rng, "positive")
            bad = reviews.write_review(rng, "negative")
            fh.write(json.dumps({"chosen": prompt + good, "rejected": prompt + bad}) + "\n")
    return path


def label_recipe(path: Path, **sections) -> Path:
    """``configs/tiny-compare.yaml`` with a ``kind: label`` training reward; VADER and AFINN
    judge. ``sections`` replace top-level sections' keys (``{"data": {...}}`` merges)."""
    data = yaml.safe_load((ROOT / "configs" / "tiny-compare.yaml").read_text())
    data["rewards"].append({"name": "label", "kind": "label"})
    data["evolve"]["train_reward"] = "label"
    data["data"]["chat_template"] = "never"
    for name, value in sections.items():
        data[name] = {**data.get(name, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
