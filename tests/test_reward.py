"""Reward formula, constraints and penalties, measurements, reward cache and evaluator (n2n_fx.reward)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import n2n_fx.reward.evaluator as evaluator_mod
from n2n_fx.data import load_splits
from n2n_fx.degenerate import Degenerate, Reason
from n2n_fx.distill import DistillConfig, LogitCache
from n2n_fx.errors import CheckpointError, ConfigError
from n2n_fx.reward import (
    Constraints,
    Penalty,
    RewardCache,
    RewardEvaluator,
    RewardRecord,
    arch_hash,
    compression,
    count_flops,
    count_params,
    latency_ms,
    measure,
    n2n_reward,
    peak_activation_bytes,
)

# -- formula ---------------------------------------------------------------------------------------


def test_appendix_11_1_cases():
    # case 1: relative accuracy 1, C = 0.25 -> 0.25 * 1.75 = 0.4375 (naive A*C would be 0.25)
    assert n2n_reward(0.8, 0.8, 0.25) == pytest.approx(0.4375)
    # case 2: relative accuracy 0.25, C = 1 -> 1 * 1 * 0.25 = 0.25 (naive also 0.25)
    assert n2n_reward(0.2, 0.8, 1.0) == pytest.approx(0.25)


def test_reward_is_monotone_and_compression_is_against_the_teacher():
    cs = [i / 10 for i in range(11)]
    assert all(n2n_reward(0.5, 0.9, a) < n2n_reward(0.5, 0.9, b) for a, b in zip(cs[:-1], cs[1:], strict=True))
    assert n2n_reward(0.4, 0.9, 0.5) < n2n_reward(0.6, 0.9, 0.5)
    assert compression(250, 1000) == pytest.approx(0.75)
    assert n2n_reward(0.9, 0.9, compression(2000, 1000)) == -1.0  # twice the teacher: floored
    with pytest.raises(ConfigError):
        compression(10, 0)
    with pytest.raises(ConfigError):
        n2n_reward(0.5, 0.0, 0.5)


def test_above_chance_reward_counts_only_what_a_student_knows_beyond_guessing():
    # ten balanced classes: chance 0.1. A guessing student is worth nothing, however small;
    # under the paper's ratio it earns 0.1 / 0.9 of the compression term
    assert n2n_reward(0.1, 0.9, 0.99, chance=0.1) == 0.0
    assert n2n_reward(0.05, 0.9, 0.99, chance=0.1) == 0.0  # below chance is no worse than chance
    assert n2n_reward(0.1, 0.9, 0.99) == pytest.approx(0.99 * 1.01 * 0.1 / 0.9)
    # hand-computed: C = 0.5 -> R_c 0.75; R_a = (0.5 - 0.1) / (0.9 - 0.1) = 0.5
    assert n2n_reward(0.5, 0.9, 0.5, chance=0.1) == pytest.approx(0.375)
    assert n2n_reward(0.9, 0.9, 0.5, chance=0.1) == pytest.approx(0.75)  # teacher-level: R = R_c
    # the ordering can flip: a 2x student at 0.25 loses to a near-guessing 20x one at 0.2 under the
    # ratio (0.208 < 0.222), and beats it above chance (0.141 > 0.125)
    assert n2n_reward(0.25, 0.9, 0.5) < n2n_reward(0.2, 0.9, 0.95)
    assert n2n_reward(0.25, 0.9, 0.5, chance=0.1) > n2n_reward(0.2, 0.9, 0.95, chance=0.1)
    with pytest.raises(ConfigError, match="not above chance"):
        n2n_reward(0.5, 0.1, 0.5, chance=0.1)


# -- constraints and penalty -----------------------------------------------------------------


def test_constraints_from_limits_and_general_rows():
    c = Constraints.from_limits(
        max_params=1e6,
        max_flops=5e8,
        rows=[({"flops": 1.0, "params": -100.0}, 0.0)],  # flops <= 100 * params
    )
    assert c.quantities == {"params", "flops"}
    assert c.satisfied({"params": 5e5, "flops": 4e7})
    assert c.violations({"params": 1e7, "flops": 6e8}) == ["params <= 1e+06", "flops <= 5e+08"]
    assert c.violations({"params": 1e3, "flops": 2e5}) == ["-100*params + flops <= 0"]
    m = Constraints.from_matrix([[0, 0, 1, 0], [0, 0, 0, 2]], [10.0, 1e6])
    assert m.quantities == {"latency_ms", "activation_bytes"}
    assert m.violations({"latency_ms": 11.0, "activation_bytes": 4e5}) == ["latency_ms <= 10"]
    with pytest.raises(ConfigError):
        m.violations({"latency_ms": 1.0})  # activation_bytes was not measured


@pytest.mark.parametrize(
    "kw",
    [
        dict(max_params=0),
        dict(max_params=-5),
        dict(max_latency_ms=float("nan")),
        dict(rows=[({"params": 1.0, "flops": 2.0}, -1.0)]),  # positive quantities can't sum below 0
        dict(rows=[({"params": 0.0}, 1.0)]),  # empty row
        dict(rows=[({"watts": 1.0}, 1.0)]),  # unknown quantity
    ],
)
def test_impossible_or_malformed_constraints_raise(kw):
    with pytest.raises(ConfigError):
        Constraints.from_limits(**kw)


def test_annealed_penalty_values():
    lin = Penalty("anneal", "linear", horizon=10)
    r = 0.5
    assert lin.apply(r, satisfied=False, t=0) == pytest.approx(0.5)  # ε_0 = 1: no penalty yet
    assert lin.apply(r, satisfied=False, t=4) == pytest.approx(0.6 * 1.5 - 1)  # -0.1
    assert lin.apply(r, satisfied=False, t=10) == pytest.approx(-1.0)
    assert lin.apply(r, satisfied=False, t=50) == pytest.approx(-1.0)
    assert lin.apply(r, satisfied=True, t=50) == r
    exp = Penalty("anneal", "exponential", horizon=10, final=0.01)
    assert exp.epsilon(0) == 1.0 and exp.epsilon(10) == pytest.approx(0.01)
    assert exp.epsilon(5) == pytest.approx(0.1)
    assert exp.apply(r, satisfied=False, t=5) == pytest.approx(0.1 * 1.5 - 1)
    eps = [exp.epsilon(t) for t in range(30)]
    assert all(a > b for a, b in zip(eps[:-1], eps[1:], strict=True))
    assert Penalty("hard").apply(r, satisfied=False, t=0) == -1.0
    assert Penalty("none").apply(r, satisfied=False, t=99) == r
    with pytest.raises(ConfigError):
        Penalty("soft")


# -- measurements ------------------------------------------------------------------------------


def test_flops_are_twice_the_macs_of_conv_and_linear():
    assert count_flops(nn.Conv2d(3, 8, 3, padding=1), (3, 4, 4)) == 2 * 3 * 3 * 3 * 8 * 4 * 4
    assert count_flops(nn.Conv2d(8, 8, 3, stride=2, groups=4), (8, 9, 9)) == 2 * 9 * 2 * 8 * 4 * 4
    assert count_flops(nn.Linear(10, 5), (10,)) == 2 * 10 * 5
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    assert count_flops(net, torch.randn(5, 1, 8, 8)) == 2 * 9 * 4 * 36 + 2 * 144 * 10
    assert count_params(net) == (4 * 9 + 4) + (144 * 10 + 10)
    frozen = nn.Linear(3, 3)
    frozen.bias.requires_grad_(False)
    assert count_params(frozen) == 9  # trainable only


def test_measuring_from_an_input_size_leaves_the_global_rng_alone():
    # a seeded search measures students between its draws: the measurement must not shift them
    conv = nn.Conv2d(3, 8, 3)
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    count_flops(conv, (3, 8, 8))
    peak_activation_bytes(conv, (3, 8, 8))
    assert torch.equal(torch.rand(4), expected)


def test_peak_activation_counts_live_tensors_and_aliases_once():
    inplace = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 2))
    copying = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    # x (16 B) + hidden (32 B) alive at the first linear; in-place ReLU adds nothing
    assert peak_activation_bytes(inplace, (4,)) == 16 + 32
    # the copying ReLU holds its input (32 B) and output (32 B) at once
    assert peak_activation_bytes(copying, (4,)) == 32 + 32
    m = measure(copying, (4,), latency=True, activation=True, latency_repeats=3)
    assert m.params == 58 and m.flops == 2 * (32 + 16) and m.activation_bytes == 64 and m.latency_ms > 0
    assert latency_ms(copying, (4,), repeats=3) > 0


# -- reward cache -------------------------------------------------------------------------------


def test_arch_hash_same_for_independent_builds_and_different_for_other_archs():
    from n2n_fx.teacher.trace import trace

    torch.manual_seed(0)
    a = trace("vgg_tiny", input_size=(1, 16, 16))
    torch.manual_seed(1)
    b = trace("vgg_tiny", input_size=(1, 16, 16))
    assert not torch.equal(a.get_submodule("features.0").weight, b.get_submodule("features.0").weight)
    b.eval()
    assert arch_hash(a) == arch_hash(b)
    other = trace("vgg_tiny", input_size=(1, 16, 16), num_classes=5)
    assert arch_hash(a) != arch_hash(other)
    wider = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU())
    assert arch_hash(wider) != arch_hash(nn.Sequential(nn.Conv2d(1, 8, 5), nn.ReLU()))
    assert arch_hash(wider) != arch_hash(nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(inplace=True)))


def test_reward_cache_persists_and_guards_its_file(tmp_path):
    path = tmp_path / "rewards.json"
    cache = RewardCache(path, context={"teacher": "a"})
    cache.put("k1", {"reward": 0.25, "violations": ("x",)})
    again = RewardCache(path, context={"teacher": "a"})
    assert "k1" in again and again.get("k1") == {"reward": 0.25, "violations": ["x"]}
    assert again.get("k2") is None and (again.hits, again.misses) == (1, 1)
    assert json.loads(path.read_text())["entries"]["k1"]["reward"] == 0.25
    with pytest.raises(ConfigError):
        RewardCache(path, context={"teacher": "b"})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CheckpointError):
        RewardCache(bad)


# -- evaluator ----------------------------------------------------------------------------------


def _student(width: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(width * 36, 10),
    )


@pytest.fixture(scope="module")
def setup():
    splits = load_splits("synthetic", num_samples=300, image_size=12, seed=0)
    teacher = _student(16, 0).eval()
    cache = LogitCache.build(teacher, splits.train_plain)
    return splits, teacher, cache


def _evaluator(setup, **kw) -> RewardEvaluator:
    splits, teacher, cache = setup
    base = dict(
        teacher_accuracy=0.5,
        teacher_params=count_params(teacher),
        input_size=(1, 12, 12),
        logit_cache=cache,
        config=DistillConfig(epochs=1),
    )
    base.update(kw)
    return RewardEvaluator(splits.train_plain, splits.val, **base)


def test_evaluator_scores_and_caches_by_architecture(setup, monkeypatch):
    calls = []
    real = evaluator_mod.distill
    monkeypatch.setattr(evaluator_mod, "distill", lambda *a, **k: calls.append(1) or real(*a, **k))
    ev = _evaluator(setup)
    teacher_params = count_params(setup[1])
    first = ev(_student(4, 1), step=0)
    assert not first.is_degenerate and not first.cache_hit and len(calls) == 1
    assert 0.0 <= first.accuracy <= 1.0
    assert first.params == count_params(_student(4, 0))
    assert first.compression == pytest.approx(1 - first.params / teacher_params)
    c = first.compression
    assert first.reward == pytest.approx(c * (2 - c) * first.accuracy / 0.5)
    assert first.flops == 2 * 9 * 4 * 144 + 2 * 4 * 36 * 10
    again = ev(_student(4, 2), step=3)  # same architecture, other weights
    assert again.cache_hit and len(calls) == 1 and again.reward == first.reward and again.step == 3
    other = ev(_student(6, 1))
    assert not other.cache_hit and len(calls) == 2


def test_evaluator_counts_accuracy_above_the_chance_it_is_given(setup):
    """The evaluator's reward reads accuracy above ``chance_accuracy``; a chance at or above the
    teacher's accuracy is refused in one line saying what to do."""
    paper, above = _evaluator(setup), _evaluator(setup, chance_accuracy=0.1)
    a, b = paper(_student(4, 1)), above(_student(4, 1))
    assert a.accuracy == b.accuracy and a.compression == b.compression
    c = b.compression
    assert b.reward == pytest.approx(c * (2 - c) * max(0.0, b.accuracy - 0.1) / 0.4)
    assert a.reward == pytest.approx(c * (2 - c) * a.accuracy / 0.5)
    with pytest.raises(ConfigError, match="not above chance.*reward-accuracy ratio"):
        _evaluator(setup, chance_accuracy=0.5)


