"""Soak bench: does any process of a self-enhancement run keep growing from one Evolve step to
the next?

    python bench/soak.py --out runs/soak
    python bench/soak.py --out runs/soak --interval 1 evolve.steps=8 data.max_prompts=32

It runs ``jobs/self_enhance.py`` as a user would, from the repository root (default
``--config configs/tiny.yaml evolve.steps=5 run.dir=<out>/run``; recipe overrides on the
command line are applied after those, relative paths in them taken from the repository root)
and, every ``--interval`` seconds, records the resident set size (RSS, psutil) of the driver
and of every Ray process of its cluster, summed per role: a Ray worker by the actor class it
hosts (``ray::SamplerActor``, ``ray::RewardActor``, ``ray::RayTrainWorker``, read from its
process title, which changes while it lives: see :func:`resolve_roles`), else the task it ran
most (a pooled task worker) or ``ray::IDLE``; the Ray daemons (``raylet``, ``gcs_server``,
``dashboard``, ...) by name; untitled subprocesses (of a vLLM engine, compile workers) under
their nearest named ancestor's role with ``/child``. The driver logs ``Evolve step k done``
when a step ends; those moments are recorded too, so every role is compared at the same point
of each step.

Written to ``--out``: ``soak.csv`` (``time_s, group, rss_mb, processes``: seconds since the job
started; every role gets a row in every sample, 0 while none of its processes is alive),
``steps.csv`` (``step, time_s``), ``processes.csv`` (every tracked process in every sample,
written as the run goes), ``job.log`` (the job's output), ``soak.png`` (RSS per role over time,
a vertical line at each step end) and ``soak.md``: per role, the RSS at the end of step 1, of
step 2 and of the last step, the growth from step 2's end to the last step's end (step 1 still
warms up: lazy imports, allocator pools, compiled kernels), the peak within step 2 and within
the last step, and a verdict. A role counts as growing when it gained more than
``--threshold-mb`` MB *and* more than ``--threshold-pct`` percent (or appeared from nothing
with more than ``--threshold-mb`` MB). The verdict needs at least 3 Evolve steps.

Exit status 0 when the job finished, whatever the verdict (this is a measurement); 1 when the
job failed or timed out (the figures so far are still written). A Ray cluster already running
on this machine would be joined by the job and share its resources, so the bench refuses to
start while one runs (``--wait SECONDS`` waits for it to go away first).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MB = 1024 ** 2
DEFAULT_STEPS = 5
STEP_DONE = re.compile(r"Evolve step (\d+) done")
TOTAL = "total"
MAX_LINES = 12
# Process titles set with setproctitle: Ray workers ("ray::IDLE", "ray::SamplerActor.sample",
# "ray::sampler-0" for an actor with a __repr__), vLLM's engine ("VLLM::EngineCore").
_TITLE = re.compile(r"^(ray|VLLM)::([A-Za-z_][\w\-]*)(\.\w)?")
_DAEMON_EXES = ("raylet", "gcs_server")
_DAEMON_SCRIPTS = (
    ("default_worker.py", "ray::worker (starting)"),  # before it sets its title
    ("dashboard/agent.py", "dashboard_agent"),  # before it sets "ray::DashboardAgent"
    ("ray-dashboard-", "dashboard"),  # the dashboard's module subprocesses
    ("dashboard/dashboard.py", "dashboard"),
    ("log_monitor.py", "log_monitor"),
    ("runtime_env/agent/main.py", "runtime_env_agent"),
    ("autoscaler/_private/monitor.py", "monitor"),
)
DAEMONS = frozenset([*_DAEMON_EXES, *(g for _, g in _DAEMON_SCRIPTS if not g.startswith("ray::"))])
_WAITING = ("ray::IDLE", "ray::worker (starting)")


@dataclass(frozen=True)
class Proc:
    """One process as listed: what identifies it, and its RSS once read.

    Attributes:
        pid: Process id.
        ppid: Parent process id.
        name: Executable name (``psutil.Process.name``).
        cmdline: Command line joined by spaces (a process title replaces it).
        rss: Resident set size in bytes.
        create_time: Start time, seconds since the epoch.
    """

    pid: int
    ppid: int
    name: str
    cmdline: str
    rss: int = 0
    create_time: float = 0.0


@dataclass(frozen=True)
class Obs:
    """One tracked process in one sample.

    Attributes:
        time_s: Seconds since the job started.
        pid: Process id.
        ppid: Parent process id.
        label: What this sample's title or command line says (:func:`classify`), ``driver``
            for the job itself, or None.
        method: The title shows an actor method call (``ray::Class.method``), which names the
            actor class for sure.
        rss_mb: Resident set size in MB.
    """

    time_s: float
    pid: int
    ppid: int
    label: str | None
    method: bool
    rss_mb: float


def classify(name: str, cmdline: str) -> str | None:
    """What a process's title or command line says it is, or None when it says nothing.

    Args:
        name: Executable name (only trusted for the Ray daemons' binaries: a process title
            shows there cut to 15 characters).
        cmdline: Command line joined by spaces.

    Returns:
        ``ray::<Name>`` (an actor class or repr, a task, ``ray::IDLE``) or ``VLLM::<name>`` for
        a titled process, a daemon name (``raylet``, ``gcs_server``, ``dashboard``, ...), or
        None.
    """
    m = _TITLE.match(cmdline or "")
    if m:
        return f"{m.group(1)}::{m.group(2)}"
    exe = os.path.basename((cmdline or "").split(" ", 1)[0])
    for daemon in _DAEMON_EXES:
        if exe == daemon or name == daemon:
            return daemon
    for needle, group in _DAEMON_SCRIPTS:
        if needle in (cmdline or ""):
            return group
    return None


def is_method_title(cmdline: str) -> bool:
    """Whether a title shows a method call (``ray::SamplerActor.sample``)."""
    m = _TITLE.match(cmdline or "")
    return bool(m and m.group(3))


def is_ray(label: str | None) -> bool:
    """Whether a label from :func:`classify` is a Ray worker or daemon."""
    return label is not None and (label.startswith("ray::") or label in DAEMONS)


def tracked_pids(procs: Sequence[Proc], driver_pid: int, started: float) -> set[int]:
    """The processes of this run: the driver, its descendants and new Ray processes.

    A local cluster the driver starts (daemons, workers, their subprocesses) descends from it;
    a Ray process started after ``started`` elsewhere in the process tree (one that detached)
    is taken too. Ray processes older than the job belong to another cluster.

    Args:
        procs: Every process on the machine.
        driver_pid: The job's process id.
        started: When the job was launched (epoch seconds).
    """
    parent = {p.pid: p.ppid for p in procs}
    out = set()
    for p in procs:
        pid, seen = p.pid, set()
        while pid in parent and pid not in seen and pid != driver_pid:
            seen.add(pid)
            pid = parent[pid]
        if pid == driver_pid or (is_ray(classify(p.name, p.cmdline))
                                 and p.create_time >= started):
            out.add(p.pid)
    return out


def observe(procs: Iterable[Proc], driver_pid: int, time_s: float) -> list[Obs]:
    """One sample's observations of the tracked processes (``procs`` with their RSS)."""
    return [Obs(time_s, p.pid, p.ppid,
                "driver" if p.pid == driver_pid else classify(p.name, p.cmdline),
                is_method_title(p.cmdline), p.rss / MB) for p in procs]


