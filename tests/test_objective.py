"""Objectives (C on params, FLOPs or latency), the reward cache across them, flags and Pareto fronts."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from _tiny import tiny
from test_reward import _student as _net  # conv, batch norm, pool, linear: width w

import n2n_fx.reward.evaluator as evaluator_mod
from n2n_fx.cli import main
from n2n_fx.data import load_splits
from n2n_fx.distill import DistillConfig, LogitCache
from n2n_fx.errors import ConfigError
from n2n_fx.report import heavier_lines
from n2n_fx.report.pareto import heavier_than_teacher, pareto_front, student_points, write_pareto
from n2n_fx.reward import (
    Objective,
    RewardCache,
    RewardEvaluator,
    RewardRecord,
    count_flops,
    count_params,
    latency_ms,
)
from n2n_fx.rundir import RunDir
from n2n_fx.search import SearchConfig, run_compress
from n2n_fx.storage import atomic_torch_save

# -- the reward per objective --------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup():
    splits = load_splits("synthetic", num_samples=240, image_size=12, seed=0)
    teacher = _net(16, 0).eval()
    return splits, teacher, LogitCache.build(teacher, splits.train_plain)


def _evaluator(setup, objective: Objective | None = None, **kw) -> RewardEvaluator:
    splits, teacher, logits = setup
    return RewardEvaluator(
        splits.train_plain,
        splits.val,
        teacher_accuracy=0.8,
        teacher_params=count_params(teacher),
        input_size=(1, 12, 12),
        logit_cache=logits,
        config=DistillConfig(steps=2),
        objective=objective,
        **kw,
    )


def test_reward_per_objective_against_hand_computed_values(setup):
    # student: accuracy 0.6 of the teacher's 0.8 (A/A_t = 0.75); teacher 1000 params, 1000 FLOPs, 2 ms
    rec = RewardRecord(
        reward=0.0,
        raw_reward=0.0,
        accuracy=0.6,
        params=250,
        flops=600,
        compression=0.75,
        latency_ms=3.0,
    )
    teacher = {"params": 1000, "flops": 1000, "latency_ms": 2.0}
    expected = {
        "params": (0.75, 0.75 * 1.25 * 0.75),  # C = 1 - 250/1000
        "flops": (0.4, 0.4 * 1.6 * 0.75),  # C = 1 - 600/1000
        "latency": (-0.5, -0.5 * 2.5 * 0.75),  # slower than the teacher: C < 0, negative reward
    }
    for name, (c, r) in expected.items():
        ev = _evaluator(setup, Objective.of(name, teacher))
        scored = ev.reward(rec, step=0)
        assert scored.objective_compression == pytest.approx(c)
        assert scored.raw_reward == pytest.approx(r) and scored.reward == pytest.approx(r)
        assert scored.compression == 0.75  # the parameter compression is recorded whatever the objective
    much_slower = RewardRecord(**{**rec.to_dict(), "latency_ms": 5.0, "violations": ()})
    assert _evaluator(setup, Objective.of("latency", teacher)).reward(much_slower, 0).reward == -1.0  # floored
    # default objective: the paper's, parameters of the teacher the evaluator was given
    assert _evaluator(setup).objective == Objective("params", count_params(setup[1]))


def test_objective_rejects_bad_names_and_missing_measurements():
    with pytest.raises(ConfigError, match="objective 'speed'"):
        Objective.of("speed", {"params": 1})
    with pytest.raises(ConfigError, match="latency_ms"):
        Objective.of("latency", {"params": 1, "flops": 2})
    with pytest.raises(ConfigError, match="positive"):
        Objective("flops", 0.0)
    with pytest.raises(ConfigError, match="latency_ms"):
        Objective("latency", 1.0).compression({"params": 3.0})
    with pytest.raises(ConfigError, match="objective"):
        SearchConfig(objective="speed")


def test_reward_cache_serves_every_objective(setup, tmp_path, monkeypatch):
    path = tmp_path / "rewards.json"
    _, teacher, _ = setup
    t = {"params": count_params(teacher), "flops": count_flops(teacher, (1, 12, 12)), "latency_ms": 1.0}
    first = _evaluator(setup, Objective.of("params", t), cache=RewardCache(path), measure_latency=True)(_net(4, 0))
    assert not first.cache_hit and first.latency_ms > 0 and first.latency_device == "cpu"
    assert first.reward == pytest.approx(first.compression * (2 - first.compression) * first.accuracy / 0.8)
    # another objective on the same cache file: nothing is trained or timed again, only the reward changes
    monkeypatch.setattr(evaluator_mod, "distill", lambda *a, **k: pytest.fail("retrained a cached architecture"))
    monkeypatch.setattr(evaluator_mod, "latency_ms", lambda *a, **k: pytest.fail("timed a cached architecture"))
    for name in ("flops", "latency"):
        ev = _evaluator(setup, Objective.of(name, t), cache=RewardCache(path), measure_latency=True)
        again = ev(_net(4, 1))  # same architecture, other weights
        q = {"flops": again.flops, "latency": again.latency_ms}[name]
        c = 1 - q / t[{"flops": "flops", "latency": "latency_ms"}[name]]
        assert again.cache_hit and again.accuracy == first.accuracy and again.latency_ms == first.latency_ms
        assert again.objective_compression == pytest.approx(c)
        assert again.raw_reward == pytest.approx(max(-1.0, c * (2 - c) * first.accuracy / 0.8))
    stored = json.loads(path.read_text())["entries"][first.arch]
    assert stored["accuracy"] == first.accuracy and stored["latency_ms"] == first.latency_ms


def test_latency_objective_measures_latency_and_remeasures_on_another_device(setup):
    ev = _evaluator(setup, Objective("latency", 1.0))
    r = ev(_net(4, 0))
    assert r.latency_ms > 0 and r.latency_device == "cpu"
    assert r.objective_compression == pytest.approx(1 - r.latency_ms)
    elsewhere = RewardRecord(**{**r.to_dict(), "latency_device": "cuda", "violations": ()})
    again = ev._fill_measurements(elsewhere, _net(4, 0))
    assert again.latency_device == "cpu"  # a latency taken on another device is not reused


def test_timing_a_student_leaves_the_random_stream_alone():
    # latency is measured for every student: it must not change which students a seed samples
    model = _net(4, 0)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    latency_ms(model, (1, 12, 12), repeats=2)
    assert torch.equal(torch.rand(3), expected)


# -- Pareto fronts and flags ----------------------------------------------------------------------------


def test_pareto_front_on_a_hand_made_point_set():
    pts = [
        {"accuracy": 0.90, "params": 100, "flops": 900},  # 0: front on params
        {"accuracy": 0.95, "params": 300, "flops": 300},  # 1: most accurate: front on both
        {"accuracy": 0.85, "params": 200, "flops": 200},  # 2: dominated by 0 on params; front on flops
        {"accuracy": 0.80, "params": 50, "flops": 1000},  # 3: cheapest in params: front on params
        {"accuracy": 0.90, "params": 100, "flops": 900},  # 4: equal to 0: on the front with it
        {"accuracy": 0.70, "params": 400, "flops": 100},  # 5: cheapest in flops
        {"accuracy": 0.94, "params": 300, "flops": 300},  # 6: as costly as 1, less accurate: dominated
        {"accuracy": None, "params": 1, "flops": 1},  # 7: no accuracy: never on a front, dominates nothing
        {"accuracy": 0.60, "params": 10},  # 8: cheapest in params; no FLOPs: off the FLOPs and joint fronts
    ]
    assert pareto_front(pts, ["params"]) == [True, True, False, True, True, False, False, False, True]
    assert pareto_front(pts, ["flops"]) == [False, True, True, False, False, True, False, False, False]
    assert pareto_front(pts, ["params", "flops"]) == [True, True, True, True, True, True, False, False, False]
    assert pareto_front([], ["params"]) == []


def test_heavier_students_are_flagged():
    teacher = {"flops": 1000, "latency_ms": 2.0}
    assert heavier_than_teacher({"flops": 2600, "latency_ms": 3.0}, teacher) == [
        "FLOPs 2.60x the teacher",
        "latency 1.50x the teacher",
    ]
    assert heavier_than_teacher({"flops": 1000, "latency_ms": 1.0}, teacher) == []  # as heavy is not heavier
    assert heavier_than_teacher({"flops": 10, "latency_ms": None}, teacher) == []  # not measured: no flag


def test_report_flags_final_students_heavier_than_the_teacher():
    summary = {
        "teacher": {"flops": 1000, "latency_ms": 2.0},
        "stage1": {"flops": 300, "latency_ms": 1.0},
        "stage2": {"flops": 2600, "latency_ms": 3.0},
    }
    assert heavier_lines(summary) == ["the stage 2 student: FLOPs 2.60x the teacher, latency 1.50x the teacher"]
    assert heavier_lines({"teacher": summary["teacher"], "stage1": summary["stage1"]}) == []


def _row(it: int, acc, params: int, flops: int, lat: float | None, arch: str, **kw):
    return {
        "stage": "removal",
        "iteration": it,
        "rollout": 0,
        "actions": [f"l{it}"],
        "accuracy": acc,
        "params": params,
        "flops": flops,
        "latency_ms": lat,
        "reward": 0.5,
        "degenerate": None,
        "arch": arch,
        **kw,
    }


@pytest.fixture
def hand_made_run(tmp_path):
    run = RunDir.create(tmp_path / "run", {"model": "m"})
    run.write_json("config.json", {"model": "m", "dataset": "d", "objective": "flops"})
    teacher = {"val_accuracy": 0.9, "reward_accuracy": 0.9, "params": 1000, "flops": 1000, "latency_ms": 2.0}
    best = {"reward": 0.5, "record": {"arch": "b"}, "actions": {}, "state_dict": None}
    atomic_torch_save(
        {"teacher": {**teacher, "latency_device": "cpu"}, "best": {"removal": best}}, run.file("checkpoint.pt")
    )
    rows = [
        _row(0, 0.80, 300, 2600, 1.0, "a"),  # more FLOPs than the teacher (pooling removed)
        _row(1, 0.85, 200, 400, 3.0, "b"),  # slower than the teacher
        _row(2, 0.85, 200, 400, 3.0, "b", cache_hit=True),  # the same student again: one point
        _row(3, None, 100, 100, None, None, degenerate="diverged"),  # degenerate: no point
        _row(4, 0.70, 100, 100, 0.5, "c"),
    ]
    for r in rows:
        run.append_history(r)
    run.release()
    return run.path


def test_pareto_report_of_a_run_flags_and_marks_fronts(hand_made_run, capsys):
    assert main(["report", str(hand_made_run), "--pareto"]) == 0
    out = capsys.readouterr().out
    assert "1 student(s) have more FLOPs than the teacher, 1 are slower" in out
    data = json.loads((hand_made_run / "pareto.json").read_text())
    pts = {p["arch"]: p for p in data["students"]}
    assert sorted(pts) == ["a", "b", "c"] and data["teacher"]["flops"] == 1000
    assert pts["a"]["flags"] == ["FLOPs 2.60x the teacher"] and not pts["a"]["front_params"]
    assert pts["b"]["flags"] == ["latency 1.50x the teacher"] and pts["b"]["chosen"] == "stage 1"
    assert pts["b"]["front_params"] and pts["b"]["front_flops"] and pts["b"]["front_latency_ms"]  # most accurate
    assert pts["a"]["front_latency_ms"] and not pts["a"]["front_flops"]
    assert pts["c"]["flags"] == [] and pts["c"]["front_latency_ms"] and pts["c"]["front_flops"]
    with open(hand_made_run / "pareto.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["arch"] for r in rows] == ["a", "b", "c"] and rows[0]["flags"] == "FLOPs 2.60x the teacher"
    assert (hand_made_run / "pareto.png").read_bytes()[:4] == b"\x89PNG"  # matplotlib is a dependency
    assert "![pareto](pareto.png)" in out


def test_pareto_report_without_matplotlib_says_how_to_get_the_plot(hand_made_run, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_mpl(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    report = write_pareto(RunDir.open(hand_made_run))
    assert report.plot_hint and "pip install matplotlib" in report.plot_hint and "--pareto" in report.plot_hint
    assert report.plot_hint in report.markdown and len(report.points) == 3


def test_pareto_report_needs_a_checkpoint(tmp_path, capsys):
    run = RunDir.create(tmp_path / "new", {"model": "m"})
    run.release()
    assert main(["report", str(run.path), "--pareto"]) == 2
    assert "no checkpoint.pt" in capsys.readouterr().err


def test_student_points_of_old_history_rows_without_arch():
    rows = [_row(0, 0.8, 10, 10, None, None), _row(0, 0.8, 10, 10, None, None), _row(1, 0.7, 5, 5, None, None)]
    assert len(student_points(rows)) == 2  # told apart by their actions


# -- a search with the FLOPs objective ---------------------------------------------------------------


def test_search_with_flops_objective_records_every_quantity(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("N2N_FX_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "run"
    cfg = SearchConfig(**tiny(objective="flops", shrink_iterations=1))
    result = run_compress(cfg, d, quiet=True)
    ck = torch.load(d / "checkpoint.pt", weights_only=False)
    teacher = ck["teacher"]
    assert teacher["latency_ms"] > 0 and teacher["latency_device"] == "cpu"
    ok = [r for r in result.history if not r["degenerate"]]
    assert ok
    for r in ok:
        assert r["params"] > 0 and r["flops"] > 0 and r["latency_ms"] > 0 and r["arch"]
        assert r["objective_compression"] == pytest.approx(1 - r["flops"] / teacher["flops"])
        assert r["compression"] == pytest.approx(1 - r["params"] / teacher["params"])
    for name in ("pareto.md", "pareto.csv", "pareto.json"):
        assert (d / name).is_file()
    assert "pareto.md" in (d / "report.md").read_text()
    cached = json.loads((d / "reward_cache.json").read_text())["entries"]
    assert all(e["latency_ms"] is not None for e in cached.values() if e["degenerate"] is None)
    assert main(["compress", "--objective", "speed", "--run-dir", str(tmp_path / "bad")]) == 2
    assert "--objective: invalid choice: 'speed'" in capsys.readouterr().err and not (tmp_path / "bad").exists()
