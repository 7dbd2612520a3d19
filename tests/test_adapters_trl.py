"""``--format trl`` and the input kinds beyond one file (shard folders, save_to_disk folders,
cached hub ids, ``--columns``): every file is written here, in the shapes real datasets have,
and converted rows are compared with rows written out by hand."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lire_ray.adapters import prepare_pool
from lire_ray.adapters.records import BadRow
from lire_ray.errors import DataError
from lire_ray.pool import read_manifest, read_pool, table_to_rows

REPO = Path(__file__).resolve().parents[1]
H, A = "\n\nHuman:", "\n\nAssistant:"


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_parquet(path: Path, records: list[dict]) -> Path:
    """One column per key of any record (null where a record lacks it), as datasets writes."""
    keys = list(dict.fromkeys(k for r in records for k in r))
    pq.write_table(pa.Table.from_pydict({k: [r.get(k) for r in records] for k in keys}), path)
    return path


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


def system(text):
    return {"role": "system", "content": text}


def row_view(r):
    """Everything a converted row holds, with JSON columns decoded."""
    return (r.prompt_id, r.prompt, r.responses, r.sources, r.policy_version, r.preferred,
            r.rewards, None if r.prompt_messages is None else json.loads(r.prompt_messages),
            r.meta)


def expect(prompt, responses, preferred, *, messages=None, rewards=None, meta=None, pid=None):
    k = len(responses)
    return (pid or sha1(prompt), prompt, tuple(responses), ("human",) * k, (-1,) * k,
            preferred, {n: tuple(v) for n, v in (rewards or {}).items()}, messages, meta or {})


def convert(tmp_path, path, **kw):
    out = tmp_path / "pool"
    report = prepare_pool("trl", str(path), out, **kw)
    return [row_view(r) for r in table_to_rows(read_pool(out))], read_manifest(out), report


# ---- every TRL type, standard and conversational ---------------------------------------------

CASES = {
    "preference/standard": (
        [{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
         {"prompt": "2+2=", "chosen": "4", "rejected": "5", "prompt_id": "math-1"}],
        [expect("The sky is", [" blue.", " green."], 0),
         expect("2+2=", ["4", "5"], 0, pid="math-1")],
        "preference", False),
    "preference/conversational": (
        [{"prompt": [user("What color is the sky?")], "chosen": [bot("It is blue.")],
          "rejected": [bot("It is green.")]},
         {"prompt": [system("Be brief."), user("Hi"), bot("Hello"), user("Capital of France?")],
          "chosen": [bot("Paris.")], "rejected": [bot("Lyon.")]}],
        [expect(f"{H} What color is the sky?{A}", ["It is blue.", "It is green."], 0,
                messages=[user("What color is the sky?")]),
         expect(f"\n\nSystem: Be brief.{H} Hi{A} Hello{H} Capital of France?{A}",
                ["Paris.", "Lyon."], 0,
                messages=[system("Be brief."), user("Hi"), bot("Hello"),
                          user("Capital of France?")])],
        "preference", True),
    "implicit/standard": (
        [{"chosen": "The sky is blue.", "rejected": "The sky is green."},
         {"chosen": "Q: sky?\nA: blue", "rejected": "Q: sky?\nA: bright"},
         {"chosen": f"{H} Hi{A} Hello there", "rejected": f"{H} Hi{A} Go away"}],
        [expect("The sky is", [" blue.", " green."], 0),
         expect("Q: sky?\nA:", [" blue", " bright"], 0),
         expect(f"{H} Hi{A}", [" Hello there", " Go away"], 0)],
        "preference_implicit_prompt", False),
    "implicit/conversational": (
        [{"chosen": [user("What color is the sky?"), bot("It is blue.")],
          "rejected": [user("What color is the sky?"), bot("It is green.")]},
         {"chosen": [user("Hi"), bot("Hello"), user("Joke?"), bot("Knock knock.")],
          "rejected": [user("Hi"), bot("Hello"), user("Joke?"), bot("No.")]}],
        [expect(f"{H} What color is the sky?{A}", ["It is blue.", "It is green."], 0,
                messages=[user("What color is the sky?")]),
         expect(f"{H} Hi{A} Hello{H} Joke?{A}", ["Knock knock.", "No."], 0,
                messages=[user("Hi"), bot("Hello"), user("Joke?")])],
        "preference_implicit_prompt", True),
    "prompt_only/standard": (
        [{"prompt": "The sky is"}, {"prompt": "What is 6*7?", "answer": "42"}],
        [expect("The sky is", [], -1), expect("What is 6*7?", [], -1, meta={"answer": "42"})],
        "prompt_only", False),
    "prompt_only/conversational": (
        [{"prompt": [user("What is 6*7?")], "answer": "42", "difficulty": 1}],
        [expect(f"{H} What is 6*7?{A}", [], -1, messages=[user("What is 6*7?")],
                meta={"answer": "42", "difficulty": 1})],
        "prompt_only", True),
    "prompt_completion/standard": (
        [{"prompt": "The sky is", "completion": " blue.", "score_completion": 0.5}],
        [expect("The sky is", [" blue."], 0, rewards={"given": [0.5]})],
        "prompt_completion", False),
    "prompt_completion/conversational": (
        [{"prompt": [user("What color is the sky?")], "completion": [bot("It is blue.")]}],
        [expect(f"{H} What color is the sky?{A}", ["It is blue."], 0,
                messages=[user("What color is the sky?")])],
        "prompt_completion", True),
    # Grouped by prompt: "answer" is constant within each prompt (stored once), "model"
    # differs between completions of a prompt (stored per candidate, in every row).
    "unpaired/standard": (
        [{"prompt": "The sky is", "completion": " blue.", "label": True, "answer": "blue",
          "model": "a"},
         {"prompt": "The sky is", "completion": " green.", "label": False, "answer": "blue",
          "model": "b"},
         {"prompt": "2+2=", "completion": "5", "label": False, "answer": "4", "model": "a"},
         {"prompt": "The sky is", "completion": " azure.", "label": True, "answer": "blue",
          "model": "c"}],
        [expect("The sky is", [" blue.", " green.", " azure."], 0,
                meta={"labels": [True, False, True], "answer": "blue",
                      "model": ["a", "b", "c"]}),
         expect("2+2=", ["5"], -1, meta={"labels": [False], "answer": "4", "model": ["a"]})],
        "unpaired_preference", False),
    "unpaired/conversational": (
        [{"prompt": [user("Sky?")], "completion": [bot("Green.")], "label": False},
         {"prompt": [user("Sky?")], "completion": [bot("Blue.")], "label": True}],
        [expect(f"{H} Sky?{A}", ["Green.", "Blue."], 1, messages=[user("Sky?")],
                meta={"labels": [False, True]})],
        "unpaired_preference", True),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("container", ["jsonl", "parquet"])
def test_every_trl_type_gives_the_expected_rows(tmp_path, case, container):
    records, expected, dataset_type, conversational = CASES[case]
    write = write_jsonl if container == "jsonl" else write_parquet
    rows, manifest, report = convert(tmp_path, write(tmp_path / f"data.{container}", records))
    assert rows == expected
    meta = manifest["metadata"]
    assert (meta["source_format"], meta["dataset_type"], meta["conversational"]) == (
        "trl", dataset_type, conversational)
    assert meta["prepare"]["input_kind"] == "file"
    assert report.num_candidates == sum(len(e[2]) for e in expected)


def test_ultrafeedback_binarized_shape_scores_become_rewards(tmp_path):
    """The HuggingFaceH4/ultrafeedback_binarized columns: a plain prompt beside conversational
    chosen/rejected that repeat it, a messages column equal to chosen, and score columns."""
    q1, q2 = "Name a primary colour.", "Is water wet?"
    records = [
        {"prompt": q1, "prompt_id": "uf-1", "chosen": [user(q1), bot("Red.")],
         "rejected": [user(q1), bot("Purple.")], "messages": [user(q1), bot("Red.")],
         "score_chosen": 9.0, "score_rejected": 3.5},
        {"prompt": q2, "prompt_id": "uf-2", "chosen": [user(q2), bot("Yes.")],
         "rejected": [user(q2), bot("Maybe.")], "messages": [user(q2), bot("Yes.")],
         "score_chosen": 7, "score_rejected": 7},
    ]
    path = write_parquet(tmp_path / "train_prefs-00000-of-00001.parquet", records)
    rows, manifest, _ = convert(tmp_path, path, reward_name="gpt4")
    assert rows == [
        expect(f"{H} {q1}{A}", ["Red.", "Purple."], 0, messages=[user(q1)],
               rewards={"gpt4": [9.0, 3.5]}, pid="uf-1"),
        expect(f"{H} {q2}{A}", ["Yes.", "Maybe."], 0, messages=[user(q2)],
               rewards={"gpt4": [7.0, 7.0]}, pid="uf-2"),
    ]
    assert manifest["metadata"]["dataset_type"] == "preference_implicit_prompt"
    assert manifest["metadata"]["prepare"]["reward_name"] == "gpt4"


def test_standard_preference_scores_and_other_columns(tmp_path):
    records = [{"prompt": "The sky is", "chosen": " blue.", "rejected": " green.",
                "score_chosen": 1, "score_rejected": -0.5, "source": "web", "id": 7}]
    rows, _, _ = convert(tmp_path, write_jsonl(tmp_path / "d.jsonl", records))
    assert rows == [expect("The sky is", [" blue.", " green."], 0,
                           rewards={"given": [1.0, -0.5]}, meta={"source": "web", "id": 7})]


# ---- input kinds -------------------------------------------------------------------------------

PREFS = [{"prompt": f"Question {i}?", "chosen": f"good {i}", "rejected": f"bad {i}"}
         for i in range(5)]


def prefs_rows(indices):
    return [expect(f"Question {i}?", [f"good {i}", f"bad {i}"], 0) for i in indices]


def test_parquet_shards_folder_with_splits(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_parquet(data / "train-00000-of-00002.parquet", PREFS[0:2])
    write_parquet(data / "train-00001-of-00002.parquet", PREFS[2:4])
    write_parquet(data / "test-00000-of-00001.parquet", PREFS[4:5])
    (data / "README.md").write_text("not data")
    rows, manifest, report = convert(tmp_path, data)  # default: the train split
    assert rows == prefs_rows(range(4))
    prep = manifest["metadata"]["prepare"]
    assert (prep["input_kind"], prep["split"], prep["files"]) == (
        "shards", "train", ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"])
    out = tmp_path / "test-pool"
    prepare_pool("trl", str(data), out, split="test")
    assert [row_view(r) for r in table_to_rows(read_pool(out))] == prefs_rows([4])
    with pytest.raises(DataError, match=r"no shard of split 'validation' \(files start with: "
                                        r"test, train\)"):
        prepare_pool("trl", str(data), tmp_path / "none", split="validation")


def test_jsonl_shards_folder_keeps_order_and_names_the_shard_in_errors(tmp_path):
    data = tmp_path / "shards"
    data.mkdir()
    write_jsonl(data / "part-1.jsonl", PREFS[2:4])
    write_jsonl(data / "part-0.jsonl", PREFS[0:2])
    rows, _, _ = convert(tmp_path, data)
    assert rows == prefs_rows(range(4))
    write_jsonl(data / "part-2.jsonl", [PREFS[4], {"prompt": "x", "chosen": "y"}])
    with pytest.raises(BadRow) as err:
        prepare_pool("trl", str(data), tmp_path / "p2")
    assert (err.value.source, err.value.row, err.value.field) == (
        str(data / "part-2.jsonl"), 2, "rejected")
    report = prepare_pool("trl", str(data), tmp_path / "p3", on_bad_row="skip")
    assert report.num_rows == 5 and "missing_field: 1 (rows part-2.jsonl:2)" in report.summary()
    assert read_manifest(tmp_path / "p3")["skipped"]["examples"][0]["source"] == str(
        data / "part-2.jsonl")


def test_duplicate_prompt_across_shards_names_both_files(tmp_path):
    data = tmp_path / "shards"
    data.mkdir()
    write_jsonl(data / "a.jsonl", PREFS[:2])
    write_jsonl(data / "b.jsonl", [PREFS[2], PREFS[1]])
    with pytest.raises(BadRow) as err:
        prepare_pool("trl", str(data), tmp_path / "pool")
    assert (err.value.source, err.value.row, err.value.reason) == (
        str(data / "b.jsonl"), 2, "duplicate_prompt_id")
    assert f"first at row 2 of {data / 'a.jsonl'}" in str(err.value)


def test_save_to_disk_dataset_and_dataset_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(PREFS[:3]).save_to_disk(str(tmp_path / "ds"))
    rows, manifest, _ = convert(tmp_path, tmp_path / "ds")
    assert rows == prefs_rows(range(3))
    assert manifest["metadata"]["prepare"]["input_kind"] == "saved_dataset"
    with pytest.raises(DataError, match="has no splits; drop --split test"):
        prepare_pool("trl", str(tmp_path / "ds"), tmp_path / "x", split="test")

    conv = [{"prompt": [user(f"Q{i}")], "chosen": [bot("yes")], "rejected": [bot("no")]}
            for i in range(3)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(conv[:2]),
                          "test": datasets.Dataset.from_list(conv[2:])}
                         ).save_to_disk(str(tmp_path / "dd"))
    out = tmp_path / "dd-pool"
    prepare_pool("trl", str(tmp_path / "dd"), out, split="test")
    assert [row_view(r) for r in table_to_rows(read_pool(out))] == [
        expect(f"{H} Q2{A}", ["yes", "no"], 0, messages=[user("Q2")])]
    manifest = read_manifest(out)
    assert manifest["metadata"]["prepare"]["input_kind"] == "saved_dataset_dict"
    assert manifest["metadata"]["conversational"] is True
    with pytest.raises(DataError, match=r"no split 'validation' \(splits: train, test\)"):
        prepare_pool("trl", str(tmp_path / "dd"), tmp_path / "y", split="validation")
    # A bad row names the saved dataset, its split and the row (a column of one type per
    # dataset: here every chosen message content is an integer).
    bad = [{"prompt": [user("Q")], "chosen": [{"role": "assistant", "content": 3}],
            "rejected": [bot("no")]}]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(bad)}).save_to_disk(
        str(tmp_path / "bad"))
    with pytest.raises(BadRow) as err:
        prepare_pool("trl", str(tmp_path / "bad"), tmp_path / "z")
    assert (err.value.source, err.value.row, err.value.field) == (
        f"{tmp_path / 'bad'}[train]", 0, "chosen[0].content")
    assert not any(p.name.startswith(("x", "y", "z")) for p in tmp_path.iterdir())


def build_hub_cache(cache: Path, repo_id: str, splits: dict[str, list[dict]], tmp: Path):
    """Lay out ``repo_id`` in a ``datasets`` cache the way load_dataset leaves it after a
    download, using datasets' own Parquet builder on local files (nothing is fetched)."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    files = {}
    for split, records in splits.items():
        files[split] = [str(write_parquet(tmp / f"{split}.parquet", records))]
    name = repo_id.split("/")[-1]
    Parquet(cache_dir=str(cache), dataset_name=name, hash="0123456789abcdef",
            config_id="default", data_files=files).download_and_prepare()
    # The builder files it under the bare name; a hub download files it under the namespace.
    (cache / name).rename(cache / repo_id.replace("/", "___"))


