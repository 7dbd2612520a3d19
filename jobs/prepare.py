"""Convert a preference dataset into a lire-ray candidate pool (Parquet files + manifest.json).

Launch from the repository root, for example::

    python jobs/prepare.py --format hh --input hh-rlhf/train.jsonl.gz --output pools/hh-train
    python jobs/prepare.py --format tldr --input comparisons.jsonl.gz --output pools/tldr
    python jobs/prepare.py --format listwise --input my_lists.jsonl --output pools/mine \\
        --on-bad-row skip
    python jobs/prepare.py --format chat --input chats.parquet --output pools/chat --limit 1000
    python jobs/prepare.py --format trl --input ultrafeedback/data --split test_prefs \\
        --output pools/uf-test --reward-name gpt4
    python jobs/prepare.py --format trl --input saved_dpo_dataset --split train \\
        --output pools/dpo --columns prompt=question,chosen=good,rejected=bad
    python jobs/prepare.py --format trl --input trl-lib/ultrafeedback_binarized --split test \\
        --output pools/uf
    python jobs/prepare.py --format builtin --input builtin:chitchat --output pools/chitchat \\
        --limit 500

Where it writes: ``--output DIR`` is the pool directory, wherever the user chooses (a relative
path is taken from the current directory). Unlike the recipe-driven jobs, whose outputs are
confined to ``run.dir``, this job has no run directory: a prepared pool is an input that many
runs read (``data.train=DIR``), so it lives outside any of them. It writes nothing but that
directory (and its missing parents), built under a temporary sibling name and renamed into
place, and ``--overwrite`` replaces only an existing pool (a directory with ``manifest.json``)
or an empty directory: a directory holding anything else, or a file, is refused before the
input is read.

Exit status 0 on success; on bad input a short message naming file, row and field, exit
status 1, and no output directory (``--debug`` adds the traceback).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import lire_ray  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lire_ray.adapters import FORMATS, ON_BAD_ROW, prepare_pool  # noqa: E402
from lire_ray.errors import LireError  # noqa: E402

FORMAT_HELP = """\
inputs (--input):
  a file    .jsonl / .json (one array of objects) / .parquet, optionally .gz (no splits:
            --split is refused, as for a saved Dataset)
  a folder  of Parquet or JSONL shards (*.parquet, *.jsonl, *.ndjson, optionally .gz), read in
            sorted name order; --split picks the files named SPLIT-* or SPLIT.*; when the
            names say their split, as hub folders do (train-00000-of-00002.parquet,
            test-00000-of-00001.parquet, train.jsonl), the default is train, else all files
  a folder  written by datasets' save_to_disk: a Dataset, or a DatasetDict whose split
            --split picks (default train, or the only split there is)
  a hub id  e.g. trl-lib/ultrafeedback_binarized, read OFFLINE from the local datasets cache
            (HF_DATASETS_CACHE, else $HF_HOME/datasets) and never downloaded; an id that is
            not cached is an error saying so
  --columns NAME=SOURCE,... renames input columns to the names the format reads, e.g.
            --columns prompt=question,chosen=answer_good,rejected=answer_bad

