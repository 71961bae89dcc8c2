"""Baselines (issue #7): random search, Taylor filter pruning, hand-made KD students, CLI."""

from __future__ import annotations

import argparse
import json
import os

import pytest
import torch
from _tiny import TINY_BUDGET, TINY_DATA
from torch import nn

from n2n_fx import analyze, model_cost, trace
from n2n_fx.baselines import (
    ARCHITECTURES,
    RANDOM_POLICY,
    STOP_ACCURACY,
    STOP_PARAMS,
    PruneConfig,
    RandomSearch,
    Reference,
    build_handmade,
    count_model_params,
    prunable_spaces,
    prune,
    stop_reason,
    taylor_scores,
    width_for_params,
)
from n2n_fx.baselines.handmade import _params_at
from n2n_fx.baselines.pruning import _prune_step
from n2n_fx.cli import baseline_cmd
from n2n_fx.errors import ConfigError
from n2n_fx.features import FEATURE_DIM, policy_input, shrink_input, shrink_steps
from n2n_fx.policy import (
    Learner,
    LearnerConfig,
    PolicySettings,
    RemovalPolicy,
    RemovalPolicyConfig,
    ShrinkPolicy,
    ShrinkPolicyConfig,
    make_policy,
    policy_name,
)
from n2n_fx.search import RunDir, SearchConfig, run_compress
from n2n_fx.search.stage import make_stage
from n2n_fx.search.teacher_setup import prepare

