"""The soak bench's bookkeeping: process roles, per-role sums, growth between step ends and the
verdict, all against numbers worked out by hand; and one short run of a stand-in job (no Ray)
whose memory grows on purpose."""

from __future__ import annotations

import csv
import textwrap

import pytest

from bench.soak import (
    MB,
    Obs,
    Proc,
    classify,
    growth_table,
    is_method_title,
    observe,
    resolve_roles,
    role_rows,
    run_soak,
    soak_markdown,
    tracked_pids,
    verdict,
)

RAY = "/venv/lib/python3.12/site-packages/ray"


@pytest.mark.parametrize("name,cmdline,group", [
    ("ray::SamplerActor.sample", "ray::SamplerActor.sample", "ray::SamplerActor"),
    ("ray::sampler-0", "ray::sampler-0", "ray::sampler-0"),  # an actor with a __repr__
    ("ray::IDLE", "ray::IDLE", "ray::IDLE"),
    ("ray::RayTrainWorker", "ray::RayTrainWorker", "ray::RayTrainWorker"),
    ("VLLM::EngineCore", "VLLM::EngineCore", "VLLM::EngineCore"),
    # The executable name alone is a title cut to 15 characters: not trusted.
    ("ray::SamplerAct", "", None),
    ("raylet", f"{RAY}/core/src/ray/raylet/raylet --raylet_socket_name=/tmp/ray/s/raylet",
     "raylet"),
    ("gcs_server", f"{RAY}/core/src/ray/gcs/gcs_server --log_dir=/tmp/ray", "gcs_server"),
    ("raylet", "", "raylet"),
    # Its arguments name the raylet's socket; it is a worker that has not set its title yet.
    ("python", f"/venv/bin/python {RAY}/_private/workers/default_worker.py "
     "--raylet-name=/tmp/ray/session/sockets/raylet", "ray::worker (starting)"),
    ("python", f"/venv/bin/python {RAY}/dashboard/dashboard.py --host=127.0.0.1", "dashboard"),
    ("python", f"/venv/bin/python -u {RAY}/dashboard/agent.py --node-ip-address=x",
     "dashboard_agent"),
    ("python", f"/venv/bin/python -u {RAY}/_private/log_monitor.py --session-dir=x",
     "log_monitor"),
    ("python", "/venv/bin/python -m pytest tests", None),
])
def test_classify(name, cmdline, group):
    assert classify(name, cmdline) == group


def test_method_titles():
    assert is_method_title("ray::SamplerActor.sample")
    assert is_method_title("ray::SamplerActor.__init__")
    assert not is_method_title("ray::sampler-0")
    assert not is_method_title("ray::IDLE")
    assert not is_method_title("/venv/bin/python x.py")


def test_tracked_are_the_driver_tree_and_new_ray_processes():
    start = 1000.0
    procs = [
        Proc(100, 1, "python", "python jobs/self_enhance.py", 0, start + 1),
        Proc(101, 100, "gcs_server", f"{RAY}/gcs/gcs_server", 0, start + 2),
        Proc(102, 100, "raylet", f"{RAY}/raylet/raylet", 0, start + 2),
        Proc(110, 102, "ray::SamplerActor", "ray::SamplerActor", 0, start + 5),
        Proc(111, 110, "python", "python -c from multiprocessing.spawn import", 0, start + 6),
        Proc(120, 100, "python", "python -c compile worker", 0, start + 3),
        # Detached from the tree but started with the job: still this run's.
        Proc(130, 1, "ray::IDLE", "ray::IDLE", 0, start + 20),
        # Another cluster's worker, older than the job, and an unrelated process.
        Proc(300, 1, "ray::SamplerActor", "ray::SamplerActor", 0, start - 50),
        Proc(400, 1, "python", "python some_script.py", 0, start + 30),
    ]
    assert tracked_pids(procs, driver_pid=100, started=start) == {100, 101, 102, 110, 111, 120,
                                                                  130}


def _samples(titles: dict[int, list[str]], ppid: dict[int, int], rss: dict[int, float]):
    """Observations of processes whose titles change from sample to sample ('' = gone)."""
    procs_at = []
    for i in range(max(len(t) for t in titles.values())):
        procs_at.append([Proc(pid, ppid[pid], "", t[i], int(rss[pid] * MB))
                         for pid, t in titles.items() if i < len(t) and t[i] != ""])
    return [o for i, procs in enumerate(procs_at) for o in observe(procs, 100, float(i))]