def test_evaluator_degenerate_students(setup):
    ev = _evaluator(setup)
    assert ev("empty: every layer removed").reward == -1.0  # the text form is read back
    assert ev("empty: every layer removed").degenerate == Degenerate(Reason.EMPTY, "every layer removed")
    diverging = _evaluator(setup, config=DistillConfig(epochs=1, optimizer="sgd", lr=1e6))
    r = diverging(_student(4, 0))
    assert r.reward == -1.0 and r.degenerate.reason is Reason.DIVERGED and r.accuracy is None
    empty = ev(nn.Sequential(nn.Flatten()))
    assert empty.reward == -1.0 and empty.degenerate.reason is Reason.NO_TRAINABLE
    broken = ev(nn.Sequential(nn.Flatten(), nn.Linear(5, 10)))
    assert broken.reward == -1.0 and broken.degenerate.reason is Reason.FAILED and broken.degenerate.detail
    with pytest.raises(ValueError, match="not a degenerate reason"):
        ev("exploded: a reason nobody defined")
    with pytest.raises(TypeError):
        ev(None)


def test_evaluator_accepts_rewrite_degenerate_marker(setup):
    from n2n_fx import rewrite

    marker = rewrite.Degenerate(rewrite.Reason.EMPTY, "all layers removed")
    r = _evaluator(setup)(marker)
    assert r.reward == -1.0 and r.degenerate is marker


