"""Removal and shrink policies: distributions, masking, re-scoring, gradients, save/load."""

from __future__ import annotations

import pytest
import torch

from n2n_fx.errors import CheckpointError, ConfigError
from n2n_fx.policy import (
    KEEP,
    REMOVE,
    Learner,
    LearnerConfig,
    RemovalPolicy,
    RemovalPolicyConfig,
    ShrinkPolicy,
    ShrinkPolicyConfig,
    load_policy,
    save_policy,
)

F = 12  # feature width of the synthetic inputs


def removal_input(L: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(L, F, generator=g)  # (L, F)
    removable = torch.rand(L, generator=g) > 0.25  # (L,)
    removable[-1] = False  # a classifier-like fixed layer
    return x, removable


def shrink_input(L: int = 8, seed: int = 0, n: int = 10):
    """Two steps per layer (out, kernel); "1x1" layers have only ratio 1.0 for kernel."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(L, F, generator=g).repeat_interleave(2, dim=0)  # (T, F)
    variable = torch.tensor([0, 1] * L)  # (T,)
    legal = torch.ones(2 * L, n, dtype=torch.bool)  # (T, n)
    one_by_one = torch.arange(L) % 3 == 0  # (L,)
    kernel_rows = legal[1::2]  # (L, n) view
    kernel_rows[one_by_one] = False
    kernel_rows[one_by_one, n - 1] = True
    legal[0, :3] = False  # some out ratios illegal (too few channels)
    return x, variable, legal


# ---- removal policy -----------------------------------------------------------------------


def test_removal_fresh_policy_follows_prior():
    x, removable = removal_input(40)
    for prior in (0.5, 0.2):
        torch.manual_seed(0)
        p = RemovalPolicy(feature_dim=F, remove_prior=prior)(x, removable)  # (L,)
        assert torch.all(p[~removable] == 0)
        assert torch.allclose(p[removable], torch.full_like(p[removable], prior), atol=0.02)


def test_removal_sample_shapes_and_fixed_layers_kept():
    x, removable = removal_input()
    torch.manual_seed(0)
    policy = RemovalPolicy(feature_dim=F, value_head=True)
    ro = policy.sample(x, removable, m=300, generator=0)
    assert ro.actions.shape == ro.log_probs.shape == ro.entropy.shape == (300, 20)
    assert ro.values.shape == (300, 20) and ro.log_prob.shape == (300,)
    assert ro.actions.dtype == torch.long
    assert torch.all(ro.actions[:, ~removable] == KEEP)
    assert torch.all(ro.log_probs[:, ~removable] == 0) and torch.all(ro.entropy[:, ~removable] == 0)
    assert torch.equal(ro.mask[0], removable)
    frac = ro.actions[:, removable].float().mean()
    assert 0.4 < frac < 0.6  # prior 0.5
    assert torch.all(policy.greedy(x, removable)[~removable] == KEEP)


def test_removal_evaluate_matches_sample():
    x, removable = removal_input()
    torch.manual_seed(0)
    policy = RemovalPolicy(feature_dim=F)
    ro = policy.sample(x, removable, m=7, generator=1)
    ev = policy.evaluate(x, removable, actions=ro.actions)
    assert torch.allclose(ev.log_probs, ro.log_probs)
    assert torch.allclose(policy.log_prob(x, removable, ro.actions), ro.log_prob)
    # a 1-D action vector is one rollout
    assert policy.evaluate(x, removable, actions=ro.actions[0]).actions.shape == (1, 20)


def test_removal_sampling_is_deterministic():
    x, removable = removal_input()
    torch.manual_seed(0)
    policy = RemovalPolicy(feature_dim=F)
    a = policy.sample(x, removable, m=5, generator=torch.Generator().manual_seed(3)).actions
    b = policy.sample(x, removable, m=5, generator=torch.Generator().manual_seed(3)).actions
    torch.manual_seed(11)
    c = policy.sample(x, removable, m=5).actions
    torch.manual_seed(11)
    d = policy.sample(x, removable, m=5).actions
    assert torch.equal(a, b) and torch.equal(c, d)


def test_removal_runs_on_any_length():
    torch.manual_seed(0)
    policy = RemovalPolicy(feature_dim=F)
    for L in (1, 5, 200):
        x, removable = removal_input(L)
        assert policy.sample(x, removable, m=2).actions.shape == (2, L)
    empty = policy.sample(torch.zeros(0, F), torch.zeros(0, dtype=torch.bool), m=3)
    assert empty.actions.shape == (3, 0) and empty.log_prob.tolist() == [0.0] * 3
    # a teacher with no layer: stored rollouts re-score too (the learner's update path)
    again = policy.evaluate(torch.zeros(0, F), torch.zeros(0, dtype=torch.bool), actions=empty.actions)
    assert again.actions.shape == (3, 0) and again.log_prob.tolist() == [0.0] * 3
    assert policy.log_prob(torch.zeros(0, F), torch.zeros(0, dtype=torch.bool), empty.actions).shape == (3,)


def test_removal_rejects_bad_inputs():
    x, removable = removal_input()
    policy = RemovalPolicy(feature_dim=F)
    with pytest.raises(ConfigError, match="expected"):
        policy.sample(torch.zeros(5, F + 1))
    with pytest.raises(ConfigError, match="removable"):
        policy.sample(x, removable[:-1])
    bad = torch.zeros(1, 20, dtype=torch.long)
    bad[0, -1] = REMOVE  # the fixed layer
    with pytest.raises(ConfigError, match="fixed layer"):
        policy.evaluate(x, removable, actions=bad)
    with pytest.raises(ConfigError, match="KEEP=0 or REMOVE=1"):
        policy.evaluate(x, removable, actions=torch.full((1, 20), 2))
    with pytest.raises(ConfigError, match="remove_prior"):
        RemovalPolicyConfig(feature_dim=F, remove_prior=1.0)
    with pytest.raises(ConfigError, match="either"):
        RemovalPolicy(RemovalPolicyConfig(feature_dim=F), hidden_size=3)


def test_feature_dim_defaults_to_features_module():
    features = pytest.importorskip("n2n_fx.features", reason="n2n_fx.features not available")
    assert RemovalPolicyConfig().feature_dim == features.FEATURE_DIM
    assert ShrinkPolicyConfig().feature_dim == features.FEATURE_DIM


# ---- shrink policy ------------------------------------------------------------------------


def test_shrink_fresh_policy_is_uniform_over_legal():
    x, variable, legal = shrink_input()
    torch.manual_seed(0)
    policy = ShrinkPolicy(feature_dim=F)
    ro = policy.sample(x, variable, legal, m=1, generator=0)
    probs = ro.log_probs.exp()[0]  # (T,)
    expect = 1.0 / legal.sum(-1).float()  # (T,)
    assert torch.allclose(probs, expect, rtol=0.15)  # small random head weights: near-uniform


def test_shrink_sample_respects_legal_mask():
    x, variable, legal = shrink_input()
    torch.manual_seed(0)
    policy = ShrinkPolicy(feature_dim=F, value_head=True)
    ro = policy.sample(x, variable, legal, m=200, generator=0)
    T = x.shape[0]
    assert ro.actions.shape == ro.log_probs.shape == ro.values.shape == (200, T)
    assert legal.gather(1, ro.actions.t()).all()
    single = legal.sum(-1) == 1  # (T,) steps without a choice
    assert torch.all(ro.log_probs[:, single] == 0) and torch.all(ro.entropy[:, single] == 0)
    assert torch.equal(ro.mask[0], ~single)
    assert torch.isfinite(ro.entropy).all() and torch.isfinite(ro.log_probs).all()
    g = policy.greedy(x, variable, legal)
    assert g.shape == (T,) and legal.gather(1, g[:, None]).all()
    ratios = policy.ratio_of(ro.actions)
    assert ratios.shape == (200, T) and ratios.min() >= 0.1 and ratios.max() <= 1.0
    assert torch.all(ratios[:, single] == 1.0)


def test_shrink_evaluate_matches_sample():
    x, variable, legal = shrink_input()
    torch.manual_seed(0)
    policy = ShrinkPolicy(feature_dim=F, value_head=True)
    ro = policy.sample(x, variable, legal, m=6, generator=2)
    ev = policy.evaluate(x, variable, legal, actions=ro.actions)
    assert torch.allclose(ev.log_probs, ro.log_probs, atol=1e-5)
    assert torch.allclose(ev.values, ro.values, atol=1e-5)


def test_shrink_is_autoregressive():
    """The distribution at step t depends on the action taken at step t-1."""
    x, variable, legal = shrink_input()
    torch.manual_seed(0)
    policy = ShrinkPolicy(feature_dim=F, init_scale=1.0)
    a = torch.full((2, x.shape[0]), 9)
    a[1, 2] = 5  # differ only at step 2
    ev = policy.evaluate(x, variable, legal, actions=a)
    assert torch.allclose(ev.log_probs[0, :2], ev.log_probs[1, :2])  # before the change
    assert not torch.allclose(ev.log_probs[0, 3:], ev.log_probs[1, 3:])


def test_shrink_sampling_is_deterministic():
    x, variable, legal = shrink_input()
    torch.manual_seed(0)
    policy = ShrinkPolicy(feature_dim=F)
    a = policy.sample(x, variable, legal, m=5, generator=4).actions
    b = policy.sample(x, variable, legal, m=5, generator=4).actions
    assert torch.equal(a, b)


def test_shrink_rejects_bad_inputs():
    x, variable, legal = shrink_input()
    policy = ShrinkPolicy(feature_dim=F)
    no_choice = legal.clone()
    no_choice[3] = False
    with pytest.raises(ConfigError, match="step 3 has no legal ratio"):
        policy.sample(x, variable, no_choice)
    with pytest.raises(ConfigError, match="variable ids"):
        policy.sample(x, variable + 10, legal)
    with pytest.raises(ConfigError, match="legal has shape"):
        policy.sample(x, variable, legal[:, :5])
    illegal = torch.zeros(1, x.shape[0], dtype=torch.long)  # ratio 0.1 on step 0 is illegal
    with pytest.raises(ConfigError, match="illegal ratio"):
        policy.evaluate(x, variable, legal, actions=illegal)
    with pytest.raises(ConfigError, match="ratios"):
        ShrinkPolicyConfig(feature_dim=F, ratios=(0.5, 0.5))
    empty = policy.sample(torch.zeros(0, F), torch.zeros(0, dtype=torch.long), None, m=2)
    assert empty.actions.shape == (2, 0)


def test_shrink_custom_ratio_grid():
    x, variable, _ = shrink_input()
    policy = ShrinkPolicy(feature_dim=F, ratios=(0.25, 0.5, 1.0))
    ro = policy.sample(x, variable, None, m=3, generator=0)
    assert ro.actions.max() <= 2
    assert set(policy.ratio_of(ro.actions).unique().tolist()) <= {0.25, 0.5, 1.0}


# ---- gradients ----------------------------------------------------------------------------


def _assert_every_parameter_trains(policy, learner, inputs, actions):
    before = {k: v.detach().clone() for k, v in policy.named_parameters()}
    learner.update(actions, torch.linspace(0.0, 1.0, actions.shape[0]), **inputs)
    for name, p in policy.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"
        assert not torch.equal(before[name], p.detach()), f"{name} did not change"


@pytest.mark.parametrize("algo", ["reinforce", "actor_critic"])
def test_every_removal_parameter_gets_a_gradient(algo):
    x, removable = removal_input()
    torch.manual_seed(0)
    policy = RemovalPolicy(feature_dim=F, value_head=algo == "actor_critic")
    names = {n.split(".")[0] for n, _ in policy.named_parameters()}
    assert names == ({"lstm", "head", "value"} if algo == "actor_critic" else {"lstm", "head"})
    assert sum(1 for n, _ in policy.named_parameters() if n.startswith("lstm")) == 16  # 2x2 dirs
    learner = Learner(policy, LearnerConfig(algo=algo))
    ro = learner.sample(x=x, removable=removable)
    _assert_every_parameter_trains(policy, learner, {"x": x, "removable": removable}, ro.actions)


@pytest.mark.parametrize("algo", ["reinforce", "actor_critic"])
def test_every_shrink_parameter_gets_a_gradient(algo):
    x, variable, legal = shrink_input()
    torch.manual_seed(0)
    policy = ShrinkPolicy(feature_dim=F, value_head=algo == "actor_critic")
    learner = Learner(policy, LearnerConfig(algo=algo, lr=0.01))
    inputs = {"x": x, "variable": variable, "legal": legal}
    ro = learner.sample(**inputs)
    _assert_every_parameter_trains(policy, learner, inputs, ro.actions)


# ---- save / load --------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    x, removable = removal_input()
    xs, variable, legal = shrink_input()
    torch.manual_seed(0)
    removal = RemovalPolicy(feature_dim=F, remove_prior=0.3, value_head=True)
    shrink = ShrinkPolicy(feature_dim=F, ratios=(0.25, 0.5, 0.75, 1.0), hidden_size=20)
    # move the weights off their init so the round trip is meaningful
    Learner(removal, algo="actor_critic").update(
        torch.ones(2, 20, dtype=torch.long) * removable, [0.0, 1.0], x=x, removable=removable
    )
    for policy, inputs in (
        (removal, (x, removable)),
        (shrink, (xs, variable, legal[:, -4:])),
    ):
        path = tmp_path / f"{policy.kind}.pt"
        save_policy(policy, path)
        raw = torch.load(path, weights_only=True)  # plain data only
        assert raw["kind"] == policy.kind and isinstance(raw["config"], dict)
        loaded = load_policy(path)
        assert type(loaded) is type(policy) and loaded.config == policy.config
        ro = policy.sample(*inputs, m=4, generator=5)
        assert torch.equal(loaded.log_prob(*inputs, ro.actions), policy.log_prob(*inputs, ro.actions))
        assert torch.equal(loaded.sample(*inputs, m=4, generator=5).actions, ro.actions)


def test_load_policy_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no policy file"):
        load_policy(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable policy file"):
        load_policy(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="is not a n2n_fx.policy/1 file"):
        load_policy(other)
    path = tmp_path / "p.pt"
    save_policy(RemovalPolicy(feature_dim=F), path)
    state = torch.load(path, weights_only=True)
    state["config"]["hidden_size"] = 7  # weights no longer match the config
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="weights do not match"):
        load_policy(path)
    state["kind"] = "nope"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="no known policy kind"):
        load_policy(path)
    for err in (CheckpointError, ConfigError):
        assert "\n" not in str(err("x"))


@pytest.mark.parametrize("kind", ["removal", "shrink"])
def test_policy_saved_before_the_cost_shares_acts_as_before(tmp_path, kind):
    """A policy saved with 8 feature scalars (before the params/FLOPs shares) loads onto today's rows:
    the new columns get zero weights, so whatever they hold, it picks the actions it picked."""
    from n2n_fx.features import FEATURE_DIM, N_SCALARS
    from n2n_fx.layers import KINDS
    from n2n_fx.policy import ShrinkPolicy

    old_dim = len(KINDS) + 8
    torch.manual_seed(0)
    policy = RemovalPolicy(feature_dim=old_dim) if kind == "removal" else ShrinkPolicy(feature_dim=old_dim)
    path = tmp_path / "old.pt"
    save_policy(policy, path)
    state = torch.load(path, weights_only=True)
    state["kinds"] = [k.value for k in KINDS]
    del state["scalars"]  # files from before the count was stored
    torch.save(state, path)
    loaded = load_policy(path)
    assert loaded.config.feature_dim == FEATURE_DIM == old_dim + N_SCALARS - 8
    x_new = torch.rand(6, FEATURE_DIM)
    x_old = x_new[:, :old_dim]
    with torch.no_grad():
        if kind == "removal":
            assert torch.allclose(policy.logits(x_old), loaded.logits(x_new), atol=1e-6)
        else:
            var = torch.zeros(6, dtype=torch.long)
            acts = torch.zeros(1, 6, dtype=torch.long)
            a = policy.evaluate(x_old, var, None, actions=acts)
            b = loaded.evaluate(x_new, var, None, actions=acts)
            assert torch.allclose(a.log_probs, b.log_probs, atol=1e-6)
    state["scalars"] = N_SCALARS + 1  # from a newer version: refused in one line
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="feature scalars"):
        load_policy(path)


@pytest.mark.parametrize("kind", ["removal", "shrink"])
def test_policy_loads_onto_a_larger_kind_vocabulary(tmp_path, kind):
    """A policy saved before a layer kind existed loads onto today's features and acts as before."""
    from n2n_fx.features import FEATURE_DIM, N_SCALARS
    from n2n_fx.layers import KINDS
    from n2n_fx.policy import ShrinkPolicy

    old_kinds = [k.value for k in KINDS if k.value != "conv_dw"]  # as if conv_dw were added later
    old_dim = len(old_kinds) + N_SCALARS
    torch.manual_seed(0)
    policy = RemovalPolicy(feature_dim=old_dim) if kind == "removal" else ShrinkPolicy(feature_dim=old_dim)
    path = tmp_path / "old.pt"
    save_policy(policy, path)
    state = torch.load(path, weights_only=True)
    state["kinds"] = old_kinds
    torch.save(state, path)
    loaded = load_policy(path)
    assert loaded.config.feature_dim == FEATURE_DIM
    # the same layers, as rows of the old and of the new vocabulary
    new_names = [k.value for k in KINDS]
    codes = torch.tensor([new_names.index(k) for k in ("conv", "relu", "linear", "batchnorm", "conv")])
    scalars = torch.rand(len(codes), N_SCALARS)
    x_new = torch.cat([torch.nn.functional.one_hot(codes, len(KINDS)).float(), scalars], 1)
    keep = [new_names.index(k) for k in old_kinds] + list(range(len(KINDS), FEATURE_DIM))
    x_old = x_new[:, keep]
    with torch.no_grad():
        if kind == "removal":
            assert torch.allclose(policy.logits(x_old), loaded.logits(x_new), atol=1e-6)
        else:
            var = torch.zeros(len(codes), dtype=torch.long)
            a = policy.evaluate(x_old, var, None, actions=torch.zeros(1, len(codes), dtype=torch.long))
            b = loaded.evaluate(x_new, var, None, actions=torch.zeros(1, len(codes), dtype=torch.long))
            assert torch.allclose(a.log_probs, b.log_probs, atol=1e-6)
    # files from before the vocabulary was stored: 22 feature columns meant the first 14 kinds
    first = RemovalPolicy(feature_dim=14 + 8)  # and 8 scalars
    save_policy(first, path)
    legacy = torch.load(path, weights_only=True)
    del legacy["kinds"], legacy["scalars"]
    torch.save(legacy, path)
    assert load_policy(path).config.feature_dim == FEATURE_DIM
    state["kinds"] = [*old_kinds[:-1], "hypernet"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="hypernet"):
        load_policy(path)
