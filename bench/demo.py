"""The newcomer's demo, timed: ``make demo``'s command on a fresh run directory, then again on
the finished run.

    python bench/demo.py --repeats 3 --out runs/demo-bench

Each repeat runs ``python jobs/self_enhance.py resume=true run.dir=<out>/run`` from the
repository root on an empty run directory (the tiny policy is built once beforehand, as a
second ``make demo`` finds it cached), counts the lines it printed (stdout and stderr: what a
user sees) and reads where the time went from the job's own log lines; then it runs the same
command once more on the finished run (it must re-report without starting anything). Printed:
the wall time of each repeat and their median, the lines printed, the re-report's wall time,
and the seconds between the job's milestones (Ray up, actors up, each Evolve step, the final
evaluation) of the median repeat. Run it under the machine's heavy-work lock on a shared box.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The job's own lines that mark where the time goes, in order.
MILESTONES = (("Ray up", "started a local Ray cluster"), ("samplers up", "started 1 sampler"),
              ("reward + reference up", "started 1 reference"),
              ("evaluation before", "Evolve step 1/"), ("Evolve step 1", "Evolve step 1 done"),
              ("Evolve step 2", "Evolve step 2 done"), ("evaluation after + report", "report:"))
_CLOCK = re.compile(r"^(\d\d):(\d\d):(\d\d) ")


def _run(run_dir: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "jobs" / "self_enhance.py"), "resume=true",
           f"run.dir={run_dir}"]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t0
    lines = (proc.stdout + proc.stderr).splitlines()
    return {"returncode": proc.returncode, "wall_s": round(wall, 1), "lines": len(lines),
            "start": t0, "output": lines}


def _phases(result: dict) -> dict[str, float]:
    """Seconds from the job's start (or the previous milestone) to each milestone."""
    out, prev = {}, result["start"]
    day = time.strftime("%Y-%m-%d", time.localtime(result["start"]))
    for name, needle in MILESTONES:
        line = next((x for x in result["output"] if needle in x and _CLOCK.match(x)), None)
        if line is None:
            continue
        stamp = time.mktime(time.strptime(f"{day} {line[:8]}", "%Y-%m-%d %H:%M:%S"))
        out[name] = round(stamp - prev, 1)
        prev = stamp
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="runs/demo-bench")
    args = p.parse_args(argv)
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    from lire_ray.demo.tiny_policy import ensure_tiny_policy

    ensure_tiny_policy(ROOT / ".cache" / "lire-ray")  # the recipe's run.cache_dir
    results = []
    for i in range(args.repeats):
        shutil.rmtree(out / "run", ignore_errors=True)
        results.append(_run(out / "run"))
        print(f"repeat {i + 1}: exit {results[-1]['returncode']}, {results[-1]['wall_s']} s, "
              f"{results[-1]['lines']} lines", flush=True)
    again = _run(out / "run")
    median = statistics.median(r["wall_s"] for r in results)
    mid = min(results, key=lambda r: abs(r["wall_s"] - median))
    summary = {"walls_s": [r["wall_s"] for r in results], "median_s": median,
               "lines": [r["lines"] for r in results], "rereport_s": again["wall_s"],
               "rereport_lines": again["lines"], "phases_s": _phases(mid)}
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    (out / "demo-output.txt").write_text("\n".join(mid["output"]) + "\n")
    print(json.dumps(summary, indent=2))
    return 0 if all(r["returncode"] == 0 for r in [*results, again]) else 1


if __name__ == "__main__":
    sys.exit(main())