formats (one record per JSONL line, JSON array element, or Parquet/dataset row):
  hh        {"chosen": str, "rejected": str}: HH-RLHF transcripts of "\\n\\nHuman:" /
            "\\n\\nAssistant:" turns. Prompt = dialogue through the final "\\n\\nAssistant:";
            candidates = the two final replies (chosen first, preferred = 0, sources human).
            Pairs whose dialogues differ before the final reply are bad rows.
  tldr      {"info": {"id", "post", "title", "subreddit"}, "summaries": [{"text"}, ...],
            "choice": int}: summarize-from-feedback comparisons. Prompt = "SUBREDDIT: r/...\\n
            TITLE: ...\\nPOST: ...\\nTL;DR:". Comparisons of one post id merge into one prompt
            (distinct summaries; preferred = the summary chosen most often, ties to the first).
  listwise  {"prompt", "responses": [...], "rewards"?: [...] or {name: [...]}, "sources"?,
            "prompt_id"?, "preferred"?}: any number K >= 1 of candidates per prompt.
  chat      {"messages": [{"role", "content"}, ...], "responses"?: [...]}: a final assistant
            message is the human-written candidate; responses are further candidates.
  trl       TRL dataset types, standard (strings) or conversational (lists of {"role",
            "content"} messages), one type per input, detected from the columns:
              preference           {prompt, chosen, rejected}: K = 2, preferred = 0
              implicit prompt      {chosen, rejected}: prompt = their common prefix (cut at a
                                   word boundary) or, for conversations, the turns before the
                                   final assistant turn, which must be the same in both
              prompt-only          {prompt}: K = 0 rows, whose candidates self-enhancement
                                   samples
              prompt-completion    {prompt, completion}: K = 1, preferred = 0
              unpaired preference  {prompt, completion, label: bool}: completions grouped by
                                   prompt; labels kept in the row metadata as "labels";
                                   preferred = the first labelled true (-1 if none)
            score_chosen / score_rejected (score_completion) columns become rewards named by
            --reward-name; prompt_id is the row id; other columns go to the row metadata.
            Conversational prompts keep their turns (prompt_messages). Candidates are
            human-written (source human). The manifest records dataset_type/conversational.
  builtin   --input builtin:NAME: a built-in prompt set (builtin:reviews, builtin:chitchat,
            and their -heldout splits) written as a pool; --limit keeps its first N rows.

prompt_id is the given one or the sha1 of the prompt text; a repeated prompt_id is a bad row.
Bad rows (invalid JSON or UTF-8, missing field, wrong type, empty prompt, no candidates,
rewards length != responses, NaN/inf reward, duplicate prompt_id, ...) stop the run with file,
row and field named, or with --on-bad-row skip are left out, printed and counted in
manifest.json. A problem with the whole input (unreadable file, unknown --columns source, trl
records of two types) stops the run either way. Rows are 1-based lines for JSONL, 0-based
indices for JSON arrays, Parquet and datasets; errors in a shard name the shard file.
"""


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line (``argv`` defaults to ``sys.argv[1:]``)."""
    p = argparse.ArgumentParser(
        prog="python jobs/prepare.py", description=__doc__.split("\n\n")[0],
        epilog=FORMAT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", required=True, choices=FORMATS, help="input record layout")
    p.add_argument("--input", required=True, metavar="PATH_OR_HUB_ID",
                   help="a .jsonl/.json/.parquet file (optionally .gz), a folder of Parquet or "
                        "JSONL shards, a datasets save_to_disk folder, or a Hugging Face hub "
                        "dataset id in the local cache (used only when no such path exists; "
                        "never downloaded)")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="pool directory to create (written atomically; relative to the "
                        "current directory)")
    p.add_argument("--split", default=None,
                   help="split of a hub dataset, saved DatasetDict, or shard folder holding "
                        "several splits (default: train, or the only split there is)")
    p.add_argument("--hf-config", default=None, help="configuration name of a hub dataset")
    p.add_argument("--columns", default=None, metavar="NAME=SOURCE,...",
                   help="read input column SOURCE as the format's NAME, e.g. "
                        "prompt=question,chosen=answer_good")
    p.add_argument("--reward-name", default="given", metavar="NAME",
                   help="trl: reward name of score_chosen/score_rejected/score_completion "
                        "columns (default: given)")
    p.add_argument("--on-bad-row", default="error", choices=ON_BAD_ROW,
                   help="stop at the first bad row (default) or skip and count bad rows")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="read at most N input rows")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing pool (or empty directory) at DIR; anything else "
                        "there is refused")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Run one preparation; return the exit status (0 ok, 1 bad input or arguments)."""
    args = parse_args(argv)
    try:
        report = prepare_pool(args.format, args.input, args.output, split=args.split,
                              hf_config=args.hf_config, on_bad_row=args.on_bad_row,
                              limit=args.limit, overwrite=args.overwrite,
                              columns=args.columns, reward_name=args.reward_name)
    except LireError as exc:
        if args.debug:
            raise
        print(f"prepare: error: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
