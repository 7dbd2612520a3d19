"""Reward kinds and inputs without Ray: .bin weights, chat turns, metadata, label, zscore rule."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lire_ray.config import RewardModelConfig, load_recipe
from lire_ray.demo.tiny_models import build_tiny_policy, build_tiny_reward_model
from lire_ray.errors import ConfigError, DataError, ModelLoadError
from lire_ray.pool import PoolRow
from lire_ray.rewards import RESERVED_KEYS, Pairs, RewardSet, format_reward_input


def _row(pid, responses, *, preferred=-1, meta=None, messages=None, prompt="Q?"):
    k = len(responses)
    return PoolRow(prompt_id=pid, prompt=prompt, responses=responses, sources=["human"] * k,
                   policy_version=[-1] * k, preferred=preferred,
                   metadata=None if meta is None else json.dumps(meta),
                   prompt_messages=None if messages is None else json.dumps(messages))


# --- reward functions used by path "tests.test_rewards_kinds:..." ---------------------------

def answer_reward(prompts, responses, metadata):
    """A verifiable-answer reward: 1 when the response contains the reference answer."""
    return [1.0 if m.get("answer") is not None and str(m["answer"]) in r else 0.0
            for r, m in zip(responses, metadata)]


SEEN: list = []


def recording_reward(prompts, responses, *, metadata=None):
    SEEN.append(json.loads(json.dumps(metadata)))
    for m in metadata:
        m.clear()  # a function may change its copy; the next scorer must not notice
    return [0.0] * len(responses)


def plain_reward(prompts, responses, **kwargs):
    # **kwargs does not ask for metadata: it must be called with the two lists only.
    assert kwargs == {}
    return [float(len(r)) for r in responses]


# --- weights: .bin only, safetensors preferred, malicious .bin refused ----------------------

class _CodeOnLoad:
    """Unpickling this calls ``open(marker, "w")``: stands for any code a .bin could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def rm_dirs(tmp_path_factory):
    from transformers import AutoModelForSequenceClassification

    root = tmp_path_factory.mktemp("rm")
    policy = build_tiny_policy(root / "policy")
    st = build_tiny_reward_model(root / "rm", tokenizer_dir=policy)
    # transformers 5 has no safe_serialization=False; a .bin checkpoint is what it wrote:
    # torch.save of the state dict, beside the config and the tokenizer files.
    binary = root / "rm_bin"
    shutil.copytree(st, binary)
    (binary / "model.safetensors").unlink()
    model = AutoModelForSequenceClassification.from_pretrained(st)
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()},
               binary / "pytorch_model.bin")
    return {"policy": policy, "st": st, "bin": binary, "root": root}


def _evil_dir(rm_dirs, name, keep_safetensors):
    d = rm_dirs["root"] / name
    shutil.copytree(rm_dirs["st"], d)
    if not keep_safetensors:
        (d / "model.safetensors").unlink()
    marker = rm_dirs["root"] / f"{name}.ran"
    torch.save({"score.weight": _CodeOnLoad(marker)}, d / "pytorch_model.bin")
    return d, marker


def test_bin_only_reward_model_scores_like_its_safetensors_twin(rm_dirs):
    assert sorted(p.name for p in rm_dirs["bin"].glob("*.bin")) == ["pytorch_model.bin"]
    assert not list(rm_dirs["bin"].glob("*.safetensors"))
    prompts = ["How was your day?", "Tell me about the food.", "Hi"]
    responses = ["The movie was great and I liked it.", "It was awful.", "ok"]
    got = {}
    for kind in ("st", "bin"):
        rs = RewardSet([RewardModelConfig(name="rm", path=str(rm_dirs[kind]), batch_size=2)])
        got[kind] = rs.score(prompts, responses)["rm"]
    assert got["bin"] == got["st"]
    assert len(set(got["st"])) == 3  # the inputs really differ, so equality means something


def test_a_bin_that_would_run_code_is_refused(rm_dirs):
    d, marker = _evil_dir(rm_dirs, "rm_evil", keep_safetensors=False)
    # The payload is live: an unrestricted torch.load runs it.
    torch.load(d / "pytorch_model.bin", weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ModelLoadError, match=r"reward model 'evil'.*rm_evil.*(?i:weights.only)"):
        RewardSet([RewardModelConfig(name="evil", path=str(d))])
    assert not marker.exists()