def resolve_roles(obs: Iterable[Obs]) -> dict[int, str]:
    """One role per process for the whole run, from everything its titles said.

    A Ray worker's title changes while it lives (``ray::IDLE``, ``ray::SamplerActor.__init__``,
    ``ray::sampler-0`` when the actor has a ``__repr__``, ``ray::SamplerActor.sample``), so
    a sample's title alone would split one process across roles. A process is named, in this
    order of preference, after the actor class of its method calls, else its most frequent
    other title (a task worker: the task it ran most), else its daemon or script name, else
    ``ray::IDLE``; a process with none of these (a vLLM engine's subprocess, a compile worker)
    takes its parent's role plus ``/child`` (``other`` without a tracked parent).

    Args:
        obs: Observations of every sample.

    Returns:
        ``{pid: role}``.
    """
    votes: dict[int, dict[tuple[int, str], int]] = {}
    first: dict[tuple[int, str], float] = {}
    parent: dict[int, int] = {}
    for o in obs:
        parent.setdefault(o.pid, o.ppid)
        if o.label is None:
            votes.setdefault(o.pid, {})
            continue
        if o.label == "driver":
            rank = 4
        elif o.method:
            rank = 3
        elif o.label.startswith(("ray::", "VLLM::")) and o.label not in _WAITING:
            rank = 2
        elif o.label not in _WAITING:
            rank = 1
        else:
            rank = 0
        key = (rank, o.label)
        votes.setdefault(o.pid, {})[key] = votes.get(o.pid, {}).get(key, 0) + 1
        first.setdefault((o.pid, o.label), o.time_s)
    own = {}
    for pid, counts in votes.items():
        if counts:
            # Highest rank, then most samples, then the earliest seen.
            own[pid] = min(counts, key=lambda k: (-k[0], -counts[k], first[(pid, k[1])]))[1]
    roles = {}
    for pid in votes:
        if pid in own:
            roles[pid] = own[pid]
            continue
        up, seen = parent.get(pid), {pid}
        while up is not None and up not in own and up in parent and up not in seen:
            seen.add(up)
            up = parent[up]
        roles[pid] = own[up] + "/child" if up in own else "other"
    return roles


