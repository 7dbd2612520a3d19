"""Evaluation numbers, confidence intervals, plots and report links (no Ray, no model)."""

from __future__ import annotations

import math
import re
import statistics

import pytest

from lire_ray import plots
from lire_ray.errors import RunDirError
from lire_ray.metrics import stats as ev
from lire_ray.metrics import summary
from lire_ray.report import write_report
from lire_ray.rundir import prepare_output
from lire_ray.studies.compare_report import aggregate, tables
from lire_ray.studies.grid import grid_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Two-sided 95% Student-t critical values t_{0.975, df} from a printed t table.
T_TABLE = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305, 4: 2.776445105, 10: 2.228138852,
           30: 2.042272456}


@pytest.mark.parametrize("df,expected", sorted(T_TABLE.items()))
def test_t_quantile_matches_table(df, expected):
    assert ev.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-7)
    assert ev.t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-7)


def test_t_quantile_other_levels_and_errors():
    assert ev.t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-9)
    assert ev.t_quantile(0.995, 1) == pytest.approx(63.656741162872, rel=1e-7)   # table value
    assert ev.t_quantile(0.95, 5) == pytest.approx(2.015048373, abs=1e-7)        # table value
    with pytest.raises(ValueError):
        ev.t_quantile(1.0, 3)
    with pytest.raises(ValueError):
        ev.t_quantile(0.9, 0)


def test_mean_ci_three_seeds_by_hand():
    # values 1, 2, 4: mean 7/3, s^2 = ((4/3)^2 + (1/3)^2 + (5/3)^2) / 2 = 7/3.
    iv = ev.mean_ci([1.0, 2.0, 4.0])
    half = 4.302652730 * math.sqrt(7 / 3) / math.sqrt(3)
    assert iv.mean == pytest.approx(7 / 3)
    assert iv.half_width == pytest.approx(half, rel=1e-8)
    assert (iv.low, iv.high, iv.n) == (pytest.approx(7 / 3 - half), pytest.approx(7 / 3 + half), 3)


def test_mean_ci_single_seed_and_constant_values():
    one = ev.mean_ci([0.25])
    assert one.mean == 0.25 and math.isnan(one.half_width) and one.n == 1
    same = ev.mean_ci([0.5, 0.5, 0.5, 0.5])
    assert same.mean == 0.5 and same.half_width == 0.0
    with pytest.raises(ValueError):
        ev.mean_ci([])


def test_sample_summary_by_hand():
    # 2 prompts, 2 samples; human answers score 1.0 and 0.0 under rm.
    scores = {"rm": [[2.0, 1.0], [0.0, -1.0]], "judge": [[0.0, 0.0], [3.0, 3.0]]}
    human = {"rm": [1.0, 0.0], "judge": [1.0, 1.0]}
    out = summary.sample_summary(scores, human, judges=["rm", "judge"])
    assert out["mean"] == {"rm": pytest.approx(0.5), "judge": pytest.approx(1.5)}
    # rm: win, tie, tie, loss -> (1 + .5 + .5 + 0) / 4; judge: loss, loss, win, win -> 2 / 4.
    assert out["win_rate"] == {"rm": pytest.approx(0.5), "judge": pytest.approx(0.5)}
    assert out["avg_win_rate"] == pytest.approx(0.5)
    only = summary.sample_summary(scores, human, judges=["judge"])
    assert only["avg_win_rate"] == pytest.approx(0.5)
    none = summary.sample_summary(scores, None, judges=["rm"])
    assert none["win_rate"] == {} and math.isnan(none["avg_win_rate"])
    with pytest.raises(ValueError):
        summary.sample_summary(scores, {"rm": [1.0]}, judges=["rm"])
    # A prompt without a human answer has no win rate: only prompt 0 counts (win, tie).
    partial = summary.sample_summary(scores, {"rm": [1.0, None]}, judges=["rm"])
    assert partial["win_rate"] == {"rm": pytest.approx(0.75)}
    assert partial["win_rate_prompts"] == 1 and out["win_rate_prompts"] == 2


def test_distinct_n_by_hand():
    from lire_ray.metrics.stats import distinct_n

    texts = ["a b a b", "A b c"]
    assert distinct_n(texts, 1) == pytest.approx(3 / 7)  # a, b, c of 7 words
    # bigrams: ab, ba, ab | ab, bc -> 3 distinct of 5
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)
    assert math.isnan(distinct_n(["one"], 2))
    with pytest.raises(ValueError):
        distinct_n(texts, 0)