DATA = {**TINY_DATA, "dataset_options": {"num_samples": 160, "image_size": 16}, "teacher_epochs": 1}
BUDGET = {**TINY_BUDGET, "removal_iterations": 1, "shrink_iterations": 1, "reward_steps": 2}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(teacher GraphModule, splits, folder) on a tiny synthetic set; the teacher is cached."""
    root = tmp_path_factory.mktemp("baselines")
    os.environ["N2N_FX_CACHE"] = str(tmp_path_factory.getbasetemp() / "n2n_cache")
    prepared = prepare(SearchConfig(**DATA))
    gm = trace(prepared.model, input_size=prepared.splits.input_size).eval()
    (root / "tiny.json").write_text(json.dumps(DATA))
    return gm, prepared.splits, root


@pytest.fixture(scope="module")
def n2n_run(tiny):
    """A minimal finished N2N run (one removal rollout): the reference of the baselines."""
    cfg = SearchConfig(**DATA, **{**BUDGET, "shrink_iterations": 0, "rollouts": 1, "stage": "removal"})
    run_compress(cfg, tiny[2] / "n2n", quiet=True)
    return tiny[2] / "n2n"


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="n2n-fx")
    baseline_cmd.add_parser(parser.add_subparsers(dest="command"), "baseline")
    return baseline_cmd.run(parser.parse_args(["baseline", *argv]))


# -- random search ---------------------------------------------------------------------------


@pytest.mark.parametrize("p_remove", [0.5, 0.3])
def test_random_search_samples_from_the_uniform_policy_which_never_learns(tiny, p_remove):
    layers = analyze(tiny[0]).layers
    x = policy_input(layers)
    removable = torch.tensor([lay.removable for lay in layers])
    settings = PolicySettings(feature_dim=FEATURE_DIM, remove_prior=p_remove)
    learner = Learner(make_policy("removal", RANDOM_POLICY, settings), LearnerConfig(rollouts=4, seed=0))
    p = learner.policy(x, removable)
    assert torch.allclose(p, torch.where(removable, p_remove, 0.0))
    ro = learner.sample(x=x, removable=removable)
    learner.update(ro, [0.1, 0.2, 0.3, 0.4], x=x, removable=removable)
    assert learner.optimizer is None and not list(learner.policy.parameters())  # nothing to learn
    assert torch.equal(learner.policy(x, removable), p)
    assert not (ro.actions[:, ~removable] == 1).any()
    # its draws are those of a fresh LSTM with zero head weights, what random search sampled before
    lstm = RemovalPolicy(RemovalPolicyConfig(remove_prior=p_remove, init_scale=0.0))
    for seed in range(3):
        uniform = learner.policy.sample(x, removable, m=6, generator=seed).actions
        assert torch.equal(uniform, lstm.sample(x, removable, m=6, generator=seed).actions)

    sx, var, legal = shrink_input(layers, shrink_steps(layers))
    shrink = Learner(make_policy("shrink", RANDOM_POLICY, settings), LearnerConfig(rollouts=3, seed=0))
    acts = shrink.sample(x=sx, variable=var, legal=legal).actions
    assert legal.gather(1, acts.t()).all()
    lstm = ShrinkPolicy(ShrinkPolicyConfig(init_scale=0.0))
    for seed in range(3):
        uniform = shrink.policy.sample(sx, var, legal, m=6, generator=seed).actions
        assert torch.equal(uniform, lstm.sample(sx, var, legal, m=6, generator=seed).actions)
    many = shrink.policy.sample(sx, var, legal, m=4000, generator=0).actions  # (4000, T)
    step = int(legal.sum(1).argmax())  # the step with the most legal ratios: each drawn equally often
    counts = torch.bincount(many[:, step], minlength=legal.shape[1])[legal[step]].float()
    assert (counts / counts.mean() - 1).abs().max() < 0.15


def test_random_search_resumes_a_checkpoint_from_before_its_policy_was_registered(tiny, tmp_path):
    """Random runs checkpointed while their learner held a frozen LSTM go on with the same draws."""
    gm, splits, _ = tiny
    cfg = SearchConfig(**DATA, **{**BUDGET, "rollouts": 3})
    search = RandomSearch(cfg, RunDir.create(tmp_path / "r"), gm, splits)
    analysis = analyze(gm)
    stage = make_stage("removal", search.cfg, analysis, {})
    assert stage.policy_type == RANDOM_POLICY
    old = Learner(RemovalPolicy(RemovalPolicyConfig(init_scale=0.0)), LearnerConfig(lr=1e-3, rollouts=3, seed=7))
    old.sample(**stage.inputs())  # one iteration done: its draws and its update, which changed nothing
    old.updates = 1
    search.state.learners["removal"] = old.state_dict()
    learner = search._learner(stage)
    assert policy_name(learner.policy) == RANDOM_POLICY and learner.updates == old.updates == 1
    assert torch.equal(learner.sample(**stage.inputs()).actions, old.sample(**stage.inputs()).actions)


def test_random_search_history_matches_n2n(tiny, n2n_run, capsys):
    _, _, root = tiny
    rd = root / "random"
    policy = {"removal_lr"}  # random search has no policy to train
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in BUDGET.items() if k not in policy]
    assert _cli(["random", "--config", str(root / "tiny.json"), "--run-dir", str(rd), "--quiet", *flags]) == 0
    out = capsys.readouterr().out
    winner = json.loads((rd / "summary.json").read_text())["winner"]  # the one student trained to the end
    assert ("Random search (1+2)" if winner == "stage2" else "Random search (stage 1)") in out and "compression" in out
    rows = [json.loads(line) for line in (rd / "history.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["removal"] * 2 + ["shrink"] * 2
    assert json.loads((rd / "baseline.json").read_text())["method"] == "random_search"
    assert (rd / "report.md").is_file() and (rd / "student.pt").is_file()

    ref_rows = [json.loads(line) for line in (n2n_run / "history.jsonl").read_text().splitlines()]
    assert {tuple(sorted(r)) for r in rows} == {tuple(sorted(ref_rows[0]))}


# -- pruning ---------------------------------------------------------------------------------


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 6, 3, padding=1)
        self.b = nn.Conv2d(6, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        y = torch.relu(s + self.b(torch.relu(self.a(s))))
        return self.head(y.mean(dim=(2, 3)))


def test_taylor_scores_shapes_and_coupled_spaces(tiny):
    gm, splits, _ = tiny
    an = analyze(gm)
    scores = taylor_scores(gm, splits.train_plain, batches=1, batch_size=16, analysis=an)
    spaces = prunable_spaces(an)
    assert set(scores) == set(spaces) and scores
    for root, s in scores.items():
        assert s.shape == (spaces[root][0].size,) and (s >= 0).all()
        assert torch.linalg.vector_norm(s).item() == pytest.approx(1.0, abs=1e-4)

    torch.manual_seed(0)
    res = trace(_Residual(), input_size=(1, 16, 16)).eval()
    ran = analyze(res)
    rs = taylor_scores(res, splits.train_plain, batches=1, batch_size=8, analysis=ran)
    sizes = sorted(int(cls.size) for cls, _ in prunable_spaces(ran).values())
    assert sizes == [6, 8] and sorted(s.numel() for s in rs.values()) == sizes  # stem+b coupled
    r, pruned = _prune_step(rs, ran, 3, PruneConfig())
    assert r.valid and sum(pruned.values()) == 3
    assert r.student(torch.zeros(2, 1, 16, 16)).shape == (2, 10)

    conv4 = trace("conv4", input_size=(1, 16, 16)).eval()  # a flatten of 2x2 maps: 4 features/channel
    can = analyze(conv4)
    cs = taylor_scores(conv4, splits.train_plain, batches=1, batch_size=8, analysis=can)
    assert all(s.shape == (cls.size,) for root, (cls, _) in prunable_spaces(can).items() for s in [cs[root]])
    r, _ = _prune_step(cs, can, 16, PruneConfig())
    assert r.valid and model_cost(r.student).params < model_cost(conv4).params


def test_prune_step_removes_exactly_the_lowest_channels(tiny):
    gm, _, _ = tiny
    an = analyze(gm)
    spaces = prunable_spaces(an)
    first = min(spaces, key=lambda root: an.by_node[spaces[root][1]].index)
    scores = {root: torch.full((int(cls.size),), 10.0) for root, (cls, _) in spaces.items()}
    scores[first] = torch.tensor([5.0, 0.1, 4.0, 0.2] + [3.0] * (spaces[first][0].size - 4))
    r, pruned = _prune_step(scores, an, 2, PruneConfig())
    owner = spaces[first][1]
    assert pruned == {owner: 2}
    w_t = gm.get_submodule(an.by_node[owner].target).weight
    w_s = r.student.get_submodule(an.by_node[owner].target).weight
    kept = [i for i in range(w_t.shape[0]) if i not in (1, 3)]
    assert torch.equal(w_s, w_t[kept])


def test_stop_rule():
    ref = Reference(0.90, params=1000)
    assert ref.floor == pytest.approx(0.89)
    assert stop_reason(0.895, 5000, ref) is None
    assert stop_reason(0.89, 5000, ref) is None
    assert stop_reason(0.8899, 5000, ref) == STOP_ACCURACY
    assert stop_reason(0.95, 999, ref) == STOP_PARAMS
    assert stop_reason(0.80, 999, ref) == STOP_ACCURACY  # a rejected student is never reported
    assert stop_reason(float("nan"), 5000, ref) == STOP_ACCURACY
    assert stop_reason(0.5, 10, Reference(0.5)) is None  # no size floor


def _scripted(values):
    it = iter(values)
    return lambda model: next(it)


def test_prune_stops_on_accuracy_and_reports_previous_student(tiny):
    gm, splits, _ = tiny
    cfg = PruneConfig(step_fraction=0.1, score_batches=1, batch_size=16, finetune_steps=0)
    accs = [0.90, 0.90, 0.895, 0.885, 0.95]  # teacher, steps 1-3 (step 3 breaks the rule)
    res = prune(gm, splits, cfg, Reference(0.90), evaluate=_scripted(accs))
    assert res.stop == STOP_ACCURACY and res.step == 2 and len(res.log) == 4
    assert res.accuracy == 0.895 and res.params == res.log[2].params
    assert model_cost(res.student).params == res.params
    params = [s.params for s in res.log]
    assert all(a > b for a, b in zip(params, params[1:], strict=False))
    assert [s.stop for s in res.log] == [None, None, None, STOP_ACCURACY]


def test_prune_stops_below_reference_params(tiny):
    gm, splits, _ = tiny
    target = model_cost(gm).params // 2
    cfg = PruneConfig(step_fraction=0.2, score_batches=1, batch_size=16, finetune_steps=1)
    res = prune(gm, splits, cfg, Reference(0.5, params=target), evaluate=lambda m: 0.9)
    assert res.stop == STOP_PARAMS and res.params < target <= res.log[-2].params
    assert res.student(torch.zeros(2, *splits.input_size)).shape == (2, splits.num_classes)
    params = [s.params for s in res.log]
    assert all(a > b for a, b in zip(params, params[1:], strict=False))


# -- hand-made students ----------------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("size", [(1, 16, 16), (3, 32, 32), (3, 20, 24)])
def test_handmade_hits_target_and_forwards(arch, size):
    for target in (5_000, 60_000):
        m = build_handmade(arch, 7, size[0], target_params=target, input_size=size)
        assert abs(count_model_params(m) - target) <= 0.1 * target
        assert count_model_params(m) == _params_at(arch, width_for_params(arch, target, 7, size[0]), 7, size[0])
    assert m.eval()(torch.zeros(2, *size)).shape == (2, 7)
    assert model_cost(trace(m, input_size=size)).params == count_model_params(m)


def test_handmade_errors():
    with pytest.raises(ConfigError):
        build_handmade("vgg_small", 10, 1, target_params=1000, input_size=(1, 8, 8))
    with pytest.raises(ConfigError):
        width_for_params("fitnet", 10)
    with pytest.raises(ConfigError):
        build_handmade("resnet", 10, 1)


# -- CLI ---------------------------------------------------------------------------------------


def test_cli_prune_and_handmade(tiny, n2n_run, capsys):
    _, _, root = tiny
    cfg = str(root / "tiny.json")
    common = ["--config", cfg, "--quiet"]
    prune_flags = ["--finetune-steps", "1", "--step-fraction", "0.3", "--score-batches", "1"]
    ref = ["--ref-run", str(n2n_run)]
    assert _cli(["prune", *ref, *common, *prune_flags, "--max-steps", "1", "--out", str(root / "p")]) == 0
    out = capsys.readouterr().out
    assert "Taylor pruning" in out and "N2N (reference run)" in out and "#params" in out
    log = json.loads((root / "p" / "pruned.json").read_text())["log"]
    assert log[0]["step"] == 0 and len(log) <= 2
    hm = ["handmade", *common, "--epochs", "1", "--target-params", "3K", "--arch", "fitnet"]
    assert _cli(hm) == 0
    assert "fitnet + KD" in capsys.readouterr().out