def test_safetensors_win_over_a_bin_beside_them(rm_dirs):
    d, marker = _evil_dir(rm_dirs, "rm_both", keep_safetensors=True)
    both = RewardSet([RewardModelConfig(name="rm", path=str(d))]).score(["Hi"], ["ok"])["rm"]
    plain = RewardSet([RewardModelConfig(name="rm", path=str(rm_dirs["st"]))]).score(
        ["Hi"], ["ok"])["rm"]
    assert both == plain and not marker.exists()


def test_policy_loader_takes_bin_weights_and_refuses_code(rm_dirs):
    from lire_ray.models import load_causal_lm

    policy = rm_dirs["policy"]
    binary, evil = rm_dirs["root"] / "policy_bin", rm_dirs["root"] / "policy_evil"
    st_model = load_causal_lm(policy, dtype="float32")
    for d in (binary, evil):
        shutil.copytree(policy, d)
        (d / "model.safetensors").unlink()
    torch.save(st_model.state_dict(), binary / "pytorch_model.bin")
    marker = rm_dirs["root"] / "policy_evil.ran"
    torch.save({"lm_head.weight": _CodeOnLoad(marker)}, evil / "pytorch_model.bin")
    ids = torch.tensor([[1, 5, 9, 7]])
    with torch.no_grad():
        assert torch.equal(load_causal_lm(binary, dtype="float32")(ids).logits,
                           st_model(ids).logits)
    with pytest.raises(ModelLoadError, match="policy_evil"):
        load_causal_lm(evil)
    assert not marker.exists()


def test_revision_and_safe_weights_reach_from_pretrained(monkeypatch):
    import transformers

    calls = []

    def fake(*args, **kwargs):
        calls.append(kwargs)
        raise OSError("offline")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake)
    with pytest.raises(ModelLoadError, match="'org/rm' at revision 'v2'.*offline"):
        RewardSet([RewardModelConfig(name="rm", path="org/rm", revision="v2")])
    assert calls[0]["revision"] == "v2"
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: None)
    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", fake)
    with pytest.raises(ModelLoadError):
        RewardSet([RewardModelConfig(name="rm", path="org/rm", revision="v2")])
    assert calls[1]["revision"] == "v2" and calls[1]["weights_only"] is True
    assert calls[1]["use_safetensors"] is None


# --- the reward model's own chat template over a row's chat turns ---------------------------

TURNS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "How are you?"}]
RENDERED = ("<|bos|><|system|>\nBe brief.<|eos|>\n<|user|>\nHi<|eos|>\n<|assistant|>\nHello!"
            "<|eos|>\n<|user|>\nHow are you?<|eos|>\n<|assistant|>\nFine.<|eos|>\n")


def test_chat_template_renders_the_turns_then_the_response(rm_dirs):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(rm_dirs["st"])
    assert format_reward_input("chat", "flat", "Fine.", tok, messages=TURNS) == RENDERED
    assert format_reward_input("chat", "How are you?", "Fine.", tok) == \
        "<|bos|><|user|>\nHow are you?<|eos|>\n<|assistant|>\nFine.<|eos|>\n"

    rs = RewardSet([RewardModelConfig(name="rm", path=str(rm_dirs["st"]), template="chat")])
    row = _row("a", ["Fine."], messages=TURNS, prompt="Human: Hi ... How are you?")
    got = rs.score_rows([row])[0].rewards["rm"][0]
    model = AutoModelForSequenceClassification.from_pretrained(rm_dirs["st"]).eval()
    with torch.no_grad():
        ids = tok([RENDERED], add_special_tokens=False, return_tensors="pt")
        want = model(**ids).logits[0, 0].item()
    assert got == pytest.approx(want, abs=1e-5)
    assert rs.score_samples([row], [["Fine."]])["rm"][0][0] == pytest.approx(want, abs=1e-5)
    flat = rs.score_rows([_row("a", ["Fine."], prompt="Human: Hi ... How are you?")])
    assert flat[0].rewards["rm"][0] != pytest.approx(want, abs=1e-5)


# --- Python functions with metadata ---------------------------------------------------------

def test_python_reward_gets_per_pair_metadata_from_rows():
    rs = RewardSet([RewardModelConfig(name="ans", kind="python",
                                      path=f"{__name__}:answer_reward")])
    rows = [_row("a", ["It is 42.", "It is 41."], meta={"answer": 42}, preferred=0),
            _row("b", ["paris?", "Paris."], meta={"answer": "Paris"}),
            _row("c", [], meta={"answer": "x"})]
    out = rs.score_rows(rows)
    assert [r.rewards["ans"] for r in out] == [(1.0, 0.0), (0.0, 1.0), ()]
    # Flat pairs: the caller's dicts, or {} for each pair.
    assert rs.score(["p", "p"], ["42", "42"], [{"answer": "42"}, None]) == {"ans": [1.0, 0.0]}
    assert rs.score(["p"], ["42"]) == {"ans": [0.0]}


