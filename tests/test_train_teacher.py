"""Teacher training presets, checkpoints and the train-teacher command (n2n_fx.teacher.train)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from n2n_fx.cli import main
from n2n_fx.data import load_splits
from n2n_fx.errors import CheckpointError, ConfigError
from n2n_fx.teacher.train import PRESETS, load_teacher, preset_for, save_teacher, train_teacher
from n2n_fx.teacher.zoo import build_model

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist" / "raw"
TINY_DATA = ["--data-option", "num_samples=300", "--data-option", "image_size=12"]


def test_paper_presets_follow_appendix_10_2():
    mnist = preset_for("mnist10k")
    assert (mnist.epochs, mnist.lr, mnist.milestones, mnist.batch_size) == (50, 0.01, (30,), 64)
    for name in ("cifar10", "cifar100", "svhn"):
        p = preset_for(name)
        assert (p.epochs, p.lr, p.milestones, p.batch_size) == (150, 0.001, (80, 120), 128)
    caltech = preset_for("caltech256")
    assert (caltech.epochs, caltech.lr, caltech.milestones) == (50, 0.01, ())
    assert preset_for("cifar10", "cpu") is PRESETS["cpu"] and PRESETS["cpu"].epochs <= 5
    with pytest.raises(ConfigError):
        preset_for("cifar10", "fast")


def test_cli_trains_saves_and_load_teacher_rebuilds(tmp_path, capsys):
    out = tmp_path / "t.pt"
    argv = ["train-teacher", "vgg_tiny", "--dataset", "synthetic", *TINY_DATA]
    rc = main([*argv, "--epochs", "1", "--out", str(out), "--device", "cpu", "--quiet", "--seed", "3"])
    assert rc == 0 and out.is_file()
    printed = capsys.readouterr().out
    assert "val accuracy" in printed and "test accuracy" in printed and str(out) in printed
    raw = torch.load(out, weights_only=True)
    assert raw["spec"] == {
        "model": "vgg_tiny",
        "num_classes": 10,
        "in_channels": 1,
        "input_size": (1, 12, 12),
        "dataset": "synthetic",
    }
    assert 0.0 <= raw["metrics"]["val_accuracy"] <= 1.0 and raw["metrics"]["epochs"] == 1
    loaded = load_teacher(out)
    assert not loaded.model.training and loaded.input_size == (1, 12, 12)
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, raw["state_dict"][k])
    x = torch.randn(2, 1, 12, 12)
    assert loaded.model(x).shape == (2, 10)


def test_cli_reports_data_errors_as_one_line(tmp_path, capsys):
    rc = main(["train-teacher", "conv4", "--dataset", "cifar10", "--data-root", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "cifar10 not found" in err and err.count("\n") == 1


def test_train_teacher_learns_and_overrides_preset():
    splits = load_splits("synthetic", num_samples=600, image_size=16, seed=0)
    model, metrics = train_teacher(
        build_model("vgg_tiny", in_channels=1), splits, "cpu", epochs=2, lr=3e-3, batch_size=32
    )
    assert metrics["epochs"] == 2 and metrics["recipe"]["lr"] == 3e-3 and metrics["recipe"]["batch_size"] == 32
    assert metrics["val_accuracy"] > 0.2  # chance is 0.1
    assert not model.training


def test_corrupt_or_mismatched_checkpoints_raise_checkpoint_error(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint")
    no_spec = tmp_path / "no_spec.pt"
    torch.save({"state_dict": {}}, no_spec)
    mismatch = tmp_path / "mismatch.pt"
    model = build_model("vgg_tiny", num_classes=10, in_channels=1)
    save_teacher(mismatch, model, model_name="vgg_tiny", num_classes=7, in_channels=1, input_size=(1, 12, 12))
    unknown = tmp_path / "unknown.pt"
    save_teacher(
        unknown,
        model,
        model_name="no_such_net",
        num_classes=10,
        in_channels=1,
        input_size=(1, 12, 12),
    )
    for path in (garbage, no_spec, mismatch, unknown, tmp_path / "missing.pt"):
        with pytest.raises(CheckpointError) as e:
            load_teacher(path)
        assert "\n" not in str(e.value) and str(path) in str(e.value)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="../shared/data/mnist/raw is not available")
def test_cpu_preset_teacher_on_real_mnist10k(tmp_path):
    out = tmp_path / "vgg_tiny-mnist10k.pt"
    data_root = str(SHARED_MNIST.parents[1])
    argv = [
        "train-teacher",
        "vgg_tiny",
        "--dataset",
        "mnist10k",
        "--data-root",
        data_root,
        "--epochs",
        "2",
    ]
    assert main([*argv, "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    loaded = load_teacher(out)
    assert loaded.metrics["val_accuracy"] > 0.9 and loaded.metrics["test_accuracy"] > 0.9
