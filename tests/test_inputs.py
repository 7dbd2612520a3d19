"""Inputs a recipe names reach the actors as absolute local paths (actors may run in another
working directory: a cluster joined with ``ray.address=auto`` or ``ray job submit``)."""

from __future__ import annotations

import json

import pytest

from lire_ray.config import RewardModelConfig, load_recipe
from lire_ray.errors import ConfigError, ModelLoadError
from lire_ray.inputs import absolute_reward_paths, resolve_policy, resolve_reference
from lire_ray.rundir import COMPLETE_MARKER
from lire_ray.training.result import INFO_FILE, policy_in


def test_a_relative_local_policy_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "pol").mkdir(parents=True)
    recipe = load_recipe(None, ["model.policy=./models/pol"])
    assert resolve_policy(recipe) == str(tmp_path / "models" / "pol")
    # A hub id is passed on as it is; a missing local path is refused.
    assert resolve_policy(recipe, "org/name") == "org/name"
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_policy(recipe, "./models/missing")


def test_a_missing_model_path_names_its_recipe_key():
    recipe = load_recipe(None, ["model.policy=/nonexistent/model"])
    with pytest.raises(ModelLoadError, match=r"^model\.policy: local model path "
                       "'/nonexistent/model' does not exist"):
        resolve_policy(recipe)
    recipe = load_recipe(None, ["model.reference=/nonexistent/ref"])
    with pytest.raises(ModelLoadError, match=r"^model\.reference: .*'/nonexistent/ref'"):
        resolve_reference(recipe)


def test_a_relative_checkpoint_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "runs" / "e2"
    ckpt.mkdir(parents=True)
    (ckpt / INFO_FILE).write_text(json.dumps({"full_model": True}))
    with pytest.raises(ConfigError, match="COMPLETE"):
        policy_in("runs/e2", base="base")
    (ckpt / COMPLETE_MARKER).write_text("complete\n")
    assert policy_in("runs/e2", base="base").model == str(ckpt)


def test_local_reward_model_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rm").mkdir()
    rms = [RewardModelConfig(name="a", kind="hf", path="rm"),
           RewardModelConfig(name="b", kind="hf", path="org/hub-rm"),
           RewardModelConfig(name="c", kind="python", path="lire_ray.demo.reviews:vader_reward")]
    assert [rm.path for rm in absolute_reward_paths(rms)] == [
        str(tmp_path / "rm"), "org/hub-rm", "lire_ray.demo.reviews:vader_reward"]
