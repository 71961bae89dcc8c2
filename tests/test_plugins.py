"""Plug-ins (issue #16): a policy and a reward function, each registered in one place and run by a search."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from _cli import one_line_error
from _tiny import tiny
from torch import nn

from n2n_fx.baselines.random_search import run_random_search
from n2n_fx.data import load_splits
from n2n_fx.distill import DistillConfig, LogitCache
from n2n_fx.errors import ConfigError
from n2n_fx.features import FEATURE_DIM
from n2n_fx.policy import Rollout, load_policy, policy_names, register_policy
from n2n_fx.reward import RewardCache, RewardEvaluator, count_params, register_reward, reward_names
from n2n_fx.search import SearchConfig, load_run, run_compress

# -- a custom policy and a custom reward, as a user writes them ---------------------------------------


@dataclass(frozen=True)
class OneLogitConfig:
    feature_dim: int = FEATURE_DIM  # rows it accepts
    remove_prior: float = 0.5  # P(remove) it starts from (the search passes its remove_prior)


@register_policy("one_logit")
class OneLogitRemoval(nn.Module):
    """Removes every removable layer with one learned probability."""

    kind = "removal"
    config_class = OneLogitConfig
    value = None

    def __init__(self, config: OneLogitConfig) -> None:
        super().__init__()
        self.config = config
        p = config.remove_prior
        self.logit = nn.Parameter(torch.tensor(math.log(p / (1 - p))))

    def evaluate(self, x, removable, *, actions) -> Rollout:
        actions = torch.as_tensor(actions).long().reshape(-1, x.shape[0])  # (m, L)
        mask = torch.as_tensor(removable).bool().expand_as(actions)  # (m, L)
        z = self.logit.expand(actions.shape)  # (m, L)
        logp = torch.where(actions == 1, F.logsigmoid(z), F.logsigmoid(-z))
        p = torch.sigmoid(z)
        ent = -(p * F.logsigmoid(z) + (1 - p) * F.logsigmoid(-z))
        zero = z.new_zeros(())
        return Rollout(actions, torch.where(mask, logp, zero), torch.where(mask, ent, zero), mask)

    def sample(self, x, removable, *, m=1, generator=None) -> Rollout:
        u = torch.rand((m, x.shape[0]), generator=generator)  # (m, L)
        actions = ((u < torch.sigmoid(self.logit)) & torch.as_tensor(removable).bool()).long()
        return self.evaluate(x, removable, actions=actions)

    def greedy(self, x, removable) -> torch.Tensor:
        return ((self.logit > 0) & torch.as_tensor(removable).bool()).long()


@register_reward("compression_minus_error")
def compression_minus_error(accuracy: float, teacher_accuracy: float, compression: float, chance: float) -> float:
    """C − (1 − A): a point of compression is worth a point of accuracy."""
    return compression - (1.0 - accuracy)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("N2N_FX_CACHE", str(tmp_path_factory.getbasetemp() / "n2n_cache"))


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def _computed(rows):
    """History rows without what is timed (the rest is computed, so equal for equal runs)."""
    return [{k: v for k, v in r.items() if k not in ("surgery_s", "wall_s", "latency_ms")} for r in rows]


# -- the search runs them ------------------------------------------------------------------------------


def test_a_search_runs_a_registered_policy_and_reward_function(tmp_path):
    assert "one_logit" in policy_names("removal") and "compression_minus_error" in reward_names()
    cfg = SearchConfig(
        **tiny(removal_policy_type="one_logit", shrink_policy_type="uniform", reward_fn="compression_minus_error")
    )
    run_compress(cfg, tmp_path / "r", quiet=True)
    recorded = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (recorded["removal_policy_type"], recorded["shrink_policy_type"], recorded["reward_fn"]) == (
        "one_logit",
        "uniform",
        "compression_minus_error",
    )
    rows = _rows(tmp_path / "r")
    assert [r["stage"] for r in rows] == ["removal"] * 4 + ["shrink"] * 4
    scored = [r for r in rows if r["degenerate"] is None]
    assert scored
    for r in scored:
        assert r["raw_reward"] == pytest.approx(max(-1.0, r["objective_compression"] - (1 - r["accuracy"])))
    ck = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert ck["learners"]["removal"]["policy_spec"]["policy"] == "one_logit"
    assert ck["learners"]["shrink"]["policy_spec"]["policy"] == "uniform"
    saved = load_policy(tmp_path / "r" / "policies" / "removal.pt")
    assert isinstance(saved, OneLogitRemoval) and saved.config.remove_prior == 0.5
    assert float(ck["learners"]["removal"]["optimizer"]["state"][0]["step"]) == 2  # it learned: 2 Adam steps
    assert (
        ck["learners"]["shrink"]["optimizer"] is None and ck["learners"]["shrink"]["updates"] == 2
    )  # nothing to learn

    report = (tmp_path / "r" / "report.md").read_text()
    assert "reward function compression_minus_error; removal policy one_logit; shrink policy uniform" in report
    # its student loads where the plug-ins are not registered (load_run reads no reward or policy)
    config = tmp_path / "r" / "config.json"
    config.write_text(json.dumps({**recorded, "reward_fn": "registered_elsewhere"}))
    student, _ = load_run(tmp_path / "r")
    assert student(torch.zeros(1, 1, 16, 16)).shape == (1, 10)

    run_compress(cfg, tmp_path / "again", quiet=True)  # same seed, same history
    assert _computed(_rows(tmp_path / "again")) == _computed(rows)


def test_uniform_policies_in_a_search_are_random_search(tmp_path):
    """``removal_policy_type="uniform"`` and ``shrink_policy_type="uniform"`` make the N2N job random search:
    the same students, in the same order, with the same rewards."""
    run_compress(
        SearchConfig(**tiny(removal_policy_type="uniform", shrink_policy_type="uniform", seed=4)),
        tmp_path / "n2n",
        quiet=True,
    )
    run_random_search(SearchConfig(**tiny(seed=4)), tmp_path / "random", quiet=True)
    rows = _rows(tmp_path / "n2n")
    assert _computed(rows) == _computed(_rows(tmp_path / "random"))
    assert len({json.dumps(r["actions"]) for r in rows if r["stage"] == "removal"}) > 1  # random masks
    recorded = json.loads((tmp_path / "random" / "config.json").read_text())
    assert recorded["removal_policy_type"] == recorded["shrink_policy_type"] == "uniform"


# -- unknown names, second registrations ------------------------------------------------------------------


def test_unknown_names_are_one_line_errors(tmp_path, capsys):
    run = ["--run-dir", str(tmp_path / "x")]
    one_line_error(capsys, ["compress", "--reward-fn", "nope", *run], "reward_fn 'nope'", "paper, accuracy_squared")
    one_line_error(
        capsys, ["compress", "--removal-policy-type", "lstm", *run], "removal_policy_type 'lstm'", "bilstm, uniform"
    )
    one_line_error(capsys, ["compress", "--shrink-policy-type", "bilstm", *run], "shrink", "lstm, uniform")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="unknown reward function 'nope'; registered: paper, accuracy_squared"):
        RewardEvaluator([], [], teacher_accuracy=0.5, teacher_params=10, input_size=(1, 4, 4), reward_fn="nope")
    with pytest.raises(ConfigError, match="not registered; decorate it with @register_reward"):
        RewardEvaluator([], [], teacher_accuracy=0.5, teacher_params=10, input_size=(1, 4, 4), reward_fn=max)


def test_a_name_is_registered_once():
    with pytest.raises(ConfigError, match="reward function named 'paper' is already registered"):
        register_reward("paper")(lambda a, t, c, chance: 0.0)

    class Other(OneLogitRemoval):
        pass

    with pytest.raises(ConfigError, match="removal policy named 'uniform' is already registered"):
        register_policy("uniform")(Other)
    with pytest.raises(ConfigError, match="needs config_class"):
        register_policy("no_config")(type("NoConfig", (nn.Module,), {"kind": "shrink"}))


# -- the reward cache keeps reward functions apart ----------------------------------------------------


def _student(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(width * 64, 10))


@pytest.fixture(scope="module")
def data():
    splits = load_splits("synthetic", num_samples=200, image_size=8, seed=0)
    teacher = _student(12).eval()
    return splits, teacher, LogitCache.build(teacher, splits.train_plain)


def _evaluator(data, **kw) -> RewardEvaluator:
    splits, teacher, logits = data
    base = dict(teacher_accuracy=0.5, teacher_params=count_params(teacher), input_size=(1, 8, 8))
    return RewardEvaluator(
        splits.train_plain, splits.val, logit_cache=logits, config=DistillConfig(epochs=1), **base, **kw
    )


def test_a_reward_cache_holds_the_rewards_of_one_reward_function(data, tmp_path):
    path = tmp_path / "rewards.json"
    paper = _evaluator(data, cache=RewardCache(path))
    a = paper(_student(4))
    c, rel = a.compression, a.accuracy / 0.5
    assert a.reward == pytest.approx(c * (2 - c) * rel)
    with pytest.raises(ConfigError, match="reward_fn differ"):  # the file, reopened under another function
        _evaluator(data, reward_fn="accuracy_squared", cache=RewardCache(path))
    with pytest.raises(ConfigError, match="reward_fn differ"):  # the same cache object, shared
        _evaluator(data, reward_fn="accuracy_squared", cache=paper.cache)
    squared = _evaluator(data, reward_fn="accuracy_squared")  # its own cache: trains and scores its own
    b = squared(_student(4))
    assert not b.cache_hit and b.accuracy == a.accuracy
    assert b.reward == pytest.approx(c * (2 - c) * rel**2)
    again = _evaluator(data, cache=RewardCache(path))(_student(4))  # the paper's cache, the paper's reward
    assert again.cache_hit and again.reward == a.reward


@register_reward("test_broken")
def broken(accuracy: float, teacher_accuracy: float, compression: float, chance: float) -> float:
    return math.nan


def test_a_reward_function_that_gives_no_number_fails_loudly(data):
    with pytest.raises(ConfigError, match="reward function 'test_broken' gave nan"):
        _evaluator(data, reward_fn=broken)(_student(4))