def role_rows(obs: Sequence[Obs], roles: Mapping[int, str]) -> list[dict]:
    """``soak.csv`` rows: per sample and role, the summed RSS and the process count.

    Every role gets a row in every sample (0 MB and 0 processes while none of its processes
    is alive), so sums over roles at one time are comparable.
    """
    sums: dict[float, dict[str, list]] = {}
    for o in obs:
        cell = sums.setdefault(o.time_s, {}).setdefault(roles[o.pid], [0.0, 0])
        cell[0] += o.rss_mb
        cell[1] += 1
    names = sorted(set(roles.values()))
    return [{"time_s": t, "group": g, "rss_mb": round(sums[t].get(g, [0.0, 0])[0], 2),
             "processes": sums[t].get(g, [0.0, 0])[1]} for t in sorted(sums) for g in names]


def snapshot() -> list[Proc]:
    """Every process on the machine that psutil can see (RSS read later, for tracked ones)."""
    import psutil

    procs = []
    for p in psutil.process_iter(["pid", "ppid", "name", "cmdline", "create_time"]):
        info = p.info
        procs.append(Proc(pid=info["pid"], ppid=info["ppid"] or 0, name=info["name"] or "",
                          cmdline=" ".join(a for a in info["cmdline"] or [] if a),
                          create_time=info["create_time"] or 0.0))
    return procs


def with_rss(procs: Iterable[Proc], pids: Iterable[int]) -> list[Proc]:
    """``procs`` restricted to ``pids``, with their RSS (processes gone meanwhile dropped)."""
    import psutil

    keep = set(pids)
    out = []
    for p in procs:
        if p.pid not in keep:
            continue
        try:
            rss = psutil.Process(p.pid).memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        out.append(Proc(p.pid, p.ppid, p.name, p.cmdline, rss, p.create_time))
    return out


# ---------------------------------------------------------------------------------- analysis


def series(rows: Iterable[Mapping]) -> dict[str, list[tuple[float, float]]]:
    """Per role, ``(time_s, rss_mb)`` in time order, plus :data:`TOTAL` (all roles summed).

    Args:
        rows: ``soak.csv`` rows (``time_s``, ``group``, ``rss_mb``; strings or numbers).
    """
    out: dict[str, list[tuple[float, float]]] = {}
    totals: dict[float, float] = {}
    for r in rows:
        t, mb = float(r["time_s"]), float(r["rss_mb"])
        out.setdefault(str(r["group"]), []).append((t, mb))
        totals[t] = totals.get(t, 0.0) + mb
    for points in out.values():
        points.sort()
    if totals:
        out[TOTAL] = sorted(totals.items())
    return out


def value_at(points: Sequence[tuple[float, float]], t: float) -> float | None:
    """The last sample at or before ``t`` (None before the first one)."""
    best = None
    for time_s, mb in points:
        if time_s > t:
            break
        best = mb
    return best


def peak_between(points: Sequence[tuple[float, float]], start: float,
                 end: float) -> float | None:
    """The largest sample in ``(start, end]`` (None when there is none)."""
    inside = [mb for time_s, mb in points if start < time_s <= end]
    return max(inside) if inside else None


