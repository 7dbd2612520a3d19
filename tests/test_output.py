"""Quiet jobs (lire_ray.output) and progress lines (lire_ray.progress), without Ray.

The diversion is checked in a child process, as a job runs it: the child's real stdout and
stderr are pipes the test reads, and the run directory's log file is read afterwards.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from lire_ray.progress import Progress

CHILD = textwrap.dedent("""
    import logging, os, sys
    from lire_ray import output
    from lire_ray.cli import setup_logging

    setup_logging(debug=False)
    with output.Diversion():
        logging.getLogger("lire_ray.algorithm").info("project line before the run dir")
        logging.getLogger("ray.train").warning("third-party warning before the run dir")
        output.keep_in(sys.argv[1])
        print("a library's print")
        os.write(2, b"C++ line on fd 2\\n")
        logging.getLogger("lire_ray.progress").info("project line in the run")
        output.echo("report: here")
    print("after the job")
    logging.getLogger("lire_ray.cli").info("project line after")
""")


def test_only_project_lines_reach_the_terminal_the_rest_goes_to_the_run_log(tmp_path):
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True,
                          text=True, timeout=120, check=True)
    assert proc.stdout == "report: here\nafter the job\n"
    err = proc.stderr.splitlines()
    assert [line.split(": ", 1)[1] for line in err] == [
        "project line before the run dir", "project line in the run", "project line after"]
    log = (tmp_path / "job.log").read_text()
    for line in ("third-party warning before the run dir", "a library's print",
                 "C++ line on fd 2"):
        assert line in log
    assert "project line" not in log and "report: here" not in log


def test_progress_shows_no_eta_before_a_rate_and_counts_the_rate_from_the_first_unit():
    p = Progress("training", 10, "steps")
    p.started = 0.0
    assert p.line(now=100.0) == "training: 0/10 steps"
    p._first, p.done = (100.0, 1), 1          # the first step ended 100 s after the start
    assert p.line(now=100.0) == "training: 1/10 steps"
    p.done = 3                                 # two more in 4 s: 0.5/s, 7 left
    assert p.line(now=104.0) == "training: 3/10 steps (0.5/s, ETA 14 s)"
    p.done = 10
    assert p.line(now=110.0) == "training: 10/10 steps (110 s)"


def test_progress_update_records_the_first_unit():
    p = Progress("sampled", 4, "prompts", stream=open("/dev/null", "w"))  # noqa: SIM115
    p.update(2)
    assert p._first is not None and p._first[1] == 2 and p.rate() is None