def test_hub_id_from_a_local_cache_and_not_cached(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    cache = tmp_path / "hf" / "datasets"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    build_hub_cache(cache, "my-org/tiny_prefs", {"train": PREFS[:2], "test": PREFS[2:4]},
                    tmp_path)
    out = tmp_path / "pool"
    prepare_pool("trl", "my-org/tiny_prefs", out, split="test")
    assert [row_view(r) for r in table_to_rows(read_pool(out))] == prefs_rows([2, 3])
    prep = read_manifest(out)["metadata"]["prepare"]
    assert (prep["input_kind"], prep["split"]) == ("hub_cache", "test")
    assert "HF_HUB_OFFLINE" not in os.environ  # offline mode was only for the load
    with pytest.raises(DataError) as err:
        prepare_pool("trl", "my-org/other_set", tmp_path / "p2")
    msg = str(err.value)
    assert "my-org/other_set[train]" in msg and "not" in msg and "local cache" in msg
    assert "never downloaded" in msg
    with pytest.raises(DataError, match="loading it failed"):
        prepare_pool("trl", "my-org/tiny_prefs", tmp_path / "p3", split="validation")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "pool", "test.parquet",
                                                          "train.parquet"]


def test_columns_rename_and_errors_use_the_source_names(tmp_path):
    records = [{"question": "Sky?", "good": [bot("Blue.")], "bad": [bot("Green.")]},
               {"question": "Grass?", "good": [bot("Green.")], "bad": [{"role": "assistant"}]}]
    path = write_jsonl(tmp_path / "qa.jsonl", records)
    # A plain prompt beside conversational answers is read as UltraFeedback is: the prompt
    # turns must be in the conversations, and here they are not.
    with pytest.raises(BadRow) as err:
        prepare_pool("trl", str(path), tmp_path / "p", columns="prompt=question,chosen=good,"
                     "rejected=bad")
    assert (err.value.row, err.value.field, err.value.reason) == (1, "good", "empty_prompt")
    records = [{"question": [user("Sky?")], "good": [bot("Blue.")], "bad": [bot("Green.")]},
               {"question": [user("Grass?")], "good": [bot("Green.")],
                "bad": [{"role": "assistant"}]}]
    path = write_jsonl(tmp_path / "qa.jsonl", records)
    with pytest.raises(BadRow) as err:
        prepare_pool("trl", str(path), tmp_path / "p",
                     columns={"prompt": "question", "chosen": "good", "rejected": "bad"})
    assert (err.value.row, err.value.field, err.value.reason) == (
        2, "bad[0].content", "missing_field")
    rows, _, _ = convert(tmp_path, write_jsonl(tmp_path / "qa.jsonl", records[:1]),
                         columns="prompt=question,chosen=good,rejected=bad")
    assert rows == [expect(f"{H} Sky?{A}", ["Blue.", "Green."], 0, messages=[user("Sky?")])]
    # Renaming serves every format, not only trl.
    path = write_jsonl(tmp_path / "lw.jsonl", [{"q": "Say hi.", "answers": ["hi", "hello"]}])
    prepare_pool("listwise", str(path), tmp_path / "lw", columns="prompt=q,responses=answers")
    assert [r.responses for r in table_to_rows(read_pool(tmp_path / "lw"))] == [("hi", "hello")]