def test_roles_follow_a_process_through_its_changing_titles():
    driver = "python jobs/self_enhance.py"
    titles = {
        100: [driver] * 5,
        102: [f"{RAY}/raylet/raylet"] * 5,
        # An actor worker: idle, created, idle under its __repr__, busy in a method.
        110: ["ray::IDLE", "ray::SamplerActor.__init__", "ray::sampler-0",
              "ray::SamplerActor.sample", "ray::sampler-0"],
        111: ["", "", "python -m vllm engine", "python -m vllm engine", ""],
        # A pooled task worker: named after the task it ran most.
        120: ["ray::IDLE", "ray::ListFiles", "ray::reduce", "ray::reduce", "ray::IDLE"],
        # The dashboard agent starts as a script and then sets its title.
        130: [f"python {RAY}/dashboard/agent.py", "ray::DashboardAgent", "ray::DashboardAgent",
              "ray::DashboardAgent", "ray::DashboardAgent"],
        140: ["ray::IDLE"] * 5,
        150: ["", "python -c compile", "python -c compile", "", ""],
    }
    ppid = {100: 1, 102: 100, 110: 102, 111: 110, 120: 102, 130: 102, 140: 102, 150: 100}
    rss = {100: 300, 102: 40, 110: 900, 111: 700, 120: 200, 130: 50, 140: 80, 150: 10}
    obs = _samples(titles, ppid, rss)
    roles = resolve_roles(obs)
    assert roles == {100: "driver", 102: "raylet", 110: "ray::SamplerActor",
                     111: "ray::SamplerActor/child", 120: "ray::reduce",
                     130: "ray::DashboardAgent", 140: "ray::IDLE", 150: "driver/child"}
    rows = role_rows(obs, roles)
    # Every role in every sample; the vLLM child is alive in samples 2 and 3 only.
    assert len(rows) == 5 * 8
    child = [(r["time_s"], r["rss_mb"], r["processes"]) for r in rows
             if r["group"] == "ray::SamplerActor/child"]
    assert child == [(0.0, 0.0, 0), (1.0, 0.0, 0), (2.0, 700.0, 1), (3.0, 700.0, 1),
                     (4.0, 0.0, 0)]
    assert sum(r["rss_mb"] for r in rows if r["time_s"] == 2.0) == 300 + 40 + 900 + 700 + 200 \
        + 50 + 80 + 10


def test_two_processes_of_one_role_add_up():
    obs = [Obs(0.0, 7, 1, "ray::RayTrainWorker", False, 500.0),
           Obs(0.0, 8, 1, "ray::RayTrainWorker", True, 520.0),
           Obs(1.0, 8, 1, "ray::RayTrainWorker", False, 530.0)]
    rows = role_rows(obs, resolve_roles(obs))
    assert rows == [{"time_s": 0.0, "group": "ray::RayTrainWorker", "rss_mb": 1020.0,
                     "processes": 2},
                    {"time_s": 1.0, "group": "ray::RayTrainWorker", "rss_mb": 530.0,
                     "processes": 1}]


def _rows(values: dict[str, list[float]], times: list[float]) -> list[dict]:
    return [{"time_s": t, "group": g, "rss_mb": v[i], "processes": 1 if v[i] else 0}
            for i, t in enumerate(times) for g, v in values.items()]


TIMES = [5, 10, 15, 20, 25, 30, 35, 40, 45]
VALUES = {  # one sample every 5 s; step ends at 10, 20, 30 and 41.5 s
    "driver":              [480, 500, 500, 500, 520, 550, 580, 600, 610],
    "ray::SamplerActor":   [900, 990, 995, 1000, 1010, 1020, 1030, 1040, 1040],
    "raylet":              [45, 48, 49, 50, 52, 55, 58, 60, 60],
    "ray::RayTrainWorker": [0, 0, 800, 0, 0, 0, 900, 0, 0],
    "ray::IDLE":           [0, 0, 0, 0, 0, 0, 50, 50, 50],
}
STEP_ENDS = {1: 10.0, 2: 20.0, 3: 30.0, 4: 41.5}


def test_growth_between_step_ends_worked_by_hand():
    table = {r["group"]: r for r in growth_table(_rows(VALUES, TIMES), STEP_ENDS)}
    assert list(table)[-1] == "total"
    d = table["driver"]
    # Ends of step 1, 2, 4 (the last sample at or before 41.5 s is the one at 40 s).
    assert (d["first"], d["base"], d["last"]) == (500, 500, 600)
    assert d["growth_mb"] == pytest.approx(100.0)
    assert d["growth_pct"] == pytest.approx(20.0)
    assert d["mb_per_step"] == pytest.approx(50.0)  # two steps, 3 and 4
    assert d["grows"]
    s = table["ray::SamplerActor"]  # +40 MB but only +4%
    assert s["growth_mb"] == pytest.approx(40.0) and s["growth_pct"] == pytest.approx(4.0)
    assert not s["grows"]
    r = table["raylet"]  # +20% but only +10 MB
    assert r["growth_mb"] == pytest.approx(10.0) and r["growth_pct"] == pytest.approx(20.0)
    assert not r["grows"]
    t = table["ray::RayTrainWorker"]  # alive only while a step trains
    assert (t["base"], t["last"], t["growth_mb"], t["growth_pct"]) == (0, 0, 0, None)
    assert (t["peak_base"], t["peak_last"]) == (800, 900)  # within (10, 20] and (30, 41.5]
    assert not t["grows"]
    i = table["ray::IDLE"]  # appeared after step 2: grows with no percentage
    assert i["growth_mb"] == pytest.approx(50.0) and i["growth_pct"] is None and i["grows"]
    total = table["total"]
    assert (total["base"], total["last"]) == (1550, 1750)
    assert total["growth_pct"] == pytest.approx(100 * 200 / 1550)
    assert total["grows"] and total["processes"] is None
    assert table["driver"]["processes"] == 1

    line = verdict(list(table.values()), threshold_mb=32, threshold_pct=5)
    assert line.startswith("GROWTH from the end of step 2 to the end of step 4")
    assert "driver +100.0 MB (+20.0%, 50.0 MB/step)" in line
    assert "ray::IDLE +50.0 MB (new, 25.0 MB/step)" in line
    assert "total +200.0 MB (+12.9%" in line
    assert "SamplerActor" not in line and "raylet" not in line