def test_new_samples_are_scored_with_their_row_metadata():
    from actors.reward import RewardActor

    actor = RewardActor([RewardModelConfig(name="ans", kind="python",
                                           path=f"{__name__}:answer_reward")])
    rows = [_row("a", ["human answer"], meta={"answer": 42}), _row("b", []),
            _row("c", [], meta={"answer": "Paris"})]
    got = actor.score_samples(rows, [["42!", "41"], ["42"], ["Paris.", "paris", "Paris"]])
    assert got == {"ans": [[1.0, 0.0], [0.0], [1.0, 0.0, 1.0]]}
    label = RewardSet([RewardModelConfig(name="human", kind="label")])
    # The label reward scores only a dataset's own candidates: asked directly about a new
    # response it refuses, and score_samples leaves it out.
    with pytest.raises(DataError, match="prompt_id 'a'.*not one of the row's candidates"):
        label.score_pairs(Pairs.from_samples(rows[:1], [["x"]]))
    assert label.score_samples(rows[:1], [["x"]]) == {}
    with pytest.raises(DataError, match="2 sample lists for 3 rows"):
        actor.score_samples(rows, [["x"], ["y"]])


def test_metadata_dicts_hold_the_row_meta_and_the_candidate_position():
    SEEN.clear()
    rs = RewardSet([RewardModelConfig(name="rec", kind="python",
                                      path=f"{__name__}:recording_reward"),
                    RewardModelConfig(name="rec2", kind="python",
                                      path=f"{__name__}:recording_reward"),
                    RewardModelConfig(name="len", kind="python",
                                      path=f"{__name__}:plain_reward")])
    row = PoolRow(prompt_id="a", prompt="p", responses=["x", "yy"],
                  sources=["human", "policy@e1"], policy_version=[-1, 1], preferred=0,
                  metadata=json.dumps({"answer": "7", "tags": ["t"]}))
    out = rs.score_rows([row])[0]
    assert out.rewards == {"rec": (0.0, 0.0), "rec2": (0.0, 0.0), "len": (1.0, 2.0)}
    want = [{"answer": "7", "tags": ["t"], "prompt_id": "a", "candidate_index": 0,
             "num_candidates": 2, "preferred_index": 0, "is_preferred": True,
             "candidate_source": "human"},
            {"answer": "7", "tags": ["t"], "prompt_id": "a", "candidate_index": 1,
             "num_candidates": 2, "preferred_index": 0, "is_preferred": False,
             "candidate_source": "policy@e1"}]
    # The first function emptied its dicts; the second still got them whole.
    assert SEEN == [want, want]
    assert set(want[0]) - {"answer", "tags"} == set(RESERVED_KEYS)


def test_row_metadata_may_not_use_reserved_keys():
    rs = RewardSet([RewardModelConfig(name="ans", kind="python",
                                      path=f"{__name__}:answer_reward")])
    with pytest.raises(DataError, match=r"prompt_id 'z'.*\['is_preferred'\]"):
        rs.score_rows([_row("z", ["a"], meta={"is_preferred": True})])


# --- the label reward -----------------------------------------------------------------------

def test_label_reward_from_preferences_and_unpaired_labels():
    rs = RewardSet([RewardModelConfig(name="human", kind="label")])
    rows = [_row("pref", ["a", "b", "c"], preferred=1),
            _row("unpaired", ["a", "b", "c"], meta={"labels": [True, False, True]}),
            _row("both", ["a", "b"], preferred=0, meta={"labels": [False, True]})]
    out = rs.score_rows(rows)
    assert [r.rewards["human"] for r in out] == [(0.0, 1.0, 0.0), (1.0, 0.0, 1.0), (1.0, 0.0)]


def test_new_samples_are_judged_by_every_model_but_label():
    rs = RewardSet([RewardModelConfig(name="human", kind="label"),
                    RewardModelConfig(name="ans", kind="python",
                                      path=f"{__name__}:answer_reward")])
    assert rs.judge_names == ["ans"]
    rows = [_row("q", ["4", "5"], preferred=0, meta={"answer": "4"})]
    out = rs.score_samples(rows, [["it is 4", "it is 5"]])
    assert set(out) == {"ans"} and out["ans"] == [[1.0, 0.0]]