def growth_table(rows: Iterable[Mapping], step_ends: Mapping[int, float], *,
                 threshold_mb: float = 32.0, threshold_pct: float = 5.0) -> list[dict]:
    """Per role: RSS at step ends, growth from step 2's end to the last step's end, peaks.

    Args:
        rows: ``soak.csv`` rows.
        step_ends: ``{step: time_s}`` of every logged ``Evolve step k done``.
        threshold_mb: A role grows only when it gained more than this many MB ...
        threshold_pct: ... and more than this percentage of its RSS at step 2's end (any
            percentage when it had no process then).

    Returns:
        One dict per role (``total`` last), with ``group``, ``first``/``base``/``last`` (RSS
        at the end of the first, second and last step), ``first_step``/``base_step``/
        ``last_step``, ``growth_mb``, ``growth_pct`` (None when ``base`` is 0),
        ``mb_per_step``, ``peak_base``/``peak_last`` (the largest sample within step 2 and
        within the last step), ``processes`` (the most at once) and ``grows``. Comparisons
        need three steps; with fewer the growth fields are None and ``grows`` is False.
    """
    rows = list(rows)
    by_group = series(rows)
    counts: dict[str, int] = {}
    for r in rows:
        n = int(float(r.get("processes") or 0))
        counts[str(r["group"])] = max(counts.get(str(r["group"]), 0), n)
    steps = sorted(step_ends)
    ends = [step_ends[s] for s in steps]
    out = []
    for group in sorted(g for g in by_group if g != TOTAL) + ([TOTAL] if TOTAL in by_group
                                                              else []):
        pts = by_group[group]
        rec: dict[str, Any] = {
               "group": group, "processes": counts.get(group) if group != TOTAL else None,
               "first_step": steps[0] if steps else None,
               "base_step": steps[1] if len(steps) > 1 else None,
               "last_step": steps[-1] if steps else None,
               "first": value_at(pts, ends[0]) if ends else None,
               "base": value_at(pts, ends[1]) if len(ends) > 1 else None,
               "last": value_at(pts, ends[-1]) if ends else None,
               "peak_base": peak_between(pts, ends[0], ends[1]) if len(ends) > 1 else None,
               "peak_last": (peak_between(pts, ends[-2], ends[-1]) if len(ends) > 1
                             else None),
               "growth_mb": None, "growth_pct": None, "mb_per_step": None, "grows": False}
        if len(steps) >= 3 and rec["base"] is not None and rec["last"] is not None:
            growth = rec["last"] - rec["base"]
            rec["growth_mb"] = growth
            rec["mb_per_step"] = growth / (steps[-1] - steps[1])
            rec["growth_pct"] = 100.0 * growth / rec["base"] if rec["base"] > 0 else None
            rec["grows"] = growth > threshold_mb and (rec["growth_pct"] is None
                                                      or rec["growth_pct"] > threshold_pct)
        out.append(rec)
    return out


def verdict(table: Sequence[dict], *, threshold_mb: float, threshold_pct: float) -> str:
    """One line saying whether any role grew between step 2's end and the last step's end."""
    if not table or table[0]["last_step"] is None:
        return "inconclusive: no Evolve step finished, so there is nothing to compare"
    base_step, last_step = table[0]["base_step"], table[0]["last_step"]
    if base_step is None or last_step - base_step < 1 or all(
            r["growth_mb"] is None for r in table):
        return ("inconclusive: growth is measured from the end of step 2 to the end of the last "
                f"step, which needs at least 3 Evolve steps (the last one done: {last_step})")
    span = f"from the end of step {base_step} to the end of step {last_step}"
    growing = [r for r in table if r["grows"]]
    if growing:
        parts = [f"{r['group']} +{r['growth_mb']:.1f} MB ("
                 + (f"+{r['growth_pct']:.1f}%" if r["growth_pct"] is not None else "new")
                 + f", {r['mb_per_step']:.1f} MB/step)" for r in growing]
        return (f"GROWTH {span}: " + "; ".join(parts)
                + f" (a role grows when it gains > {threshold_mb:g} MB and > "
                  f"{threshold_pct:g}%)")
    known = [r for r in table if r["growth_mb"] is not None]
    top = max(known, key=lambda r: r["growth_mb"])
    return (f"no growth {span}: every role stayed within {threshold_mb:g} MB or "
            f"{threshold_pct:g}% (largest change: {top['group']} {top['growth_mb']:+.1f} MB)")


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+,.1f}"


