"""Policies and learning: BiLSTM removal policy, autoregressive shrink policy, the uniform policy,
REINFORCE; policies by name (``registry``: ``register_policy``, ``make_policy``).

Example::

    from n2n_fx.policy import RemovalPolicy, Learner, LearnerConfig
    policy = RemovalPolicy(feature_dim=x.shape[1])
    learner = Learner(policy, LearnerConfig(lr=0.003))
    ro = learner.sample(x=x, removable=removable)
    learner.update(ro, rewards, x=x, removable=removable)
"""

from .checkpoint import POLICY_FORMAT, Policy, build_policy, load_policy, policy_spec, save_policy
from .learner import ALGOS, BASELINES, LEARNER_FORMAT, Learner, LearnerConfig, UpdateStats
from .registry import (
    DEFAULT_POLICIES,
    POLICY_KINDS,
    PolicySettings,
    make_policy,
    policy_class,
    policy_name,
    policy_names,
    register_policy,
)
from .removal import KEEP, REMOVE, RemovalPolicy, RemovalPolicyConfig
from .rollout import Rollout
from .shrink import DEFAULT_RATIOS, N_VARIABLES, ShrinkPolicy, ShrinkPolicyConfig
from .uniform import UniformRemoval, UniformRemovalConfig, UniformShrink, UniformShrinkConfig

__all__ = [
    "ALGOS",
    "BASELINES",
    "DEFAULT_POLICIES",
    "DEFAULT_RATIOS",
    "KEEP",
    "LEARNER_FORMAT",
    "N_VARIABLES",
    "POLICY_FORMAT",
    "POLICY_KINDS",
    "REMOVE",
    "Learner",
    "LearnerConfig",
    "Policy",
    "PolicySettings",
    "RemovalPolicy",
    "RemovalPolicyConfig",
    "Rollout",
    "ShrinkPolicy",
    "ShrinkPolicyConfig",
    "UniformRemoval",
    "UniformRemovalConfig",
    "UniformShrink",
    "UniformShrinkConfig",
    "UpdateStats",
    "build_policy",
    "load_policy",
    "make_policy",
    "policy_class",
    "policy_name",
    "policy_names",
    "policy_spec",
    "register_policy",
    "save_policy",
]