def test_thresholds_and_the_no_growth_verdict():
    table = growth_table(_rows(VALUES, TIMES), STEP_ENDS, threshold_mb=250, threshold_pct=5)
    assert not any(r["grows"] for r in table)
    line = verdict(table, threshold_mb=250, threshold_pct=5)
    assert line.startswith("no growth from the end of step 2 to the end of step 4")
    assert "largest change: total +200.0 MB" in line


def test_fewer_than_three_steps_is_inconclusive():
    two = growth_table(_rows(VALUES, TIMES), {1: 10.0, 2: 20.0})
    assert all(r["growth_mb"] is None and not r["grows"] for r in two)
    assert {r["group"]: r["base"] for r in two}["driver"] == 500
    assert "needs at least 3 Evolve steps" in verdict(two, threshold_mb=32, threshold_pct=5)
    none = growth_table(_rows(VALUES, TIMES), {})
    assert "no Evolve step finished" in verdict(none, threshold_mb=32, threshold_pct=5)


def test_csv_strings_and_markdown(tmp_path):
    path = tmp_path / "soak.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["time_s", "group", "rss_mb", "processes"])
        writer.writeheader()
        writer.writerows(_rows(VALUES, TIMES))
    with path.open() as fh:
        from_csv = growth_table(list(csv.DictReader(fh)), STEP_ENDS)
    assert from_csv == growth_table(_rows(VALUES, TIMES), STEP_ENDS)
    text = soak_markdown(from_csv, STEP_ENDS, command="python jobs/self_enhance.py",
                         interval=2, samples=9, exit_code=0, wall_s=47, machine="Machine: x.",
                         threshold_mb=32, threshold_pct=5)
    assert "| role | processes | end of step 1 MB | end of step 2 MB | end of step 4 MB |" \
        in text
    assert "| driver | 1 | 500.0 | 500.0 | 600.0 | +100.0 | +20.0 | +50.0 |" in text
    assert "| ray::IDLE | 1 | 0.0 | 0.0 | 50.0 | +50.0 | new |" in text
    assert "**Verdict:** GROWTH" in text and "![RSS per role over time](soak.png)" in text


STAND_IN = textwrap.dedent("""
    # Stands in for the self-enhancement job: a child process, and 40 MB more per step.
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    held = []
    for step in range(1, 5):
        held.append(bytearray(40 * 1024 * 1024))
        for i in range(0, len(held[-1]), 4096):
            held[-1][i] = 1  # touch every page so it is resident
        time.sleep(1.0)  # several samples between allocating and logging
        print(f"12:00:00 INFO lire_ray.self_enhance: Evolve step {step} done: reward 0.1",
              flush=True)
    child.kill()
""")


def test_stand_in_job_end_to_end(tmp_path):
    job = tmp_path / "job.py"
    job.write_text(STAND_IN)
    out = tmp_path / "soak"
    result = run_soak(out, config="configs/tiny.yaml", overrides=["evolve.steps=4"],
                      interval=0.1, timeout_s=60, threshold_mb=32, threshold_pct=5, job=job,
                      check_idle=False)
    assert result["exit_code"] == 0
    assert sorted(result["step_ends"]) == [1, 2, 3, 4]
    assert (out / "processes.csv").is_file()
    ends = [result["step_ends"][k] for k in (1, 2, 3, 4)]
    assert all(0.9 < b - a < 5 for a, b in zip(ends, ends[1:]))
    table = {r["group"]: r for r in result["table"]}
    assert table["driver/child"]["processes"] == 1
    # Two steps of 40 MB each between step 2's end and step 4's end.
    assert table["driver"]["growth_mb"] == pytest.approx(80, abs=15)
    assert table["driver"]["grows"] and "driver +" in result["verdict"]
    assert not table["driver/child"]["grows"]
    with (out / "soak.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {"time_s", "group", "rss_mb", "processes"} <= set(rows[0])
    assert {r["group"] for r in rows} >= {"driver", "driver/child"}
    with (out / "steps.csv").open() as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [1, 2, 3, 4]
    assert (out / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "**Verdict:** GROWTH" in (out / "soak.md").read_text()
    assert "Evolve step 4 done" in (out / "job.log").read_text()
