"""Policy transfer (paper §4.6, Table 5): a removal policy trained on ResNet-18 starts ResNet-34's search.

    python examples/transfer.py [--updates 150]

To show what transfers without training thousands of students, the policy is first trained
on a cheap synthetic objective over ResNet-18's layer sequence (remove norms/activations
inside residual blocks, keep everything else), then applied unchanged to ResNet-34, whose
layer sequence is almost twice as long. For the real thing, pass a trained policy from a
run: `n2n-fx compress --model resnet34 ... --removal-policy runs/<resnet18 run>/policies/removal.pt`.
"""

import argparse

import torch

from n2n_fx import analyze, trace
from n2n_fx.features import policy_input
from n2n_fx.graph.kinds import Kind
from n2n_fx.policy import REMOVE, Learner, LearnerConfig, RemovalPolicy

ap = argparse.ArgumentParser()
ap.add_argument("--updates", type=int, default=150)
args = ap.parse_args()
torch.manual_seed(0)


def task(name):
    layers = analyze(trace(name, input_size=(3, 32, 32))).layers
    x = policy_input(layers)
    removable = torch.tensor([lay.removable for lay in layers])
    target = torch.tensor(
        [lay.removable and lay.s_start > 0 and lay.kind in (Kind.BATCHNORM, Kind.RELU) for lay in layers]
    )
    return x, removable, target


def reward(actions, removable, target):  # fraction of removable layers decided as the target says
    hit = ((actions == REMOVE) == target) & removable
    return hit.sum(1).float() / removable.sum()


def mean_reward_first_updates(learner, x, removable, target, n=10):
    out = []
    for _ in range(n):
        ro = learner.sample(x=x, removable=removable)
        r = reward(ro.actions, removable, target)
        learner.update(ro, r, x=x, removable=removable)
        out.append(float(r.mean()))
    return sum(out) / n


x18, rm18, t18 = task("resnet18")
x34, rm34, t34 = task("resnet34")
pre = Learner(RemovalPolicy(), LearnerConfig(lr=0.01, entropy_coef=0.003, seed=0))
for _ in range(args.updates):
    ro = pre.sample(x=x18, removable=rm18)
    pre.update(ro, reward(ro.actions, rm18, t18), x=x18, removable=rm18)
pretrained = Learner(pre.policy, LearnerConfig(lr=0.01, entropy_coef=0.003, seed=1))
scratch = Learner(RemovalPolicy(), LearnerConfig(lr=0.01, entropy_coef=0.003, seed=1))
print(
    f"resnet18 -> resnet34, mean reward over the first 10 updates: pretrained {mean_reward_first_updates(pretrained, x34, rm34, t34):.3f}, scratch {mean_reward_first_updates(scratch, x34, rm34, t34):.3f}"
)
