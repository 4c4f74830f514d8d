"""The pure parts of benchmarks/views.py: its 95% t-intervals against hand calculations, its
per-cell summaries, and its view sets resolved against every benchmarked env's layout (a wrong
block or feature name there would only surface hours into a grid)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from kdx.errors import KdxError

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "views.py"
_spec = importlib.util.spec_from_file_location("benchmark_views", SCRIPT)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_t_interval_matches_hand_calculation() -> None:
    # n = 3: mean 0.9, sample sd 0.1, t(0.975, 2) = 4.303 -> 4.303 * 0.1 / sqrt(3) = 0.24843
    mean, half = bench.t_interval([0.8, 0.9, 1.0])
    assert mean == pytest.approx(0.9)
    assert half == pytest.approx(0.248434, abs=1e-6)
    # n = 2: |a - b| / 2 * 12.706 (sd = |a - b| / sqrt 2, / sqrt 2 again)
    mean, half = bench.t_interval([0.90, 0.95])
    assert (mean, half) == pytest.approx((0.925, 0.025 * 12.706))
    assert math.isnan(bench.t_interval([0.7])[1])
    with pytest.raises(ValueError):
        bench.t_interval([])


@pytest.mark.parametrize(("df", "table"), [(1, 12.706), (4, 2.776), (30, 2.042), (31, 2.040), (40, 2.021),
                                           (60, 2.000), (120, 1.980)])
def test_t_quantile_against_tables(df: int, table: float) -> None:
    assert bench.t975(df) == pytest.approx(table, abs=1.5e-3)


def _run(retention: float, seed: int, macs: float = 700.0) -> dict:
    return {"seed": seed, "retention": retention, "student_macs": macs, "min_mac_ratio": 90.0,
            "input_width": {"agent_0": 18}, "teacher": 0.8}


def test_summary_and_paired_difference() -> None:
    env = "mpe/simple_spread"
    runs = {bench.run_key(env, "local", "sight4", "full", 1): _run(0.9, 1),
            bench.run_key(env, "local", "sight4", "full", 2): _run(0.8, 2),
            bench.run_key(env, "local", "sight4", "no_struct", 1): _run(0.85, 1),
            bench.run_key(env, "local", "sight4", "no_struct", 2): _run(0.80, 2),
            bench.run_key(env, "local", "full", "full", 1): _run(1.0, 1, 736.0)}
    rows = bench.summarise(runs)
    assert [(r["view"], r["loss"]) for r in rows] == [("full", "full"), ("sight4", "full"), ("sight4", "no_struct")]
    full = rows[1]
    assert full["seeds"] == [1, 2] and full["retention"] == pytest.approx(0.85)
    assert full["retention_ci95"] == pytest.approx(0.05 * 12.706)
    assert full["student_macs"] == 700.0 and full["student_macs_ci95"] == 0.0
    assert math.isnan(rows[0]["retention_ci95"])  # one seed: no interval
    (diff,) = bench.paired_differences(runs)
    # seed 1: 0.9 - 0.85 = 0.05, seed 2: 0.8 - 0.8 = 0 -> mean 0.025, half-width 0.025 * 12.706
    assert (diff["view"], diff["n"]) == ("sight4", 2)
    assert (diff["mean"], diff["ci95"]) == pytest.approx((0.025, 0.025 * 12.706))


def test_every_env_defines_every_view() -> None:
    assert {env: tuple(views) for env, views in bench.VIEWS.items()} == {env: bench.VIEW_NAMES for env in bench.ENVS}


@pytest.mark.parametrize("env", bench.ENVS)
def test_views_resolve_against_the_env_layout(env: str) -> None:
    resolved = {view: bench.resolve_view(env, view) for view in bench.VIEW_NAMES}
    full_widths = resolved["full"].widths()
    assert not resolved["full"].active
    for view, sv in resolved.items():
        assert set(sv.views) == set(full_widths), view  # one view per agent
        if view != "full":
            assert any(v.ops for v in sv.views.values()), view
    # dropping the allies narrows every student's input; the others keep the width
    assert all(w < full_widths[a] for a, w in resolved["no_ally"].widths().items())
    assert resolved["sight4"].widths() == full_widths
    # heterogeneous: agents differ
    assert len({tuple(v.text) for v in resolved["hetero"].views.values()}) >= 2


def test_a_misspelt_feature_in_a_view_set_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    env = "mpe/simple_spread"
    monkeypatch.setitem(bench.VIEWS, env, {**bench.VIEWS[env], "no_ally": ("agents=-ally.*",)})  # skirmish's name
    with pytest.raises(KdxError, match="matches no observation feature; blocks: self, landmark"):
        bench.resolve_view(env, "no_ally")


def test_merge_results_unions_parts_and_refuses_conflicts() -> None:
    env = "skirmish/8m"
    local = {"teachers": {bench.cell_key(env, "local", "", ""): {"run": "a"}},
             "runs": {bench.run_key(env, "local", "sight4", "full", 1): _run(0.9, 1)}, "cpu_count": 2}
    central = {"teachers": {bench.cell_key(env, "centralised", "", ""): {"run": "b"}},
               "runs": {bench.run_key(env, "centralised", "full", "full", 1): _run(0.8, 1)}}
    merged = bench.merge_results([local, central, local])  # a part given twice is no conflict
    assert set(merged["teachers"]) == {bench.cell_key(env, k, "", "") for k in ("local", "centralised")}
    assert len(merged["runs"]) == 2 and merged["cpu_count"] == 2
    clash = {"teachers": {}, "runs": {bench.run_key(env, "local", "sight4", "full", 1): _run(0.5, 1)}}
    with pytest.raises(ValueError, match="differs between the merged files"):
        bench.merge_results([local, clash])


def test_teacher_curve_samples_the_metrics_and_keeps_the_last(tmp_path: Path) -> None:
    metrics = bench.RunLayout(tmp_path).teacher.metrics
    metrics.parent.mkdir(parents=True)
    lines = [{"env_steps": 100 * i, "time_s": float(i), "win_rate": i / 10, "episode_return": i, "lr": 1.0}
             for i in range(1, 11)]
    metrics.write_text("".join(json.dumps(m) + "\n" for m in lines))
    curve = bench.teacher_curve(tmp_path, points=3)  # every 3rd line (3, 6, 9), then the last (10)
    assert [p["env_steps"] for p in curve] == [300, 600, 900, 1000]
    assert curve[-1] == {"env_steps": 1000, "time_s": 10.0, "win_rate": 1.0, "episode_return": 10}
    assert [p["env_steps"] for p in bench.teacher_curve(tmp_path, points=30)] == [100 * i for i in range(1, 11)]
