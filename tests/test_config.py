"""Recipe schema: every recipe validates; bad keys, types and values fail naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from lire_ray.config import DEFAULT_RECIPE, Recipe, load_recipe, parse_override
from lire_ray.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_recipes_and_tiny_is_default():
    assert DEFAULT_RECIPE in CONFIGS
    assert len(CONFIGS) >= 1


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_recipe_validates_and_names_its_launch_command(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# Launch:") and "jobs/" in first, first
    # Every reward model the recipe trains on or judges with exists.
    names = {rm.name for rm in recipe.rewards}
    assert recipe.train_reward_name in names
    assert set(recipe.eval.judges) <= names


def test_overrides_are_typed():
    r = load_recipe(None, ["train.lr=1e-5", "evolve.steps=3", 'sampler.stop=["\\n\\nHuman:"]',
                           "model.lora.enabled=true", "rewards.0.batch_size=7"])
    assert r.train.lr == pytest.approx(1e-5) and isinstance(r.train.lr, float)
    assert r.evolve.steps == 3
    assert r.sampler.stop == ["\n\nHuman:"]
    assert r.model.lora.enabled is True
    assert r.rewards[0].batch_size == 7


def test_aliases_map_short_keys():
    r = load_recipe(None, ["data=/pools/x", "loss=dpo"],
                    aliases={"data": "data.train", "loss": "loss.name"})
    assert r.data.train == "/pools/x"
    assert r.loss.name == "dpo"


def test_unknown_key_names_key_and_allowed():
    with pytest.raises(ConfigError) as ei:
        load_recipe(None, ["train.lrr=1"])
    msg = str(ei.value)
    assert "train.lrr" in msg and "lr" in msg and "epochs" in msg


def test_unknown_top_level_section():
    with pytest.raises(ConfigError, match="unknown key 'trainer'.*allowed here:.*train"):
        load_recipe(None, ["trainer.lr=1"])


@pytest.mark.parametrize("override,key", [
    ("train.lr=-1", "train.lr"),
    ("train.lr=fast", "train.lr"),
    ("sampler.backend=tgi", "sampler.backend"),
    ("loss.name=ppo", "loss.name"),
    ("sampler.top_p=1.5", "sampler.top_p"),
    ("evolve.steps=0", "evolve.steps"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as ei:
        load_recipe(None, [override])
    assert key in str(ei.value)


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="train_reward"):
        load_recipe(None, ["evolve.train_reward=nope"])
    with pytest.raises(ConfigError, match="diverse_beam_groups"):
        load_recipe(None, ["sampler.diverse_beam_groups=2", "sampler.backend=vllm"])
    with pytest.raises(ConfigError, match="unique"):
        load_recipe(None, ["rewards.1.name=vader"])
    # tiny.yaml is colocated: sampling ahead needs the trainer on other devices.
    with pytest.raises(ConfigError, match="placement=split"):
        load_recipe(None, ["evolve.max_staleness=1"])
    assert load_recipe(None, ["evolve.max_staleness=1", "resources.placement=split"]) \
        .evolve.max_staleness == 1
    with pytest.raises(ConfigError, match="sleep_level needs sampler.backend='vllm'"):
        load_recipe(None, ["sampler.sleep_level=1", "sampler.backend=hf"])
    with pytest.raises(ConfigError, match="sleep_level=2 drops the base weights"):
        load_recipe(None, ["sampler.sleep_level=2", "model.lora.enabled=true"])
    with pytest.raises(ConfigError, match="sampler.sleep_level"):
        load_recipe(None, ["sampler.sleep_level=3"])


def test_override_errors():
    with pytest.raises(ConfigError, match="key.path=value"):
        load_recipe(None, ["train.lr"])
    with pytest.raises(ConfigError, match="index"):
        load_recipe(None, ["rewards.9.name=x"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_recipe(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_recipe(scalar)


def test_parse_override_keeps_strings():
    assert parse_override("run.dir=./runs/a")[1] == "./runs/a"
    assert parse_override("model.policy=Qwen/Qwen2-0.5B")[1] == "Qwen/Qwen2-0.5B"
    assert parse_override("train.lr=2e-5")[1] == pytest.approx(2e-5)


def test_snapshot_round_trips(tmp_path):
    r = load_recipe(None, ["train.lr=3e-4"])
    snap = tmp_path / "snap.yaml"
    snap.write_text(r.to_yaml())
    assert load_recipe(snap) == r


def test_job_options_are_taken_out_of_the_overrides():
    from lire_ray.cli import take_job_options

    rest, opts = take_job_options(["input=p", "train.lr=1e-5", "output=o", "inputs=x"],
                                  ("input", "output"), required=("input",))
    assert rest == ["train.lr=1e-5", "inputs=x"] and opts == {"input": "p", "output": "o"}
    with pytest.raises(ConfigError, match="missing job option input="):
        take_job_options(["output=o"], ("input", "output"), required=("input",))
    with pytest.raises(ConfigError, match="output= needs a value"):
        take_job_options(["output="], ("output",))


# ---------------------------------------------------------------------------------------------
# run.seed, ray.forward_env.
# ---------------------------------------------------------------------------------------------

def test_run_seed_is_the_default_of_every_seed():
    r = load_recipe(None, ["run.seed=7"])
    assert (r.run.seed, r.sampler.seed, r.train.seed) == (7, 7, 7)
    # A seed the recipe sets itself stays.
    r = load_recipe(None, ["run.seed=7", "sampler.seed=3", "train.seed=null"])
    assert (r.sampler.seed, r.train.seed) == (3, 7)
    assert (Recipe().sampler.seed, Recipe().train.seed) == (0, 0)
    # config.yaml records the seeds used, so reloading it gives the same ones.
    again = Recipe.model_validate(__import__("yaml").safe_load(r.to_yaml()))
    assert (again.sampler.seed, again.train.seed) == (3, 7)
    with pytest.raises(ConfigError, match="run.seed"):
        load_recipe(None, ["run.seed=abc"])


def test_forward_env_takes_names_and_never_echoes_values():
    assert load_recipe(None, ["ray.forward_env=[MY_TOKEN, OTHER_1]"]).ray.forward_env == \
        ["MY_TOKEN", "OTHER_1"]
    with pytest.raises(ConfigError, match="ray.forward_env") as err:
        load_recipe(None, ["ray.forward_env=[MY_TOKEN=s3cr3t-value]"])
    assert "s3cr3t-value" not in str(err.value)


def test_forwarded_env_adds_recipe_names_and_respects_the_jobs_own():
    import json

    from lire_ray.env_forward import forwarded_env, submitted_job_env

    environ = {"HF_TOKEN": "h", "MY_TOKEN": "m", "UNLISTED": "u"}
    assert forwarded_env(["MY_TOKEN", "MISSING"], environ) == {"HF_TOKEN": "h", "MY_TOKEN": "m"}
    assert submitted_job_env(["MY_TOKEN"], environ) == {}  # not under ray job submit
    job = {"runtime_env": {"env_vars": {"HF_TOKEN": "h"}, "working_dir": "x"}}
    environ["RAY_JOB_CONFIG_JSON_ENV_VAR"] = json.dumps(job)
    # The job's own env_vars already reach every worker; Ray refuses them set twice.
    assert submitted_job_env(["MY_TOKEN"], environ) == {"MY_TOKEN": "m"}