def test_kl_summary_leaves_out_unmatched_samples():
    pol = [[-1.0, -2.0], [-3.0, None]]
    ref = [[-1.5, -2.0], [-1.0, -4.0]]
    matched = [[True, True], [False, True]]
    out = summary.kl_summary(pol, ref, matched)
    diffs = [0.5, 0.0]   # the unmatched sample and the one without a policy log-prob are out
    assert out["n"] == 2 and out["excluded"] == 2
    assert out["value"] == pytest.approx(statistics.mean(diffs))
    assert out["stderr"] == pytest.approx(statistics.stdev(diffs) / math.sqrt(2))
    empty = summary.kl_summary([[None]], [[0.0]])
    assert empty["n"] == 0 and math.isnan(empty["value"])


def test_best_of_n_summary_by_hand():
    # 2 prompts, 3 base samples; the picker rm chooses, the judge scores the choice.
    scores = {"rm": [[0.1, 0.9, 0.5], [0.3, 0.2, 0.8]],
              "judge": [[5.0, -1.0, 2.0], [1.0, 4.0, 0.0]]}
    human = {"rm": [0.5, 0.5], "judge": [0.0, 0.5]}
    out = summary.best_of_n_summary(scores, human, picker="rm", judges=["rm", "judge"],
                                    ns=[1, 2, 3])
    by_n = {o["n"]: o for o in out}
    # n=1: first samples. n=2: prompt 1 picks index 1, prompt 2 index 0. n=3: 1 and 2.
    assert by_n[1]["mean"]["judge"] == pytest.approx((5.0 + 1.0) / 2)
    assert by_n[2]["mean"]["judge"] == pytest.approx((-1.0 + 1.0) / 2)
    assert by_n[3]["mean"]["judge"] == pytest.approx((-1.0 + 0.0) / 2)
    assert by_n[3]["mean"]["rm"] == pytest.approx((0.9 + 0.8) / 2)
    # rm win rates: n=1 (0.1<0.5, 0.3<0.5) = 0; n=3 (0.9>0.5, 0.8>0.5) = 1.
    assert by_n[1]["win_rate"]["rm"] == 0.0 and by_n[3]["win_rate"]["rm"] == 1.0
    # judge at n=3: -1 < 0 (loss), 0 < 0.5 (loss).
    assert by_n[3]["win_rate"]["judge"] == 0.0
    with pytest.raises(ValueError):
        summary.best_of_n_summary(scores, human, picker="rm", judges=["rm"], ns=[4])


def test_flip_rates_and_aggregate_seeds():
    after = {"rm": [[1.0], [0.0], [2.0]]}
    before = {"rm": [[0.5], [1.0], [2.0]]}
    assert summary.flip_rates(after, before, ["rm"]) == {"rm": pytest.approx(1 / 3)}
    runs = [{"kl": 0.1, "avg_win_rate": 0.5}, {"kl": 0.3, "avg_win_rate": 0.7},
            {"kl": 0.2, "avg_win_rate": float("nan")}]
    agg = summary.aggregate_seeds(runs)
    half = 4.302652730 * statistics.stdev([0.1, 0.3, 0.2]) / math.sqrt(3)
    assert agg["kl"]["mean"] == pytest.approx(0.2) and agg["kl"]["n"] == 3
    assert agg["kl"]["half_width"] == pytest.approx(half)
    # The NaN seed is left out: two values, t with 1 degree of freedom.
    assert agg["avg_win_rate"]["n"] == 2
    assert agg["avg_win_rate"]["half_width"] == pytest.approx(
        12.706204736 * statistics.stdev([0.5, 0.7]) / math.sqrt(2))
    assert summary.format_ci(agg["kl"], 3) == f"0.200 ± {half:.3f}"
    assert summary.format_ci({"mean": 0.5, "half_width": float("nan")}, 2) == "0.50"