def _pct(rec: Mapping) -> str:
    if rec["growth_pct"] is not None:
        return f"{rec['growth_pct']:+.1f}"
    # No process at step 2's end: a role that appeared since has no percentage.
    return "new" if (rec["growth_mb"] or 0) > 0 else "-"


def soak_markdown(table: Sequence[dict], step_ends: Mapping[int, float], *, command: str,
                  interval: float, samples: int, exit_code: int | None, wall_s: float,
                  machine: str, threshold_mb: float, threshold_pct: float) -> str:
    """``soak.md``: what ran, the step ends, the per-role table and the verdict."""
    from bench.common import table as md_table

    first = table[0] if table else {}
    b, last = first.get("base_step"), first.get("last_step")
    header = ["role", "processes", f"end of step {first.get('first_step') or 1} MB",
              f"end of step {b or 2} MB", f"end of step {last or '-'} MB",
              f"growth {b or 2}->{last or '-'} MB", "growth %", "MB / step",
              f"peak in step {b or 2} MB", f"peak in step {last or '-'} MB"]
    rows = [[r["group"], "-" if r["processes"] is None else str(r["processes"]),
             _mb(r["first"]), _mb(r["base"]), _mb(r["last"]), _signed(r["growth_mb"]),
             _pct(r), _signed(r["mb_per_step"]), _mb(r["peak_base"]), _mb(r["peak_last"])]
            for r in table]
    ends = ", ".join(f"{s}: {t:.1f} s" for s, t in sorted(step_ends.items())) or "none"
    status = ("still running when stopped" if exit_code is None
              else f"exit status {exit_code}")
    return "\n".join([
        "# Soak: process memory across Evolve steps", "",
        f"`{command}`, sampled every {interval:g} s ({samples} samples; job {status}, "
        f"{wall_s:.0f} s). {machine}", "",
        f"Step ends (seconds since the job started): {ends}.", "",
        md_table(header, rows), "",
        f"**Verdict:** {verdict(table, threshold_mb=threshold_mb, threshold_pct=threshold_pct)}",
        "",
        "RSS per role is summed over its processes. It counts shared pages (Ray's object "
        "store, shared libraries) in every process that maps them, so `total` overstates the "
        "machine's memory use; the growth between equal points of later steps is the figure "
        "that matters. A role with no process alive at a step end shows 0 there (Ray Train "
        "workers live only while a step trains: their peaks show what each step used).", "",
        "![RSS per role over time](soak.png)", ""])


def plot_soak(by_group: Mapping[str, Sequence[tuple[float, float]]],
              step_ends: Mapping[int, float], path: Path) -> Path:
    """``soak.png``: RSS per role over time (top) and the total (bottom), step ends marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_total) = plt.subplots(2, 1, figsize=(11, 8), sharex=True,
                                       gridspec_kw={"height_ratios": [3, 1]})
    # A run has ~30 roles; past a dozen lines nobody can tell them apart, so the smallest
    # (by peak) are drawn as one summed line.
    roles = sorted((g for g, pts in by_group.items() if g != TOTAL and pts),
                   key=lambda g: -max(mb for _, mb in by_group[g]))
    shown, rest = roles[:MAX_LINES], roles[MAX_LINES:]
    cmap = plt.get_cmap("tab20")
    colors = [cmap(i) for i in range(cmap.N)]  # its 20 colors (an int indexes the table)
    for i, group in enumerate(shown):
        pts = by_group[group]
        ax.plot([t for t, _ in pts], [mb for _, mb in pts], label=group, linewidth=1.2,
                color=colors[i % len(colors)])
    if rest:
        summed: dict[float, float] = {}
        for group in rest:
            for t, mb in by_group[group]:
                summed[t] = summed.get(t, 0.0) + mb
        ax.plot(sorted(summed), [summed[t] for t in sorted(summed)], color="grey",
                linewidth=1.0, linestyle=":", label=f"{len(rest)} smaller roles, summed")
    if TOTAL in by_group:
        pts = by_group[TOTAL]
        ax_total.plot([t for t, _ in pts], [mb for _, mb in pts], color="black", linewidth=1.2)
    for axis in (ax, ax_total):
        for t in sorted(step_ends.values()):
            axis.axvline(t, color="grey", linestyle="--", linewidth=0.8)
        axis.grid(alpha=0.3)
    for step, t in sorted(step_ends.items()):
        ax.annotate(f"step {step} done", (t, 1.0), xycoords=("data", "axes fraction"),
                    rotation=90, va="top", ha="right", fontsize=8, color="grey")
    ax.set_ylabel("RSS (MB)")
    ax.set_title("RSS per role over a self-enhancement run")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax_total.set_ylabel("total RSS (MB)")
    ax_total.set_xlabel("seconds since the job started")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------- the run


class JobLog:
    """Copies the job's output to ``job.log`` and notes when each Evolve step ends.

    Args:
        stream: The job's combined stdout/stderr.
        path: Where the copy goes.
        t0: ``time.monotonic()`` at launch; step ends are seconds since then.
    """

    def __init__(self, stream, path: Path, t0: float):
        self.step_ends: dict[int, float] = {}
        self.tail: list[str] = []
        self._stream, self._path, self._t0 = stream, path, t0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with self._path.open("w", encoding="utf-8") as fh:
            for line in self._stream:
                now = time.monotonic() - self._t0
                fh.write(line)
                fh.flush()
                m = STEP_DONE.search(line)
                with self._lock:
                    self.tail = (self.tail + [line.rstrip("\n")])[-20:]
                    if m:
                        self.step_ends.setdefault(int(m.group(1)), now)

    def ends(self) -> dict[int, float]:
        with self._lock:
            return dict(self.step_ends)

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)


def _stop(proc: subprocess.Popen) -> None:
    """Interrupt the job (its own handler shuts Ray down), then kill its process group."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the job's own group: start_new_session below
    except ProcessLookupError:
        pass
    proc.wait(30)


