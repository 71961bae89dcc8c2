"""Policies and learning: BiLSTM removal policy, autoregressive shrink policy, REINFORCE.

Example::

    from n2n_fx.policy import RemovalPolicy, Learner, LearnerConfig
    policy = RemovalPolicy(feature_dim=x.shape[1])
    learner = Learner(policy, LearnerConfig(lr=0.003))
    ro = learner.sample(x=x, removable=removable)
    learner.update(ro, rewards, x=x, removable=removable)
"""

from .checkpoint import POLICY_FORMAT, Policy, build_policy, load_policy, policy_spec, save_policy
from .learner import ALGOS, BASELINES, LEARNER_FORMAT, Learner, LearnerConfig, UpdateStats
from .removal import KEEP, REMOVE, RemovalPolicy, RemovalPolicyConfig
from .rollout import Rollout
from .shrink import DEFAULT_RATIOS, N_VARIABLES, ShrinkPolicy, ShrinkPolicyConfig

__all__ = [
    "ALGOS",
    "BASELINES",
    "DEFAULT_RATIOS",
    "KEEP",
    "LEARNER_FORMAT",
    "N_VARIABLES",
    "POLICY_FORMAT",
    "REMOVE",
    "Learner",
    "LearnerConfig",
    "Policy",
    "RemovalPolicy",
    "RemovalPolicyConfig",
    "Rollout",
    "ShrinkPolicy",
    "ShrinkPolicyConfig",
    "UpdateStats",
    "build_policy",
    "load_policy",
    "policy_spec",
    "save_policy",
]