def test_method_table_has_a_row_per_method_with_intervals():
    m = {"setup": {"judges": ["vader", "afinn"], "train_reward": "vader"},
         "arms": [{"label": "lire", "loss": "lire", "params": {}, "pairing": "-"},
                  {"label": "dpo", "loss": "dpo", "params": {}, "pairing": "-"}],
         "base": {"flat": {"reward/vader": 0.0, "reward/afinn": 0.0, "avg_win_rate": 0.5},
                  "records": []}}
    m["runs"] = [{"label": "lire", "seed": s, "records": [],
                  "flat": {"reward/vader": v, "reward/afinn": 2 * v, "avg_win_rate": v}}
                 for s, v in enumerate([0.2, 0.4, 0.3])]
    m["runs"].append({"label": "dpo", "seed": 0, "records": [],
                      "flat": {"reward/vader": 0.1, "reward/afinn": 0.2, "avg_win_rate": 0.1}})
    agg = aggregate(m)
    lines = tables(m, agg)["main"].splitlines()
    assert lines[0].startswith("| method | seeds | vader mean (RM) | afinn mean (RM*)")
    rows = {line.split("|")[1].strip(): line for line in lines[2:]}
    assert set(rows) == {"base policy (no training)", "lire", "dpo"}
    half = 4.302652730 * statistics.stdev([0.2, 0.4, 0.3]) / math.sqrt(3)
    assert f"0.3000 ± {half:.4f}" in rows["lire"]
    assert "0.1000 |" in rows["dpo"] and "±" not in rows["dpo"]
    assert agg["lire"]["reward/afinn"]["mean"] == pytest.approx(0.6)


def _check_png(path):
    data = path.read_bytes()
    assert len(data) > 0 and data[:8] == PNG_MAGIC
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50


def test_every_plot_writes_a_readable_png(tmp_path):
    made = [
        plots.plot_frontier({"base": [{"x": 0.0, "y": 0.5, "temperature": 1.0, "xerr": 0.01},
                                      {"x": -0.2, "y": 0.45, "temperature": 0.0}],
                             "lire": [{"x": 1.2, "y": 0.8, "temperature": 1.0},
                                      {"x": float("nan"), "y": 0.7, "temperature": 0.7}]},
                            tmp_path / "frontier.png"),
        plots.plot_win_rate_vs_k({"Best-of-n": [(1, 0.4), (2, 0.55), (4, 0.7)]},
                                 tmp_path / "k.png", levels={"lire": 0.65},
                                 points={"dpo": (4, 0.6)}),
        plots.plot_grid([{"E": 1, "I": 1, "reward": -0.88}, {"E": 2, "I": 1, "reward": -0.82},
                         {"E": 1, "I": 2, "reward": -0.83}], tmp_path / "grid.png"),
        plots.plot_training_curves({"lire/s0": [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.8}],
                                    "dpo/s0": [{"step": 1, "loss": 0.7, "grad_norm": 2.0}]},
                                   tmp_path / "train.png", keys=("loss", "grad_norm")),
        plots.plot_reward_distribution([0.1, 0.2, -0.3], [0.5, 0.6, 0.1], tmp_path / "dist.png",
                                       title="before/after"),
        plots.plot_before_after([0.1, 0.2, -0.3], [0.5, 0.1, 0.1], tmp_path / "flips.png",
                                title="fig 8"),
    ]
    for path in made:
        _check_png(path)
    with pytest.raises(ValueError):
        plots.plot_before_after([0.1], [0.5, 0.1], tmp_path / "bad.png", title="x")


def test_grid_plot_and_table_from_paper_numbers(tmp_path):
    # Paper Table 6, columns E=1..3 on HH-4, rows I=1..3.
    table6 = {(1, 1): -0.977, (2, 1): -0.823, (3, 1): -0.759, (1, 2): -0.779, (2, 2): -0.771,
              (3, 2): -0.756, (1, 3): -0.774, (2, 3): -0.763, (3, 3): -0.731}
    records = [{"E": e, "I": i, "reward": v} for (e, i), v in table6.items()]
    _check_png(plots.plot_grid(records, tmp_path / "t6.png"))
    lines = grid_table(records).splitlines()
    assert lines[0] == "| Iterate | E=1 | E=2 | E=3 |"
    assert lines[2] == "| I=1 | -0.9770 | -0.8230 | -0.7590 |"
    assert lines[4] == "| I=3 | -0.7740 | -0.7630 | -0.7310 |"
    with pytest.raises(ValueError):
        plots.plot_grid([{"E": 1, "reward": 0.0}], tmp_path / "bad.png")
    with pytest.raises(ValueError):
        plots.plot_grid([], tmp_path / "bad.png")


def test_report_links_every_plot(tmp_path):
    a = plots.plot_win_rate_vs_k({"x": [(1, 0.5)]}, tmp_path / "plots" / "a.png")
    b = plots.plot_grid([{"E": 1, "I": 1, "reward": 0.0}], tmp_path / "plots" / "b.png")
    report = write_report(tmp_path, title="t", sections=[("s", "body")],
                          metrics={"value": 1.5}, plots=[("A", a), ("B", b)])
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text())
    assert links == ["plots/a.png", "plots/b.png"]
    for link in links:
        _check_png(tmp_path / link)