@pytest.mark.parametrize("row, needle", [
    (_row("none", ["a", "b"]), r"prompt_id 'none'.*neither a preferred candidate nor 'labels'"),
    (_row("short", ["a", "b", "c"], meta={"labels": [True, False]}),
     r"prompt_id 'short'.*2 entries for 3 candidates"),
    (_row("ints", ["a"], meta={"labels": [1]}), r"prompt_id 'ints'.*list of true/false"),
])
def test_label_reward_refuses_rows_it_cannot_score(row, needle):
    rs = RewardSet([RewardModelConfig(name="human", kind="label")])
    with pytest.raises(DataError, match=needle):
        rs.score_rows([_row("ok", ["a"], preferred=0), row])


# --- one normalisation rule -----------------------------------------------------------------

def test_zscore_without_statistics_is_an_error_not_raw_scores():
    rs = RewardSet([RewardModelConfig(name="human", kind="label", normalize="zscore"),
                    RewardModelConfig(name="ans", kind="python",
                                      path=f"{__name__}:answer_reward")])
    rows = [_row("a", ["x", "y"], preferred=0)]
    for call in (lambda: rs.score_rows(rows), lambda: rs.score(["p"], ["x"])):
        with pytest.raises(ConfigError, match=r"\['human'\].*zscore.*fit.*or load"):
            call()
    assert rs.score_raw(["p"], ["x"], metadata=[{"preferred_index": 0, "candidate_index": 0}]) \
        == {"human": [1.0], "ans": [0.0]}
    rs.fit_normalisation(["p", "p"], ["x", "y"],
                         [{"preferred_index": 0, "candidate_index": j} for j in (0, 1)])
    assert rs.unfitted_names == []
    assert rs.score_rows(rows)[0].rewards["human"] == (1.0, -1.0)  # mean 0.5, std 0.5


# --- recipe validation ----------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, needle", [
    ({"kind": "remote"}, "kind 'remote' needs url"),
    ({"kind": "remote", "url": "localhost:5000/get_reward"}, "needs url http"),
    ({"kind": "hf"}, "kind 'hf' needs path"),
    ({"kind": "python"}, "kind 'python' needs path"),
    ({"kind": "python", "path": "mod_without_function"}, "'module:function'"),
    ({"kind": "label", "path": "x"}, "kind 'label' uses no path"),
    ({"kind": "python", "path": "m:f", "revision": "v1"}, "revision applies to kind 'hf'"),
    ({"kind": "hf", "path": "org/rm", "url": "http://h:1/r"}, "url applies to kind 'remote'"),
    ({"kind": "remote", "url": "http://h:1/r", "timeout_s": 0}, "timeout_s"),
    ({"kind": "remote", "url": "http://h:1/r", "max_retries": -1}, "max_retries"),
])
def test_reward_config_checks(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        RewardModelConfig(name="rm", **kwargs)


def test_recipe_can_switch_a_reward_to_label_by_override():
    with pytest.raises(ConfigError, match="kind 'label' uses no path"):
        load_recipe(None, ["rewards.0.kind=label"])
    with pytest.raises(ConfigError, match="eval.judges.*kind label.*cannot judge"):
        load_recipe(None, ["rewards.0.kind=label", "rewards.0.path=null"])
    recipe = load_recipe(None, ["rewards.0.kind=label", "rewards.0.path=null",
                                "eval.judges=[afinn]"])
    assert recipe.judge_names == ["afinn"]
    assert recipe.rewards[0].kind == "label" and recipe.rewards[0].path is None
    remote = RewardModelConfig(name="rm", kind="remote", url="http://10.0.0.2:5000/get_reward")
    assert (remote.path, remote.timeout_s, remote.max_retries) == (None, 60.0, 3)


def test_answer_f1_by_hand():
    from lire_ray.rewards.text import answer_f1

    # "i like dogs a lot" vs "I like cats": common {i, like} = 2; P = 2/5, R = 2/3, F1 = 0.5.
    scores = answer_f1(["p", "p"], ["i like dogs a lot", "nothing"],
                       metadata=[{"answer": "I like cats!"}, {"answer": "I like cats!"}])
    assert scores == [pytest.approx(0.5), 0.0]
    with pytest.raises(DataError, match="metadata.answer"):
        answer_f1(["p"], ["x"], metadata=[{"prompt_id": "row-7"}])