def test_a_degenerate_record_round_trips_through_its_file_form(setup):
    diverging = _evaluator(setup, config=DistillConfig(epochs=1, optimizer="sgd", lr=1e6))
    r = diverging(_student(4, 0))
    d = json.loads(json.dumps(r.to_dict()))  # as the reward cache stores it
    assert d["degenerate"] == str(r.degenerate) and d["degenerate"].startswith("diverged: ")
    assert RewardRecord.from_dict(d) == r
    old = RewardRecord.from_dict({**d, "degenerate": "diverged"})  # written before details were given
    assert old.degenerate == Degenerate(Reason.DIVERGED)


def test_evaluator_constraint_penalty_anneals_on_cache_hits(setup):
    ev = _evaluator(
        setup,
        constraints=Constraints.from_limits(max_params=100, max_latency_ms=1e6),
        penalty=Penalty("anneal", "linear", horizon=4),
    )
    r0 = ev(_student(4, 0), step=0)
    assert r0.violations == ("params <= 100",) and r0.latency_ms is not None
    assert r0.reward == pytest.approx(r0.raw_reward)  # ε_0 = 1
    r2 = ev(_student(4, 1), step=2)
    assert r2.cache_hit and r2.epsilon == pytest.approx(0.5)
    assert r2.reward == pytest.approx(0.5 * (r0.raw_reward + 1) - 1)
    assert ev(_student(4, 1), step=4).reward == pytest.approx(-1.0)
    hard = _evaluator(setup, constraints=Constraints.from_limits(max_params=100), penalty=Penalty("hard"))
    assert hard(_student(4, 0)).reward == -1.0


def test_evaluator_resumes_from_json(setup, tmp_path, monkeypatch):
    path = tmp_path / "rewards.json"
    first = _evaluator(setup, cache=RewardCache(path))(_student(4, 0))
    monkeypatch.setattr(evaluator_mod, "distill", lambda *a, **k: pytest.fail("retrained a cached architecture"))
    resumed = _evaluator(setup, cache=RewardCache(path))(_student(4, 3))
    assert resumed.cache_hit and resumed.accuracy == first.accuracy
    with pytest.raises(ConfigError):  # other distillation settings: refuse to mix rewards
        _evaluator(setup, cache=RewardCache(path), config=DistillConfig(epochs=2))