def test_prepare_output_refuses_non_empty_unless_overwrite(tmp_path):
    out = tmp_path / "eval"
    assert prepare_output(out, overwrite=False, owned=("report.md",)) == out.resolve()
    (out / "report.md").write_text("old")
    (out / "notes.txt").write_text("keep")
    with pytest.raises(RunDirError, match="--overwrite"):
        prepare_output(out, overwrite=False, owned=("report.md",))
    prepare_output(out, overwrite=True, owned=("report.md", "plots"))
    assert not (out / "report.md").exists() and (out / "notes.txt").read_text() == "keep"


def test_reference_answer_prefers_the_chosen_human_response():
    from lire_ray.pool import PoolRow

    def reference_answer(row):
        return row.human_reference

    hh = PoolRow(prompt_id="a", prompt="p", responses=["rejected", "chosen"],
                 sources=["human", "human"], policy_version=[-1, -1], preferred=1)
    assert reference_answer(hh) == "chosen"
    mixed = PoolRow(prompt_id="b", prompt="p", responses=["model", "human one"],
                    sources=["policy@e0", "human"], policy_version=[0, -1], preferred=0)
    assert reference_answer(mixed) == "human one"
    none = PoolRow(prompt_id="c", prompt="p", responses=["x"], sources=["dataset"],
                   policy_version=[-1])
    assert reference_answer(none) is None


def _result(scores_by_t: dict, human: dict, kl: tuple[float, float]):
    """An EvalResult built from hand-made scores (one record per temperature)."""
    from lire_ray.evaluator import EvalResult, Generation

    res = EvalResult(records=[])
    for t, scores in sorted(scores_by_t.items()):
        n = len(next(iter(scores.values()))[0])
        res.generations[t] = Generation(t, [["r"] * n] * 2, scores, [[0.0] * n] * 2,
                                        [[(1,)] * n] * 2)
        res.records.append({"temperature": t, "samples_per_prompt": n,
                            **summary.sample_summary(scores, human, ["rm", "judge"]),
                            "divergence": {"value": kl[0], "stderr": kl[1], "n": 2 * n,
                                           "excluded": 0},
                            "distinct": {"1": 0.5, "2": 0.25}})
    return res


def test_eval_report_without_ray(tmp_path):
    from lire_ray.studies.evaluate import write_eval_report

    human = {"rm": [0.0, 0.0], "judge": [1.0, 1.0]}
    base = _result({0.0: {"rm": [[1.0], [-1.0]], "judge": [[2.0], [0.0]]},
                    1.0: {"rm": [[1.0, 0.0], [0.5, -1.0]], "judge": [[2.0, 1.0], [0.0, 3.0]]}},
                   human, (0.0, 0.01))
    policy = _result({0.0: {"rm": [[2.0], [-2.0]], "judge": [[3.0], [0.0]]},
                      1.0: {"rm": [[2.0, 1.0], [1.0, 0.0]], "judge": [[3.0, 1.0], [1.0, 3.0]]}},
                     human, (0.7, 0.1))
    bon = {"temperature": 1.0, "picker": "rm", "judges": ["rm", "judge"],
           "results": summary.best_of_n_summary(base.generation(1.0).scores, human, picker="rm",
                                                judges=["rm", "judge"], ns=[1, 2])}
    meta = {"policy_path": str(tmp_path), "base_policy": "base", "reference": "base",
            "eval_data": "d", "prompts": 2, "train_reward": "rm", "judges": ["rm", "judge"]}
    report = write_eval_report(tmp_path / "out", meta=meta, base=base, policy=policy,
                               best_of_n=bon, human=human, wall_s=1.0)
    metrics = json_load(report.parent / "metrics.json")
    # Greedy: rm 2 vs 1 (up), -2 vs -1 (down) -> 1/2; judge 3 vs 2, 0 vs 0 -> 0.
    assert metrics["base"]["temperatures"][0]["win_rate_prompts"] == 2
    assert metrics["negative_flip_rate"] == {"rm": 0.5, "judge": 0.0}
    assert metrics["policy"]["kl"]["value"] == 0.7 and metrics["base"]["kl"]["value"] == 0.0
    assert metrics["human"]["mean"] == {"rm": 0.0, "judge": 1.0}
    assert [b["n"] for b in metrics["best_of_n"]["results"]] == [1, 2]
    text = report.read_text()
    assert "KL(policy || pi_ref) = 0.7000 ± 0.1000" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert set(links) == set(metrics["plots"]) == {
        "plots/reward_rm.png", "plots/reward_judge.png", "plots/frontier.png",
        "plots/best_of_n.png", "plots/before_after_rm.png", "plots/before_after_judge.png"}
    for link in links:
        _check_png(report.parent / link)


