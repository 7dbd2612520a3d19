"""Dataset adapters and ``jobs/prepare.py``: every format, every input container, every bad case."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lire_ray.adapters import convert_records, prepare_pool
from lire_ray.adapters.records import BadRow
from lire_ray.errors import DataError
from lire_ray.pool import read_manifest, read_pool, table_to_rows

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures"
PY = sys.executable


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def summary(row):
    return (row.prompt_id, row.prompt, row.responses, row.sources, row.policy_version,
            row.preferred, row.rewards)


H, A = "\n\nHuman:", "\n\nAssistant:"
HH_PROMPTS = [f"{H} What is a cat?{A}", f"{H} Hi{A} Hello!{H} Tell me a joke.{A}",
              f"{H} Name a colour.{A}"]
EXPECTED = {
    "hh": [
        (sha1(HH_PROMPTS[0]), HH_PROMPTS[0], ("A small furry animal.", "A car."),
         ("human", "human"), (-1, -1), 0, {}),
        (sha1(HH_PROMPTS[1]), HH_PROMPTS[1], ("Why did the chicken cross the road?", "No."),
         ("human", "human"), (-1, -1), 0, {}),
        (sha1(HH_PROMPTS[2]), HH_PROMPTS[2], ("Blue", "Red"), ("human", "human"), (-1, -1), 0,
         {}),
    ],
    "tldr": [
        ("t3_a", "SUBREDDIT: r/pets\nTITLE: Cat problem\nPOST: My cat knocks cups off the "
         "table.\nTL;DR:", ("Cat breaks cups.", "My cat is bad.", "Cups fall."),
         ("dataset", "human", "human"), (-1, -1, -1), 2, {}),
        ("t3_b", "SUBREDDIT: r/bicycling\nTITLE: Bike\nPOST: I bought a bike and it broke.\n"
         "TL;DR:", ("Bike broke.", "New bike broken after a day."), ("dataset", "human"),
         (-1, -1), 1, {}),
    ],
    "listwise": [
        (sha1("Write a haiku about rain."), "Write a haiku about rain.",
         ("Rain falls soft", "Drops on the roof", "Wet"), ("dataset",) * 3, (-1,) * 3, -1,
         {"given": (0.5, 1.5, -2.0)}),
        ("q2", "Say hi.", ("hi",), ("policy@e2",), (2,), 0,
         {"rm_a": (1.0,), "rm_b": (-0.25,)}),
        (sha1("Count to three."), "Count to three.", ("1 2 3", "one two three"),
         ("human", "dataset"), (-1, -1), -1, {}),
    ],
    "chat": [
        (sha1("\n\nSystem: Be brief.\n\nHuman: Capital of France?\n\nAssistant:"),
         "\n\nSystem: Be brief.\n\nHuman: Capital of France?\n\nAssistant:",
         ("Paris.", "It is Paris.", "Lyon."), ("human", "dataset", "dataset"), (-1,) * 3, -1,
         {}),
        (sha1(f"{H} Hi{A} Hello{H} 2+2?{A}"), f"{H} Hi{A} Hello{H} 2+2?{A}", ("4", "5"),
         ("dataset", "dataset"), (-1, -1), -1, {"given": (1.0, 0.0)}),
        (sha1(f"{H} Name a fruit.{A}"), f"{H} Name a fruit.{A}", ("Apple.",), ("human",), (-1,),
         -1, {}),
    ],
}
MESSAGES = {
    "hh": [[{"role": "user", "content": "What is a cat?"}],
           [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Tell me a joke."}],
           [{"role": "user", "content": "Name a colour."}]],
    "tldr": [None, None],
    "listwise": [None, None, None],
    "chat": [[{"role": "system", "content": "Be brief."},
              {"role": "user", "content": "Capital of France?"}],
             [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
              {"role": "user", "content": "2+2?"}],
             [{"role": "user", "content": "Name a fruit."}]],
}


def fixture_records(fmt: str) -> list[dict]:
    lines = (FIX / f"{fmt}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def make_input(tmp_path: Path, fmt: str, container: str) -> Path:
    """Write the fixture of ``fmt`` as another container (made at test time)."""
    records = fixture_records(fmt)
    if container == "jsonl":
        return FIX / f"{fmt}.jsonl"
    if container == "jsonl.gz":
        path = tmp_path / f"{fmt}.jsonl.gz"
        path.write_bytes(gzip.compress((FIX / f"{fmt}.jsonl").read_bytes()))
    elif container == "json":
        path = tmp_path / f"{fmt}.json"
        path.write_text(json.dumps(records, indent=1))
    else:
        path = tmp_path / f"{fmt}.{container}"
        keys = list(dict.fromkeys(k for r in records for k in r))
        pq.write_table(pa.Table.from_pydict({k: [r.get(k) for r in records] for k in keys}),
                       tmp_path / f"{fmt}.parquet")
        if container == "parquet.gz":
            path.write_bytes(gzip.compress((tmp_path / f"{fmt}.parquet").read_bytes()))
    return path


# The listwise fixture mixes list and dict rewards, which one Parquet column cannot hold.
COMBOS = [(f, c) for f in ("hh", "tldr", "listwise", "chat")
          for c in ("jsonl", "jsonl.gz", "json", "parquet", "parquet.gz")
          if not (f == "listwise" and c.startswith("parquet"))]


@pytest.mark.parametrize("fmt,container", COMBOS)
def test_every_format_and_container_gives_the_expected_pool(tmp_path, fmt, container):
    out = tmp_path / "pool"
    report = prepare_pool(fmt, str(make_input(tmp_path, fmt, container)), out)
    rows = table_to_rows(read_pool(out))
    assert [summary(r) for r in rows] == EXPECTED[fmt]
    assert [None if r.prompt_messages is None else json.loads(r.prompt_messages)
            for r in rows] == MESSAGES[fmt]
    assert all(r.evolve_step == 0 and r.ref_logps is None for r in rows)
    assert report.num_rows == len(EXPECTED[fmt])
    assert report.num_candidates == sum(len(e[2]) for e in EXPECTED[fmt])
    manifest = read_manifest(out)
    assert manifest["metadata"]["prepare"]["format"] == fmt
    assert manifest["skipped"]["count"] == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# (fixture, format, row, field, reason); all other rows of each fixture are good (2 of them).
BAD = [
    ("bad_json.jsonl", "listwise", 2, None, "invalid_json"),
    ("bad_missing_field.jsonl", "listwise", 2, "responses", "missing_field"),
    ("bad_wrong_type.jsonl", "listwise", 2, "responses[1]", "wrong_type"),
    ("bad_empty_prompt.jsonl", "listwise", 2, "prompt", "empty_prompt"),
    ("bad_k0.jsonl", "listwise", 3, "responses", "no_candidates"),
    ("bad_duplicate_id.jsonl", "listwise", 2, "prompt_id", "duplicate_prompt_id"),
    ("bad_rewards_length.jsonl", "listwise", 2, "rewards", "rewards_length"),
    ("bad_nan_reward.jsonl", "listwise", 2, "rewards.rm[0]", "non_finite_reward"),
    ("bad_inf_reward.jsonl", "listwise", 2, "rewards[1]", "non_finite_reward"),
    ("bad_utf8.jsonl", "listwise", 2, None, "invalid_utf8"),
    ("bad_hh_mismatch.jsonl", "hh", 2, "rejected", "hh_prefix_mismatch"),
]


@pytest.mark.parametrize("name,fmt,row,field,reason", BAD)
def test_bad_row_errors_name_file_row_and_field(tmp_path, name, fmt, row, field, reason):
    with pytest.raises(BadRow) as err:
        prepare_pool(fmt, str(FIX / name), tmp_path / "pool")
    e = err.value
    assert (e.source, e.row, e.field, e.reason) == (str(FIX / name), row, field, reason)
    assert str(FIX / name) in str(e) and f"row {row}" in str(e)
    if field:
        assert f"'{field}'" in str(e)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name,fmt,row,field,reason", BAD)
def test_bad_rows_skipped_are_counted_in_manifest(tmp_path, name, fmt, row, field, reason):
    out = tmp_path / "pool"
    report = prepare_pool(fmt, str(FIX / name), out, on_bad_row="skip")
    assert report.num_rows == 2 and len(read_pool(out)) == 2
    assert [(s.row, s.field, s.reason) for s in report.skipped] == [(row, field, reason)]
    skipped = read_manifest(out)["skipped"]
    assert skipped["count"] == 1
    assert skipped["by_reason"] == {reason: {"count": 1, "rows": [row]}}
    assert f"{reason}: 1 (rows {row})" in report.summary()


def records_of(*records):
    return list(enumerate(records, start=1))


@pytest.mark.parametrize("record,field,reason", [
    ({"messages": [{"role": "user", "content": "q"}]}, "messages", "no_candidates"),
    ({"messages": [{"role": "robot", "content": "q"}]}, "messages[0].role", "wrong_value"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content",
     "wrong_type"),
    ({"messages": [{"role": "assistant", "content": "a"}]}, "messages", "empty_prompt"),
    ({"messages": "hi"}, "messages", "wrong_type"),
])
def test_chat_bad_rows(record, field, reason):
    with pytest.raises(BadRow) as err:
        convert_records("chat", records_of(record), source="inline")
    assert (err.value.row, err.value.field, err.value.reason) == (1, field, reason)


@pytest.mark.parametrize("record,field,reason", [
    ({"summaries": [], "choice": 0}, "info", "missing_field"),
    ({"info": {"id": "a", "post": "p", "title": "t", "subreddit": "s"}, "summaries": [],
      "choice": 0}, "summaries", "no_candidates"),
    ({"info": {"id": "a", "post": "p", "title": "t", "subreddit": "s"},
      "summaries": [{"text": "x"}], "choice": 1}, "choice", "out_of_range"),
    ({"info": {"id": "a", "post": "p", "title": "t"}, "summaries": [{"text": "x"}],
      "choice": 0}, "info.subreddit", "missing_field"),
    ({"info": {"id": "a", "post": "p", "title": "t", "subreddit": "s"},
      "summaries": [{"txt": "x"}], "choice": 0}, "summaries[0].text", "missing_field"),
])
def test_tldr_bad_rows(record, field, reason):
    with pytest.raises(BadRow) as err:
        convert_records("tldr", records_of(record), source="inline")
    assert (err.value.row, err.value.field, err.value.reason) == (1, field, reason)


def test_tldr_conflicting_post_and_article_rows():
    info = {"id": "x", "post": "p", "title": "t", "subreddit": "s"}
    conflicting = {**info, "post": "another post"}
    article = {"id": "cnn1", "post": None, "article": "Storm hits coast.", "title": "Storm",
               "subreddit": None}
    recs = records_of({"info": info, "summaries": [{"text": "a"}], "choice": 0},
                      {"info": conflicting, "summaries": [{"text": "b"}], "choice": 0},
                      {"info": article, "summaries": [{"text": " storm"}], "choice": 0})
    rows, report = convert_records("tldr", recs, source="inline", on_bad_row="skip")
    assert [(s.row, s.reason) for s in report.skipped] == [(2, "conflicting_prompt")]
    assert [(r.prompt_id, r.prompt, r.responses) for r in rows] == [
        ("x", "SUBREDDIT: r/s\nTITLE: t\nPOST: p\nTL;DR:", ("a",)),
        ("cnn1", "TITLE: Storm\nARTICLE: Storm hits coast.\nTL;DR:", ("storm",))]


def test_limit_and_all_rows_bad(tmp_path):
    report = prepare_pool("listwise", str(FIX / "listwise.jsonl"), tmp_path / "p", limit=2)
    assert report.input_rows == 2
    assert [r.prompt for r in table_to_rows(read_pool(tmp_path / "p"))] == [
        "Write a haiku about rain.", "Say hi."]
    with pytest.raises(DataError, match="no valid rows"):
        convert_records("listwise", records_of({"prompt": ""}), source="s", on_bad_row="skip")


def test_existing_output_and_missing_input(tmp_path):
    (tmp_path / "pool").mkdir()
    with pytest.raises(DataError, match="already exists"):
        prepare_pool("hh", str(FIX / "hh.jsonl"), tmp_path / "pool")
    prepare_pool("hh", str(FIX / "hh.jsonl"), tmp_path / "pool", overwrite=True)
    assert len(read_pool(tmp_path / "pool")) == 3
    with pytest.raises(DataError, match="no such file"):
        prepare_pool("hh", str(tmp_path / "missing.jsonl"), tmp_path / "other")


def test_malformed_json_array_is_a_file_error_even_when_skipping(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('[\n{"prompt": "a", "responses": ["x"]},\n{"prompt": \n]')
    with pytest.raises(DataError) as err:
        prepare_pool("listwise", str(path), tmp_path / "pool", on_bad_row="skip")
    assert not isinstance(err.value, BadRow)
    assert "invalid JSON on line 4, column 1" in str(err.value)
    path.write_bytes(b'[\n{"prompt": "a", "responses": ["x"]},\n{"prompt": "\xff"}]')
    with pytest.raises(DataError, match="invalid UTF-8 on line 3"):
        prepare_pool("listwise", str(path), tmp_path / "pool", on_bad_row="skip")
    assert list(tmp_path.iterdir()) == [path]


def run_cli(*args, env=None):
    return subprocess.run([PY, "jobs/prepare.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_cli_help_documents_every_option_and_format():
    res = run_cli("--help")
    assert res.returncode == 0
    for word in ("--format", "--input", "--output", "--split", "--on-bad-row", "--limit",
                 "--overwrite", "--debug", "--hf-config", "hh", "tldr", "listwise", "chat",
                 "prompt_id", "manifest.json"):
        assert word in res.stdout, word


def test_cli_bad_input_is_short_and_leaves_nothing(tmp_path):
    out = tmp_path / "pool"
    res = run_cli("--format", "listwise", "--input", str(FIX / "bad_nan_reward.jsonl"),
                  "--output", str(out))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert "bad_nan_reward.jsonl, row 2, field 'rewards.rm[0]'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
    res = run_cli("--format", "listwise", "--input", str(FIX / "bad_nan_reward.jsonl"),
                  "--output", str(out), "--debug")
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_cli_skip_prints_reasons_and_rows(tmp_path):
    res = run_cli("--format", "hh", "--input", str(FIX / "bad_hh_mismatch.jsonl"), "--output",
                  str(tmp_path / "pool"), "--on-bad-row", "skip")
    assert res.returncode == 0, res.stderr
    assert "wrote 2 prompts with 4 candidates" in res.stdout
    assert "hh_prefix_mismatch: 1 (rows 2)" in res.stdout


def test_cli_hub_id_offline_gives_a_clear_error(tmp_path):
    res = run_cli("--format", "hh", "--input", "nosuch-org/nosuch-dataset", "--output",
                  str(tmp_path / "pool"), env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert "nosuch-org/nosuch-dataset[train]" in res.stderr
    assert "Hugging Face" in res.stderr and "local" in res.stderr
    assert list(tmp_path.iterdir()) == []