# ---- bad inputs: file, row and field named, nothing written ------------------------------------

P = "The sky is"
BAD = [
    # (name, records, error class, row, field, reason or None for whole-input errors, kwargs)
    ("mixed_types", [{"prompt": P, "chosen": "a", "rejected": "b"}, {"prompt": P}],
     DataError, 2, "chosen", None, {}),
    ("mixed_formats", [{"prompt": P, "completion": "a"},
                       {"prompt": [user("hi")], "completion": [bot("a")]}],
     DataError, 2, "prompt", None, {}),
    ("chosen_without_rejected", [{"prompt": P, "chosen": "a", "rejected": "b"},
                                 {"prompt": "Q", "chosen": "a"}],
     BadRow, 2, "rejected", "missing_field", {}),
    ("content_not_string", [{"prompt": [user("hi")], "chosen": [bot("a")],
                             "rejected": [bot("b")]},
                            {"prompt": [{"role": "user", "content": ["hi"]}],
                             "chosen": [bot("a")], "rejected": [bot("b")]}],
     BadRow, 2, "prompt[0].content", "wrong_type", {}),
    ("label_not_bool", [{"prompt": P, "completion": "a", "label": True},
                        {"prompt": P, "completion": "b", "label": "yes"}],
     BadRow, 2, "label", "wrong_type", {}),
    ("score_not_numeric", [{"prompt": P, "chosen": "a", "rejected": "b", "score_chosen": 1,
                            "score_rejected": 0},
                           {"prompt": "Q", "chosen": "a", "rejected": "b",
                            "score_chosen": "high", "score_rejected": 0}],
     BadRow, 2, "score_chosen", "wrong_type", {}),
    ("implicit_nothing_in_common", [{"chosen": "The sky is blue.", "rejected": "The sun."},
                                    {"chosen": "Blue sky.", "rejected": "Green grass."}],
     BadRow, 2, "rejected", "no_common_prompt", {}),
    ("implicit_turns_differ", [{"chosen": [user("a"), bot("b")], "rejected": [user("a"),
                                                                              bot("c")]},
                               {"chosen": [user("x"), bot("b")], "rejected": [user("y"),
                                                                              bot("c")]}],
     BadRow, 2, "rejected[0]", "implicit_prompt_mismatch", {}),
    ("empty_conversation", [{"chosen": [user("a"), bot("b")], "rejected": [user("a"),
                                                                           bot("c")]},
                            {"chosen": [], "rejected": [user("a"), bot("c")]}],
     BadRow, 2, "chosen", "empty_conversation", {}),
    ("two_assistant_messages", [{"prompt": [user("a")], "chosen": [bot("b"), bot("c")],
                                 "rejected": [bot("d")]}],
     BadRow, 1, "chosen", "wrong_value", {}),
    ("unknown_role", [{"prompt": [{"role": "tool", "content": "x"}],
                       "completion": [bot("b")]}],
     BadRow, 1, "prompt[0].role", "wrong_value", {}),
    ("non_finite_score", [{"prompt": P, "completion": "a", "score_completion": float("inf")}],
     BadRow, 1, "score_completion", "non_finite_reward", {}),
    ("unknown_columns_source", [{"question": P, "answer": "a"}],
     DataError, 1, "query", None, {"columns": "prompt=query,completion=answer"}),
    ("columns_target_exists", [{"question": P, "prompt": "other", "completion": "a"}],
     DataError, 1, "prompt", None, {"columns": "prompt=question"}),
    ("labels_column_reserved", [{"prompt": P, "completion": "a", "label": True,
                                 "labels": "x"}],
     BadRow, 1, "labels", "unexpected_field", {}),
    ("score_rejected_missing", [{"prompt": P, "chosen": "a", "rejected": "b",
                                 "score_chosen": 1.0}],
     BadRow, 1, "score_rejected", "missing_field", {}),
    ("language_modeling", [{"messages": [user("a"), bot("b")]}],
     DataError, 1, "messages", None, {}),
    ("stepwise", [{"prompt": P, "completions": ["a", "b"], "labels": [True, False]}],
     DataError, 1, "completions", None, {}),
]