def json_load(path):
    import json

    return json.loads(path.read_text())


def test_compare_report_without_ray(tmp_path):
    from lire_ray.studies.compare import evaluate_json, flat_of
    from lire_ray.studies.compare_report import rerender, write_compare_report

    judges = ["rm", "judge"]
    human = {"rm": [0.0, 0.0], "judge": [1.0, 1.0]}
    base = _result({0.0: {"rm": [[1.0], [-1.0]], "judge": [[2.0], [0.0]]},
                    1.0: {"rm": [[1.0], [0.5]], "judge": [[2.0], [0.0]]}}, human, (0.0, 0.01))
    base_run = evaluate_json(base, 0.0)
    base_run["flat"] = flat_of({**base_run, "negative_flip_rate": {"rm": 0.0, "judge": 0.0}},
                               judges)
    runs = []
    for loss, seed, v in [("lire", 0, 0.3), ("lire", 1, 0.5), ("dpo", 0, 0.2)]:
        res = _result({0.0: {"rm": [[v], [v]], "judge": [[v], [v]]},
                       1.0: {"rm": [[v], [0.0]], "judge": [[v], [2.0]]}}, human, (v, 0.1))
        run = {"label": loss, "loss": loss, "seed": seed, **evaluate_json(res, 0.0),
               "negative_flip_rate": {"rm": 0.5, "judge": 0.5}, "final_loss": 1.0 - v,
               "history": [{"step": 1, "loss": 1.0 - v, "candidates": 2.0,
                            **({"onehot_share": v, "grad_weight": 0.01} if loss == "lire"
                               else {})}]}
        run["flat"] = flat_of(run, judges)
        runs.append(run)
    arms = [{"label": n, "loss": n, "params": {"beta": 0.1} if n == "dpo" else {},
             "pairing": "pairs: best_vs_rest" if n == "dpo" else "listwise", "value": None}
            for n in ("lire", "dpo")]
    m = {"study": {"kind": "compare"}, "arms": arms, "seeds": [0, 1], "base": base_run,
         "runs": runs, "timeline": [{"event": "training", "samplers_alive": 0}],
         "setup": {"candidates": "pool", "base_policy": "b", "train_reward": "rm",
                   "judges": judges, "train_data": "t", "eval_data": "e", "prompts": 2,
                   "pool": {"prompts": 2, "candidates": 4, "k_min": 2, "k_max": 2,
                            "k_rows": {"2": 2}, "sources": {"human": 4}},
                   "num_candidates": 4, "epochs": 1, "lr": 1e-3, "eval_temperature": 0.0},
         "best_of_n": {"temperature": 1.0, "picker": "rm", "results": summary.best_of_n_summary(
             base.generation(1.0).scores, human, picker="rm", judges=judges, ns=[1])},
         "wall_s": 2.0}
    report = write_compare_report(tmp_path, m)
    metrics = json_load(tmp_path / "metrics.json")
    half = 12.706204736 * statistics.stdev([0.3, 0.5]) / math.sqrt(2)
    assert metrics["table"]["lire"]["reward/rm"]["half_width"] == pytest.approx(half)
    assert metrics["table"]["dpo"]["kl"]["mean"] == pytest.approx(0.2)
    text = report.read_text()
    assert f"0.4000 ± {half:.4f}" in text
    assert "samplers alive during training: 0" in text and "beta=0.1" in text
    # LIRE gradient health: one-hot shares 0.3 and 0.5 over the two seeds; DPO has none.
    health = text.split("## LIRE gradient health")[1].split("\n## ")[0]
    assert f"| lire | 2 | 1 | 0.400 ± {half:.3f} |" in health and "| dpo" not in health
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert set(links) == set(metrics["plots"]) == {
        "plots/frontier.png", "plots/win_rate_vs_k_rm.png", "plots/win_rate_vs_k_judge.png",
        "plots/training.png", "plots/reward_lire.png", "plots/reward_dpo.png",
        "plots/before_after_lire_judge.png", "plots/before_after_dpo_judge.png"}
    for link in links:
        _check_png(tmp_path / link)
    for link in links:
        (tmp_path / link).unlink()
    # Everything is redrawn from metrics.json alone.
    assert rerender(tmp_path).read_text() == text
    assert all((tmp_path / link).is_file() for link in links)
