"""Distillation losses, logit cache, trainer behaviour and accuracy (n2n_fx.distill)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from n2n_fx.data import ImageDataset, load_splits
from n2n_fx.data.transforms import build_transform
from n2n_fx.degenerate import Reason
from n2n_fx.distill import (
    DistillConfig,
    LogitCache,
    accuracy,
    distill,
    distill_loss,
    kd_kl_loss,
    kd_l2_loss,
)
from n2n_fx.errors import ConfigError


@pytest.fixture(scope="module")
def splits():
    return load_splits("synthetic", num_samples=400, image_size=12, seed=0)


def small_cnn(width: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, 10),
    )


class Counting(nn.Module):
    """Wraps a model and counts forward calls."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


class ModeRecorder(nn.Module):
    """Records (grad enabled, training flag) at every forward call."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.log = inner, []

    def forward(self, x):
        self.log.append((torch.is_grad_enabled(), self.training))
        return self.inner(x)


# -- losses -----------------------------------------------------------------------------------


def test_kd_l2_is_mean_over_samples_of_squared_distance():
    s = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    z = torch.tensor([[1.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
    # sample 1: (0 + 4 + 0) = 4; sample 2: 1 + 1 + 1 = 3; mean 3.5
    assert kd_l2_loss(s, z).item() == pytest.approx(3.5)
    assert distill_loss("l2", s, z, None).item() == pytest.approx(3.5)


def test_ce_plus_lambda_l2_hand_computed():
    s = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    z = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    y = torch.tensor([0, 0])
    ce = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(1.0))) / 2  # 0.12693, 1.31326
    l2 = (1.0 + 4.0) / 2
    assert distill_loss("ce+l2", s, z, y, lam=0.3).item() == pytest.approx(ce + 0.3 * l2, rel=1e-6)
    assert distill_loss("ce", s, None, y).item() == pytest.approx(ce, rel=1e-6)


def test_kl_loss_with_temperature():
    s, z = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    t = 2.0
    p = torch.softmax(z / t, 1)
    q = torch.softmax(s / t, 1)
    expected = (p * (p.log() - q.log())).sum() * t * t
    assert kd_kl_loss(s, z, t).item() == pytest.approx(expected.item(), rel=1e-6)
    assert kd_kl_loss(z, z, t).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ConfigError):
        distill_loss("l2", s, None, None)
    with pytest.raises(ConfigError):
        DistillConfig(loss="huber")


# -- logit cache ---------------------------------------------------------------------------------


def test_logit_cache_means_no_teacher_forward_during_training(splits):
    teacher = Counting(small_cnn(8))
    cache = LogitCache.build(teacher, splits.train_plain)
    assert teacher.calls > 0 and cache.logits.shape == (len(splits.train_plain), 10)
    teacher.calls = 0
    r = distill(
        small_cnn(4),
        splits.train_plain,
        DistillConfig(epochs=1),
        teacher=teacher,
        logit_cache=cache,
    )
    assert r.ok and r.steps > 0 and teacher.calls == 0
    r = distill(small_cnn(4), splits.train_plain, DistillConfig(epochs=1), teacher=teacher)
    assert teacher.calls == r.steps


def test_cached_logits_equal_live_teacher_logits(splits):
    teacher = small_cnn(8).eval()
    cache = LogitCache.build(teacher, splits.train_plain)
    with torch.no_grad():
        x = torch.stack([splits.train_plain[i][0] for i in (0, 5, 17)])
        assert torch.allclose(cache.logits[[0, 5, 17]], teacher(x), atol=1e-5)


def test_logit_cache_refuses_augmented_or_other_data(splits, tmp_path):
    aug = build_transform(image_size=12, channels=1, mean=(0.25,), std=(0.25,), augment="crop_flip")
    augmented: ImageDataset = splits.train_plain.view(transform=aug)
    with pytest.raises(ConfigError):
        LogitCache.build(small_cnn(), augmented)
    cache = LogitCache.build(small_cnn(), splits.train_plain)
    with pytest.raises(ConfigError):
        distill(small_cnn(4), splits.val, DistillConfig(epochs=1), logit_cache=cache)
    cache.save(tmp_path / "c.pt")
    again = LogitCache.load(tmp_path / "c.pt")
    assert torch.equal(again.logits, cache.logits) and again.fingerprint == cache.fingerprint


# -- trainer -------------------------------------------------------------------------------------


def test_train_and_eval_modes_are_correct_in_every_epoch(splits):
    student = ModeRecorder(small_cnn(4))
    cfg = DistillConfig(epochs=3, eval_every=1, batch_size=64)
    r = distill(student, splits.train_plain, cfg, teacher=small_cnn(8), val_data=splits.val)
    assert r.ok and r.epochs == 3 and len(r.val_history) == 3
    train_calls = [training for grad, training in student.log if grad]
    eval_calls = [training for grad, training in student.log if not grad]
    assert len(train_calls) == r.steps == 3 * math.ceil(len(splits.train_plain) / 64)
    assert all(train_calls), "student must be in train mode for every training step"
    assert eval_calls and not any(eval_calls), "student must be in eval mode for every evaluation"
    # the last training step of each epoch comes after that epoch's evaluation of the previous one
    steps_per_epoch = r.steps // 3
    grads = [grad for grad, _ in student.log]
    assert (
        grads[steps_per_epoch] is False and grads[steps_per_epoch + 1 :][:steps_per_epoch] == [True] * steps_per_epoch
    )
    assert not student.training  # returned ready for evaluation


def test_diverging_student_is_marked_not_raised(splits):
    cfg = DistillConfig(epochs=2, optimizer="sgd", lr=1e6)
    r = distill(small_cnn(4), splits.train_plain, cfg, teacher=small_cnn(8), val_data=splits.val)
    assert r.degenerate.reason is Reason.DIVERGED and not r.ok and r.val_accuracy is None

    class Inf(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return torch.full((x.shape[0], 10), float("inf")) * self.w

    r = distill(Inf(), splits.train_plain, DistillConfig(epochs=1), teacher=small_cnn(8))
    assert r.degenerate.reason is Reason.DIVERGED and r.steps == 0
    assert r.degenerate.detail == "loss inf at step 1"


def test_weights_broken_by_the_last_step_count_as_diverged(splits):
    cfg = DistillConfig(steps=1, optimizer="sgd", lr=float("inf"))
    r = distill(small_cnn(4), splits.train_plain, cfg, teacher=small_cnn(8), val_data=splits.val)
    assert r.degenerate.reason is Reason.DIVERGED and r.steps == 1 and r.val_accuracy is None


def test_broken_student_is_marked_failed(splits):
    broken = nn.Sequential(nn.Flatten(), nn.Linear(7, 10))  # wrong input features
    r = distill(broken, splits.train_plain, DistillConfig(epochs=1), teacher=small_cnn(8))
    assert r.degenerate.reason is Reason.FAILED and r.degenerate.detail and "\n" not in str(r.degenerate)


def test_training_reduces_the_loss(splits):
    teacher = small_cnn(8)
    cache = LogitCache.build(teacher, splits.train_plain)
    r = distill(small_cnn(4), splits.train_plain, DistillConfig(epochs=3, lr=3e-3), logit_cache=cache)
    assert r.ok and r.losses[-1] < 0.7 * r.losses[0]


def test_student_starts_from_the_weights_it_was_given(splits):
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(144, 10))
    cache = LogitCache.build(teacher, splits.train_plain)
    student = copy.deepcopy(teacher)  # inherits every weight: loss is exactly zero from the start
    r = distill(student, splits.train_plain, DistillConfig(epochs=1), logit_cache=cache)
    assert r.losses[0] == pytest.approx(0.0, abs=1e-10)
    fresh = distill(
        nn.Sequential(nn.Flatten(), nn.Linear(144, 10)),
        splits.train_plain,
        DistillConfig(epochs=1),
        logit_cache=cache,
    )
    assert fresh.losses[0] > 1e-3


def test_keep_best_returns_the_best_validation_weights_and_stops_on_patience(splits):
    teacher = small_cnn(8)
    good = small_cnn(8)
    distill(good, splits.train_plain, DistillConfig(loss="ce", epochs=3, lr=3e-3))
    start = {k: v.clone() for k, v in good.state_dict().items()}
    before = accuracy(good, splits.val)
    # a learning rate that wrecks the weights: no epoch beats the starting ones, which come back
    wreck = DistillConfig(loss="ce+l2", epochs=4, lr=5.0, optimizer="sgd", keep_best=True, patience=2)
    r = distill(good, splits.train_plain, wreck, teacher=teacher, val_data=splits.val)
    assert r.best_epoch == 0 and r.epochs <= 2  # two epochs without progress (or a divergence), then stop
    assert r.val_accuracy == pytest.approx(before) and (r.degenerate is None or r.degenerate.reason is Reason.DIVERGED)
    assert all(torch.equal(v, start[k]) for k, v in good.state_dict().items())
    # an ordinary run keeps its best epoch and reports that epoch's accuracy
    cfg = DistillConfig(loss="ce", epochs=4, lr=3e-3, keep_best=True)
    r = distill(small_cnn(4), splits.train_plain, cfg, val_data=splits.val)
    assert r.best_epoch >= 1 and r.val_accuracy == max(r.val_history)
    assert r.val_accuracy == pytest.approx(accuracy(r.student, splits.val))


def test_step_budget_and_cosine_schedule(splits):
    cfg = DistillConfig(steps=5, batch_size=16, schedule="cosine", optimizer="sgd", lr=0.01)
    r = distill(small_cnn(4), splits.train_plain, cfg, teacher=small_cnn(8))
    assert r.ok and r.steps == 5 and r.epochs == 1


def test_small_cnn_learns_synthetic_data_above_chance():
    s = load_splits("synthetic", num_samples=1000, image_size=16, seed=0)
    torch.manual_seed(0)
    w = 16
    net = nn.Sequential(
        nn.Conv2d(1, w, 3, padding=1),
        nn.BatchNorm2d(w),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1),
        nn.BatchNorm2d(2 * w),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * w, 2 * w, 3, padding=1),
        nn.BatchNorm2d(2 * w),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * w, 10),
    )
    cfg = DistillConfig(loss="ce", epochs=2, lr=3e-3, batch_size=32)
    r = distill(net, s.train, cfg, val_data=s.val)
    assert r.ok and r.val_accuracy is not None and r.val_accuracy > 0.3  # chance is 0.1 (got 0.51)


# -- accuracy -------------------------------------------------------------------------------------


class OneHotOf(nn.Module):
    """Predicts the class stored in the first pixel (+ shift)."""

    def __init__(self, shift: int = 0) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x):
        return F.one_hot((x[:, 0, 0, 0].long() + self.shift) % 10, 10).float()


def test_accuracy_is_top1_and_restores_mode():
    labels = torch.arange(30) % 10
    images = labels.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).float()
    ds = ImageDataset(images, labels, info=None)
    model = OneHotOf().train()
    assert accuracy(model, ds, batch_size=7) == 1.0 and model.training
    assert accuracy(OneHotOf(shift=1), ds) == 0.0


def test_keep_best_breaks_accuracy_ties_by_validation_loss(splits):
    """On a small validation split epochs often tie on accuracy; the kept weights are then those of
    the lowest validation loss (the most trained, as a rule), not the first epoch to reach it."""
    from n2n_fx.distill import accuracy_and_loss

    model = small_cnn(16)
    seen = []

    def on_epoch(*_):
        seen.append(accuracy_and_loss(model, splits.val))
        model.train()

    cfg = DistillConfig(loss="ce", epochs=8, lr=3e-3, keep_best=True, schedule="cosine")
    r = distill(model, splits.train_plain, cfg, val_data=splits.val, on_epoch=on_epoch)
    top = max(acc for acc, _ in seen)
    tied = [i + 1 for i, (acc, _) in enumerate(seen) if acc == top]
    assert len(tied) >= 2, f"the test needs epochs that tie on accuracy: {seen}"
    want = min(tied, key=lambda e: seen[e - 1][1])
    assert r.best_epoch == want and r.val_accuracy == top
    assert accuracy_and_loss(model, splits.val) == pytest.approx(seen[want - 1])