@pytest.mark.parametrize("name,records,cls,row,field,reason,kw", BAD, ids=[b[0] for b in BAD])
def test_bad_trl_files_are_refused_naming_file_row_and_field(tmp_path, name, records, cls, row,
                                                             field, reason, kw):
    path = write_jsonl(tmp_path / f"{name}.jsonl", records)
    with pytest.raises(cls) as err:
        prepare_pool("trl", str(path), tmp_path / "pool", **kw)
    e = err.value
    assert (e.source, e.row, e.field) == (str(path), row, field)
    assert f"{path}, row {row}, field '{field}'" in str(e)
    if reason is None:
        assert not isinstance(e, BadRow)
    else:
        assert e.reason == reason
    # Whole-input errors stop a skipping run too; bad rows are skipped and counted.
    if reason is None or len(records) == 1:
        with pytest.raises(DataError):
            prepare_pool("trl", str(path), tmp_path / "pool", on_bad_row="skip", **kw)
    else:
        report = prepare_pool("trl", str(path), tmp_path / "pool", on_bad_row="skip", **kw)
        assert [(s.row, s.field, s.reason) for s in report.skipped] == [(row, field, reason)]
        assert read_manifest(tmp_path / "pool")["skipped"]["count"] == 1
        return
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_bad_row_in_a_parquet_shard_names_the_shard_and_its_row(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_parquet(data / "train-00000-of-00002.parquet", PREFS[:2])
    write_parquet(data / "train-00001-of-00002.parquet",
                  [PREFS[2], {**PREFS[3], "rejected": None}])
    with pytest.raises(BadRow) as err:
        prepare_pool("trl", str(data), tmp_path / "pool")
    shard = data / "train-00001-of-00002.parquet"
    assert (err.value.source, err.value.row, err.value.field) == (str(shard), 1, "rejected")
    assert "is null" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


# ---- the command line ----------------------------------------------------------------------------

def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "jobs/prepare.py", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def test_cli_trl_with_columns_reward_name_and_a_cached_hub_id(tmp_path):
    pytest.importorskip("datasets")
    records = [{"question": "Sky?", "good": " Blue.", "bad": " Green.", "s_good": 2.0,
                "s_bad": 1.0}]
    path = write_jsonl(tmp_path / "qa.jsonl", records)
    res = run_cli("--format", "trl", "--input", str(path), "--output", str(tmp_path / "p"),
                  "--columns", "prompt=question,chosen=good,rejected=bad,score_chosen=s_good,"
                  "score_rejected=s_bad", "--reward-name", "judge")
    assert res.returncode == 0, res.stderr
    assert "wrote 1 prompts with 2 candidates" in res.stdout
    assert [row_view(r) for r in table_to_rows(read_pool(tmp_path / "p"))] == [
        expect("Sky?", [" Blue.", " Green."], 0, rewards={"judge": [2.0, 1.0]})]

    cache = tmp_path / "cache"
    build_hub_cache(cache, "org/prompts", {"train": [{"prompt": "Hi?"}]}, tmp_path)
    env = {"HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "0"}
    res = run_cli("--format", "trl", "--input", "org/prompts", "--output",
                  str(tmp_path / "hub"), env=env)
    assert res.returncode == 0, res.stderr
    assert [row_view(r) for r in table_to_rows(read_pool(tmp_path / "hub"))] == [
        expect("Hi?", [], -1)]
    res = run_cli("--format", "trl", "--input", "org/missing", "--output",
                  str(tmp_path / "none"), env=env)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "org/missing[train]" in res.stderr and "local cache" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "none").exists()


def readme_data_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Data\n"):]
    section = section[:section.index("\n## ", 1)]
    return [line.strip() for line in section.splitlines() if line.startswith("    python ")]


def test_readme_data_examples_run_as_written(tmp_path):
    """Every command of the README's Data section, run as written from a copy of the
    repository layout (links to jobs/ and tests/), writes the pool it names."""
    pytest.importorskip("datasets")
    for name in ("jobs", "tests"):
        (tmp_path / name).symlink_to(REPO / name)
    commands = readme_data_commands()
    assert len(commands) >= 8
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    for command in commands:
        argv = shlex.split(command)
        res = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120, env=env)
        assert res.returncode == 0, (command, res.stderr[-2000:])

    def pool(name):
        return [row_view(r) for r in table_to_rows(read_pool(tmp_path / "pools" / name))]

    assert pool("shards-train") == [
        expect("The sky is", [" blue.", " green."], 0),
        expect("Water boils at", [" 100 C at sea level.", " 50 C at sea level."], 0),
        expect("Q: Capital of France?\nA:", [" Paris", " Lyon"], 0)]
    assert pool("shards-test") == [expect("Two plus two is", [" four.", " five."], 0)]
    q = "How many legs does a spider have?"
    assert pool("uf")[1] == expect(f"{H} {q}{A}", ["Eight.", "Six."], 0, messages=[user(q)],
                                   rewards={"gpt4": [8.0, 2.0]}, pid="uf-2")
    assert [(r[2], r[5], r[8]) for r in pool("prompts")] == [((), -1, {"answer": "42"}),
                                                            ((), -1, {"answer": "5"})]
    assert [(r[1], r[2], r[5], r[8]) for r in pool("unpaired")] == [
        ("The capital of France is", (" Paris.", " Berlin."), 0, {"labels": [True, False]}),
        ("The largest planet is", (" Mars.",), -1, {"labels": [False]})]
    assert pool("renamed") == [expect("Is the sun a star?", [
        "Yes, a G-type main-sequence star.", "No, it is a planet."], 0)]
    assert pool("math") == [expect("What is 6 * 7?", [], -1, meta={"answer": "42"})]
    assert read_manifest(tmp_path / "pools" / "math")["metadata"]["prepare"]["input_kind"] == \
        "saved_dataset_dict"


def test_cli_help_documents_trl_and_the_input_kinds():
    res = run_cli("--help")
    assert res.returncode == 0
    for word in ("trl", "--columns", "--reward-name", "--split", "save_to_disk", "shards",
                 "preference", "implicit prompt", "prompt-only", "prompt-completion",
                 "unpaired preference", "score_chosen", "metadata", "never downloaded",
                 "local datasets cache", "conversational"):
        assert word in res.stdout, word
