"""A user's own data: image folders (grey and colour, nested splits), the teacher trained on them, the run."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from n2n_fx.cli import main
from n2n_fx.data import data_fingerprint, get_dataset, load_splits
from n2n_fx.errors import CheckpointError, ConfigError, DataError
from n2n_fx.rundir import safe_torch_load
from n2n_fx.search import SearchConfig
from n2n_fx.search.teacher_setup import prepare
from n2n_fx.teacher.quality import majority_accuracy, teacher_warning
from n2n_fx.teacher.train import TeacherPreset, data_identity, save_teacher, train_teacher
from n2n_fx.teacher.zoo import build_model


def write_folder(root: Path, classes=("a", "b", "c"), n=8, size=(12, 12), grey=True, seed=0) -> Path:
    """``root/<class>/<i>.png``: class k is bright in its own third of the image, plus noise."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            h, w = size if not callable(size) else size(i)
            img = rng.integers(0, 60, (h, w), dtype=np.uint8)
            img[:, k * w // len(classes) : (k + 1) * w // len(classes)] += 180
            if grey:
                Image.fromarray(img, mode="L").save(root / name / f"{i}.png")
            else:
                rgb = np.stack([img, np.roll(img, 1, 0), 255 - img], -1)
                Image.fromarray(rgb.astype(np.uint8), mode="RGB").save(root / name / f"{i}.png")
    return root


def one_line_error(capsys, argv: list[str], must: str) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and must in err, err
    return err


# -- the folder ------------------------------------------------------------------------------------
def test_grey_folder_stays_grey_at_its_own_size(tmp_path):
    write_folder(tmp_path / "digits", n=10, size=(12, 12))
    s = load_splits(f"imagefolder:{tmp_path / 'digits'}", test_size=6, val_size=3)
    assert (s.num_classes, s.input_size) == (3, (1, 12, 12))
    assert s.info.classes == ("a", "b", "c") and not s.info.resize
    assert (len(s.train), len(s.val), len(s.test)) == (21, 3, 6)
    x, _ = s.train_plain[0]
    assert x.shape == (1, 12, 12)
    assert abs(float(torch.stack([s.train_plain[i][0] for i in range(21)]).mean())) < 0.2  # normalised by its own mean
    assert "3 classes, input 1x12x12" in s.describe()


def test_colour_folder_keeps_three_channels_and_options_override(tmp_path):
    write_folder(tmp_path / "photos", grey=False, size=(10, 10))
    s = load_splits(f"imagefolder:{tmp_path / 'photos'}", test_size=3, val_size=3)
    assert s.input_size == (3, 10, 10)
    s = load_splits(f"imagefolder:{tmp_path / 'photos'}", test_size=3, val_size=3, channels=1, image_size=8)
    assert s.input_size == (1, 8, 8) and s.train_plain[0][0].shape == (1, 8, 8)
    with pytest.raises(ConfigError, match="channels"):
        get_dataset(f"imagefolder:{tmp_path / 'photos'}", channels=2)


def test_images_of_varying_size_are_resized_to_the_median_shorter_side(tmp_path):
    write_folder(tmp_path / "mixed", n=5, size=lambda i: (10 + 2 * i, 14))
    s = load_splits(f"imagefolder:{tmp_path / 'mixed'}", test_size=3, val_size=3)
    assert s.image_size == 14 and s.info.resize  # shorter sides 10..18, median 14
    assert {tuple(s.train_plain[i][0].shape) for i in range(len(s.train_plain))} == {(1, 14, 14)}


def test_nested_split_folders_are_used_as_given(tmp_path):
    root = tmp_path / "data"
    write_folder(root / "train", n=6)
    write_folder(root / "val", n=2, seed=1)
    write_folder(root / "test", n=3, seed=2)
    s = load_splits(f"imagefolder:{root}")
    assert (len(s.train), len(s.val), len(s.test)) == (18, 6, 9)
    with pytest.raises(ConfigError, match="val_size"):
        load_splits(f"imagefolder:{root}", val_size=2)
    # the same folders one by one, as --train-dir / --val-dir / --test-dir give them
    t = load_splits("imagefolder", train_dir=root / "train", val_dir=root / "val", test_dir=root / "test")
    assert (len(t.train), len(t.val), len(t.test)) == (18, 6, 9)
    assert data_fingerprint(s) == data_fingerprint(t)


def test_train_and_test_folders_only_carve_validation_from_train(tmp_path):
    root = tmp_path / "data"
    write_folder(root / "train", n=10)
    write_folder(root / "test", n=2, seed=2)
    s = load_splits(f"imagefolder:{root}", val_size=3)
    assert (len(s.train), len(s.val), len(s.test)) == (27, 3, 6)
    with pytest.raises(ConfigError, match="test_size"):
        load_splits(f"imagefolder:{root}", test_size=2)


def test_parent_of_split_or_class_folders_gets_a_one_line_hint(tmp_path):
    root = tmp_path / "export"
    for split in ("val", "testing", "all"):
        write_folder(root / "x" / split, n=2)
    with pytest.raises(DataError) as e:  # split folders but no train/
        load_splits(f"imagefolder:{root / 'x'}")
    assert "\n" not in str(e.value) and "no train/" in str(e.value) and "--train-dir" in str(e.value)
    with pytest.raises(DataError) as e:  # a folder above the split folders
        load_splits(f"imagefolder:{root}")
    assert "\n" not in str(e.value) and "parent" in str(e.value) and str(root / "x") in str(e.value)
    with pytest.raises(DataError) as e:  # --train-dir given a split root
        load_splits("imagefolder", train_dir=root / "x")
    assert "split folders" in str(e.value) and "--test-dir" in str(e.value)


def test_splits_with_different_classes_are_refused(tmp_path):
    write_folder(tmp_path / "d" / "train", n=4)
    write_folder(tmp_path / "d" / "test", classes=("a", "b", "z"), n=2)
    with pytest.raises(DataError, match="different class folders"):
        load_splits(f"imagefolder:{tmp_path / 'd'}")


@pytest.mark.parametrize("off", ["none", "false", "False", "off", 0, False])
def test_augment_off_really_turns_it_off(tmp_path, off):
    write_folder(tmp_path / "f", n=6)
    s = load_splits(f"imagefolder:{tmp_path / 'f'}", augment="crop", test_size=3, val_size=3)
    torch.manual_seed(0)
    assert any(not torch.equal(s.train[0][0], s.train[0][0]) for _ in range(5))  # crop is random
    s = load_splits(f"imagefolder:{tmp_path / 'f'}", augment=off, test_size=3, val_size=3)
    assert s.info.augment == "none" and "augmentation none" in s.describe()
    assert all(torch.equal(s.train[i][0], s.train_plain[i][0]) for i in range(len(s.train)))


def test_augment_values_are_parsed_strictly(tmp_path):
    write_folder(tmp_path / "f", n=6)
    for bad in ("maybe", "flip", "true"):  # imagefolder has no preset of its own: "true" names none
        with pytest.raises(ConfigError) as e:
            load_splits(f"imagefolder:{tmp_path / 'f'}", augment=bad, test_size=3, val_size=3)
        assert "\n" not in str(e.value) and "crop" in str(e.value)
    s = load_splits("synthetic", num_samples=60, image_size=8, augment="crop_flip")
    assert s.info.augment == "crop_flip"


def test_datasets_command_lists_data_sets_and_their_options(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for must in ("imagefolder", "train_dir", "channels", "mnist10k", "val_size", "augment", "crop_flip"):
        assert must in out
    assert main(["datasets", "imagefolder"]) == 0
    assert "synthetic" not in capsys.readouterr().out.split("every data set")[0]
    one_line_error(capsys, ["datasets", "imagenet"], "unknown data set")


# -- the teacher -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_splits():
    return load_splits("synthetic", num_samples=300, image_size=12, seed=0)


def test_teacher_stops_on_a_plateau_and_keeps_its_best_epoch(small_splits):
    frozen = TeacherPreset("t", epochs=20, lr=1e-12, optimizer="adam", weight_decay=0.0, patience=1)
    torch.manual_seed(0)
    _, m = train_teacher(build_model("vgg_tiny", in_channels=1), small_splits, frozen)
    assert m["stopped"] == "plateau" and m["epochs"] == 3  # best, miss -> lr/10, miss -> stop
    learning = TeacherPreset("t", epochs=6, lr=3e-3, optimizer="adam", weight_decay=0.0, patience=2)
    model, m = train_teacher(build_model("vgg_tiny", in_channels=1), small_splits, learning)
    from n2n_fx.distill import accuracy

    assert m["val_accuracy"] == max(m["val_history"]) == pytest.approx(accuracy(model, small_splits.val))
    assert m["val_history"][m["best_epoch"] - 1] == m["val_accuracy"]


def test_weak_teacher_warnings():
    assert "most common class" in teacher_warning({"val_accuracy": 0.3, "majority_accuracy": 0.3})
    rising = {
        "val_accuracy": 0.8,
        "majority_accuracy": 0.1,
        "val_history": [0.5, 0.7, 0.8],
        "stopped": "cap",
        "best_epoch": 3,
        "max_epochs": 3,
        "recipe": {"patience": 3},
    }
    assert "still rising" in teacher_warning(rising) and "\n" not in teacher_warning(rising)
    assert teacher_warning({**rising, "stopped": "plateau"}) is None
    assert teacher_warning({**rising, "val_history": [0.5, 0.8, 0.8, 0.8, 0.8, 0.8], "best_epoch": 2}) is None
    assert majority_accuracy(load_splits("synthetic", num_samples=100, image_size=8).val) == pytest.approx(0.1)


def test_fingerprint_follows_images_split_and_size_not_the_train_subset(tmp_path):
    root = write_folder(tmp_path / "f", n=8)
    base = load_splits(f"imagefolder:{root}", test_size=6, val_size=3)
    fp = data_fingerprint(base)
    assert data_fingerprint(load_splits(f"imagefolder:{root}", test_size=6, val_size=3)) == fp
    assert data_fingerprint(load_splits(f"imagefolder:{root}", test_size=6, val_size=3, subset=10)) == fp
    assert data_fingerprint(load_splits(f"imagefolder:{root}", test_size=6, val_size=3, seed=1)) != fp
    assert data_fingerprint(load_splits(f"imagefolder:{root}", test_size=6, val_size=3, image_size=8)) != fp
    img = np.asarray(Image.open(root / "a" / "0.png")).copy()
    img[0, 0] ^= 1
    Image.fromarray(img, mode="L").save(root / "a" / "0.png")  # "re-exported" with one pixel changed
    assert data_fingerprint(load_splits(f"imagefolder:{root}", test_size=6, val_size=3)) != fp


def test_teacher_cache_follows_the_images_and_checkpoints_are_checked(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("N2N_FX_CACHE", str(tmp_path / "cache"))
    root = write_folder(tmp_path / "f", n=8)
    cfg = SearchConfig(
        model="vgg_tiny",
        dataset=f"imagefolder:{root}",
        dataset_options={"test_size": 6, "val_size": 3},
        teacher_epochs=1,
    )
    with caplog.at_level(logging.INFO, logger="n2n_fx"):
        first = prepare(cfg)
    assert any("3 classes, input 1x12x12" in m for m in caplog.messages)  # the data line users read
    assert prepare(cfg).source == first.source  # cached
    img = np.asarray(Image.open(root / "b" / "1.png")).copy()
    img[1, 1] ^= 1
    Image.fromarray(img, mode="L").save(root / "b" / "1.png")
    assert prepare(cfg).source != first.source  # other images: trained again
    # a checkpoint remembers its data; another seed or size is refused in one line
    splits = first.splits
    ckpt = save_teacher(
        tmp_path / "t.pt",
        first.model,
        model_name="vgg_tiny",
        num_classes=3,
        in_channels=1,
        input_size=splits.input_size,
        data=data_identity(prepare(cfg).splits),
    )
    assert prepare(cfg.replace(teacher_checkpoint=str(ckpt))).source == str(ckpt)
    for change, must in ((dict(seed=1), "seed"), (dict(dataset_options={"test_size": 5, "val_size": 3}), "other")):
        with pytest.raises(CheckpointError, match=must) as e:
            prepare(cfg.replace(teacher_checkpoint=str(ckpt), **change))
        assert "\n" not in str(e.value)


# -- the whole run on a folder, from the command line ----------------------------------------------
def test_compress_on_split_folders_from_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("N2N_FX_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    write_folder(root / "train", n=20)
    write_folder(root / "test", n=4, seed=2)
    argv = ["compress", "--train-dir", str(root / "train"), "--test-dir", str(root / "test")]
    argv += ["--model", "vgg_tiny", "--removal-iterations", "1", "--shrink-iterations", "1", "--rollouts", "2"]
    argv += ["--reward-steps", "2", "--final-epochs", "2", "--teacher-epochs", "2", "--run-dir", str(tmp_path / "r")]
    argv += ["--reward-accuracy", "ratio"]  # a 2-epoch teacher on 54 images may be at chance
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "3 classes, input 1x12x12, train 54 / val 6 / test 12" in err
    assert "kept epoch" in err
    assert "Teacher: trained 2 epochs" in (tmp_path / "r" / "report.md").read_text()
    ck = safe_torch_load(tmp_path / "r" / "checkpoint.pt")
    for stage in ("removal", "shrink"):
        final = ck["final"].get(stage)
        if final:  # never worse on validation than what the search measured
            assert final["val_accuracy"] >= final["search_val_accuracy"] - 1e-9
    one_line_error(capsys, argv[:3] + ["--dataset", "mnist10k"], "drop --dataset")
