"""Convert a preference dataset into a lire-ray candidate pool (Parquet files + manifest.json).

Launch from the repository root, for example::

    python jobs/prepare.py --format hh --input Anthropic/hh-rlhf --split test --output pools/hh-test
    python jobs/prepare.py --format tldr --input comparisons.jsonl.gz --output pools/tldr
    python jobs/prepare.py --format listwise --input my_lists.jsonl --output pools/mine \\
        --on-bad-row skip
    python jobs/prepare.py --format chat --input chats.parquet --output pools/chat --limit 1000

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
input formats (one record per JSONL line, JSON array element, or Parquet/hub row):
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

prompt_id is the given one or the sha1 of the prompt text; a repeated prompt_id is a bad row.
Bad rows (invalid JSON or UTF-8, missing field, wrong type, empty prompt, no candidates,
rewards length != responses, NaN/inf reward, duplicate prompt_id) stop the run with file, row
and field named, or with --on-bad-row skip are left out, printed and counted in manifest.json.
Rows are 1-based lines for JSONL, 0-based indices for JSON arrays, Parquet and hub datasets.
"""


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line (``argv`` defaults to ``sys.argv[1:]``)."""
    p = argparse.ArgumentParser(
        prog="python jobs/prepare.py", description=__doc__.split("\n\n")[0],
        epilog=FORMAT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", required=True, choices=FORMATS, help="input record layout")
    p.add_argument("--input", required=True, metavar="PATH_OR_HUB_ID",
                   help="local .jsonl/.json/.parquet file (optionally .gz) or a Hugging Face "
                        "datasets id (loaded only when no such path exists)")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="pool directory to create (written atomically; relative to the "
                        "current directory)")
    p.add_argument("--split", default="train", help="split of a hub dataset (default: train)")
    p.add_argument("--hf-config", default=None, help="configuration name of a hub dataset")
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
                              limit=args.limit, overwrite=args.overwrite)
    except LireError as exc:
        if args.debug:
            raise
        print(f"prepare: error: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