def run_soak(out: Path, *, config: str, overrides: Sequence[str], interval: float,
             timeout_s: float, threshold_mb: float, threshold_pct: float,
             wait_s: float = 0.0, job: Path = ROOT / "jobs" / "self_enhance.py",
             check_idle: bool = True) -> dict:
    """Run the job, sample memory until it exits, and write the CSVs, plot and report.

    Args:
        out: Output directory.
        config: The job's recipe.
        overrides: Recipe overrides, after ``evolve.steps=5 run.dir=<out>/run``.
        interval: Seconds between samples.
        timeout_s: Stop the job after this long.
        threshold_mb: See :func:`growth_table`.
        threshold_pct: See :func:`growth_table`.
        wait_s: How long to wait for another Ray cluster on this machine to go away.
        job: The script to run (tests substitute one that starts no Ray).
        check_idle: Refuse to start while another Ray cluster runs here.

    Returns:
        ``{"exit_code", "verdict", "table", "step_ends", "files"}``.

    Raises:
        LireError: Another Ray cluster is still running here after ``wait_s``.
    """
    from bench.common import machine_info, machine_line
    from bench.overlap import wait_for_idle_ray
    from lire_ray.errors import LireError

    if check_idle:
        try:
            wait_for_idle_ray(wait_s)
        except LireError as exc:
            # The overlap bench's message names its own option; say this bench's.
            raise LireError(str(exc).replace("--overlap-wait", "--wait")) from None
    out.mkdir(parents=True, exist_ok=True)
    args = [f"evolve.steps={DEFAULT_STEPS}", f"run.dir={out / 'run'}", *overrides]
    cmd = [sys.executable, str(job), "--config", config, *args]
    shown = os.path.relpath(config, ROOT) if Path(config).is_absolute() else config
    command = " ".join(["python", os.path.relpath(job, ROOT), "--config", shown, *args])
    print(f"soak: {command}", flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started, t0 = time.time(), time.monotonic()
    # A session of its own: on a timeout its whole process group can be killed, and Ctrl-C in
    # this terminal reaches the job only through _stop, which lets it shut Ray down first.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace",
                            start_new_session=True)
    log = JobLog(proc.stdout, out / "job.log", t0)
    samples, obs, reported = 0, [], set()
    try:
        # Raw observations go to disk as they come, so a soak that is killed keeps its data;
        # roles are resolved from the whole run at the end (see resolve_roles).
        with (out / "processes.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["time_s", "pid", "ppid", "label", "method", "rss_mb"])
            while True:
                tick = time.monotonic()
                procs = snapshot()
                now = round(time.monotonic() - t0, 2)
                sample = observe(with_rss(procs, tracked_pids(procs, proc.pid, started - 1.0)),
                                 proc.pid, now)
                obs.extend(sample)
                writer.writerows([o.time_s, o.pid, o.ppid, o.label or "", int(o.method),
                                  round(o.rss_mb, 2)] for o in sample)
                fh.flush()
                samples += 1
                for step, t in sorted(log.ends().items()):
                    if step not in reported:
                        reported.add(step)
                        print(f"soak: Evolve step {step} done at {t:.0f} s; tracked RSS "
                              f"{sum(o.rss_mb for o in sample):,.0f} MB in {len(sample)} "
                              "process(es)", flush=True)
                if proc.poll() is not None:
                    break
                if now > timeout_s:
                    print(f"soak: the job ran past {timeout_s:.0f} s; stopping it", flush=True)
                    _stop(proc)
                    break
                time.sleep(max(0.0, interval - (time.monotonic() - tick)))
    except KeyboardInterrupt:
        print("soak: interrupted; stopping the job", flush=True)
        _stop(proc)
    wall = time.monotonic() - t0
    exit_code = proc.poll()
    log.join()
    step_ends = log.ends()
    with (out / "steps.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", "time_s"])
        for step, t in sorted(step_ends.items()):
            writer.writerow([step, round(t, 2)])
    rows = role_rows(obs, resolve_roles(obs))
    with (out / "soak.csv").open("w", newline="", encoding="utf-8") as fh:
        row_writer = csv.DictWriter(fh, ["time_s", "group", "rss_mb", "processes"])
        row_writer.writeheader()
        row_writer.writerows(rows)
    table = growth_table(rows, step_ends, threshold_mb=threshold_mb, threshold_pct=threshold_pct)
    line = verdict(table, threshold_mb=threshold_mb, threshold_pct=threshold_pct)
    plot_soak(series(rows), step_ends, out / "soak.png")
    (out / "soak.md").write_text(soak_markdown(
        table, step_ends, command=command, interval=interval, samples=samples,
        exit_code=exit_code, wall_s=wall, machine=machine_line(machine_info("cpu")),
        threshold_mb=threshold_mb, threshold_pct=threshold_pct), encoding="utf-8")
    if exit_code != 0:
        print("soak: the job did not finish; its last lines:\n  " + "\n  ".join(log.tail),
              file=sys.stderr)
    return {"exit_code": exit_code, "verdict": line, "table": table, "step_ends": step_ends,
            "files": [str(out / n) for n in ("soak.csv", "steps.csv", "processes.csv",
                                             "soak.png", "soak.md", "job.log")]}


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``--out`` and sampling options, then recipe overrides."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--out", required=True, type=Path, help="output directory (the run goes "
                   "to OUT/run unless run.dir=... is given)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    p.add_argument("--config", default="configs/tiny.yaml", help="the job's recipe")
    p.add_argument("--timeout", type=float, default=3600.0, help="stop the job after this "
                   "many seconds (default 3600)")
    p.add_argument("--threshold-mb", type=float, default=32.0,
                   help="a role grows when it gains more than this many MB ...")
    p.add_argument("--threshold-pct", type=float, default=5.0,
                   help="... and more than this percentage (defaults 32 MB and 5%%)")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for another Ray cluster on this machine to stop")
    p.add_argument("overrides", nargs="*", metavar="key.path=value",
                   help="recipe overrides for the job, e.g. evolve.steps=8")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak; exit status 0 when the job finished (whatever the verdict), else 1."""
    from lire_ray.errors import LireError

    args = build_parser().parse_args(argv)
    if args.interval <= 0:
        print("soak: error: --interval must be > 0", file=sys.stderr)
        return 2
    # The job runs from the repository root (as jobs are launched); paths given here are
    # taken from the current directory.
    config = str(Path(args.config).resolve()) if Path(args.config).exists() else args.config
    try:
        result = run_soak(args.out.resolve(), config=config, overrides=args.overrides,
                          interval=args.interval, timeout_s=args.timeout,
                          threshold_mb=args.threshold_mb, threshold_pct=args.threshold_pct,
                          wait_s=args.wait)
    except LireError as exc:
        print(f"soak: error: {exc}", file=sys.stderr)
        return 2
    print(f"soak: {result['verdict']}")
    print("soak: wrote " + ", ".join(result["files"]))
    return 0 if result["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
