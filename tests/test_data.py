"""Data sets, splits, transforms and loaders (n2n_fx.data)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from n2n_fx.data import (
    ImageDataset,
    SyntheticConfig,
    dataset_names,
    get_dataset,
    load_splits,
    make_loader,
    make_synthetic,
    read_idx,
    stratified_split,
)
from n2n_fx.data.transforms import build_transform
from n2n_fx.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[2] / "shared"  # ../shared next to the repository
MNIST_RAW = SHARED / "data" / "mnist" / "raw"


def _disjoint(*views: ImageDataset) -> bool:
    sets = [set(v.indices.tolist()) for v in views]
    return all(not (a & b) for i, a in enumerate(sets) for b in sets[i + 1 :])


# -- synthetic -------------------------------------------------------------------------------


def test_synthetic_is_deterministic_for_a_seed():
    cfg = SyntheticConfig(image_size=12)
    a, la = make_synthetic(64, cfg, seed=3)
    b, lb = make_synthetic(64, cfg, seed=3)
    c, _ = make_synthetic(64, cfg, seed=4)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, c)


def test_synthetic_shapes_balance_and_colour():
    images, labels = make_synthetic(105, SyntheticConfig(num_classes=7, image_size=10, channels=3), seed=0)
    assert images.shape == (105, 3, 10, 10) and images.dtype == torch.uint8
    assert labels.bincount().tolist() == [15] * 7
    assert images.float().std() > 10  # not blank


@pytest.mark.parametrize("kw", [dict(num_classes=1), dict(num_classes=1000), dict(channels=2), dict(image_size=4)])
def test_synthetic_rejects_bad_config(kw):
    with pytest.raises(ConfigError):
        SyntheticConfig(**kw)


def test_synthetic_train_and_test_differ():
    train = get_dataset("synthetic", num_samples=40, image_size=10, transform=None)
    test = get_dataset("synthetic", split="test", num_samples=40, num_test=40, image_size=10, transform=None)
    assert not torch.equal(train.source, test.source)


# -- splits ------------------------------------------------------------------------------------


def test_stratified_split_sizes_disjoint_and_proportional():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])  # imbalanced, 200 samples
    parts = stratified_split(labels, [20, 40, 140], seed=7)
    assert [len(p) for p in parts] == [20, 40, 140]
    assert len(set(np.concatenate(parts).tolist())) == 200
    for part in parts:
        counts = np.bincount(labels[part], minlength=4)
        expected = np.array([100, 50, 30, 20]) * len(part) / 200
        assert np.all(np.abs(counts - expected) <= 1.0), (counts, expected)
    again = stratified_split(labels, [20, 40, 140], seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = stratified_split(labels, [20, 40, 140], seed=8)
    assert not np.array_equal(parts[0], other[0])


def test_stratified_split_rejects_oversize():
    with pytest.raises(ConfigError):
        stratified_split([0, 1, 0, 1], [3, 2])


def test_load_splits_disjoint_stratified_and_unaugmented_eval():
    s = load_splits("synthetic", num_samples=500, image_size=12, seed=1)
    assert (len(s.train), len(s.val), len(s.test)) == (450, 50, 100)
    assert _disjoint(s.train, s.val)
    assert np.array_equal(s.train.indices, s.train_plain.indices)
    assert s.val.targets.bincount(minlength=10).tolist() == [5] * 10
    assert s.input_size == (1, 12, 12) and s.num_classes == 10
    x, y = s.val[0]
    assert x.shape == (1, 12, 12) and x.dtype == torch.float32 and isinstance(y, int)
    assert torch.equal(s.val[3][0], s.val[3][0])  # evaluation transform is deterministic


def test_subset_is_stratified_and_shared_by_train_views():
    s = load_splits("synthetic", num_samples=500, image_size=12).subset(train=0.2, val=20)
    assert len(s.train) == 90 and len(s.val) == 20
    assert np.array_equal(s.train.indices, s.train_plain.indices)
    assert s.train.targets.bincount(minlength=10).tolist() == [9] * 10
    with pytest.raises(ConfigError):
        s.subset(train=1000)


def test_test_size_is_refused_for_official_test_split():
    with pytest.raises(ConfigError):
        load_splits("synthetic", num_samples=100, test_size=10)


# -- transforms ----------------------------------------------------------------------------------


def test_cifar_augmentation_is_random_and_keeps_shape():
    train_t = build_transform(image_size=8, channels=3, mean=(0.5,) * 3, std=(1.0,) * 3, augment="crop_flip")
    eval_t = build_transform(image_size=8, channels=3, mean=(0.5,) * 3, std=(1.0,) * 3)
    img = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    torch.manual_seed(0)
    outs = [train_t(img) for _ in range(8)]
    assert all(o.shape == (3, 8, 8) for o in outs)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    expected = img.float() / 255 - 0.5  # paper: mean subtraction of 0.5
    assert torch.allclose(eval_t(img), expected)


def test_unknown_augmentation_is_config_error():
    with pytest.raises(ConfigError):
        build_transform(image_size=8, channels=1, mean=(0.0,), std=(1.0,), augment="mixup")


# -- loaders -------------------------------------------------------------------------------------


def test_loader_shuffling_is_seeded():
    ds = get_dataset("synthetic", num_samples=64, image_size=8)
    first = [next(iter(make_loader(ds, 16, shuffle=True, seed=s)))[1].tolist() for s in (1, 1, 2)]
    assert first[0] == first[1] and first[0] != first[2]
    assert next(iter(make_loader(ds, 16)))[1].tolist() == ds.targets[:16].tolist()


@pytest.mark.parametrize("shuffle", [False, True])
def test_iterating_a_loader_leaves_the_global_rng_alone(shuffle):
    # an accuracy read in the middle of a training must not move the dropout masks that follow it
    ds = get_dataset("synthetic", num_samples=64, image_size=8)
    loader = make_loader(ds, 16, shuffle=shuffle)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    for _ in loader:
        pass
    assert torch.equal(torch.rand(3), expected)


# -- missing files, registry -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "mnist10k", "cifar10", "cifar100", "svhn", "caltech256"])
def test_missing_files_raise_one_line_data_error(name, tmp_path):
    with pytest.raises(DataError) as e:
        get_dataset(name, root=tmp_path, download=False)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg
    assert "--download" in msg and "--data-root" in msg


def test_unknown_dataset_and_options():
    assert {"synthetic", "mnist10k", "cifar10", "imagefolder"} <= set(dataset_names())
    with pytest.raises(ConfigError):
        get_dataset("imagenet22k")
    with pytest.raises(ConfigError):
        get_dataset("synthetic", colour="red")
    with pytest.raises(ConfigError):
        get_dataset("mnist10k", split="test")


def test_imagefolder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            pixels = rng.integers(0, 255, (10 + i, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / cls / f"{i}.png")
    s = load_splits(f"imagefolder:{tmp_path}", image_size=8, test_size=2, val_size=2)
    assert s.num_classes == 2 and s.in_channels == 3
    assert (len(s.train), len(s.val), len(s.test)) == (6, 2, 2)
    assert s.train_plain[0][0].shape == (3, 8, 8)
    with pytest.raises(DataError):
        get_dataset(f"imagefolder:{tmp_path / 'missing'}")


# -- IDX / MNIST -------------------------------------------------------------------------------


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_and_mnist_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_idx(raw / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2]))
    assert torch.equal(read_idx(raw / "t10k-images-idx3-ubyte.gz"), torch.from_numpy(images.astype(np.uint8)))
    ds = get_dataset("mnist", root=tmp_path, split="test", transform=None)
    assert len(ds) == 3 and ds.source.shape == (3, 1, 28, 28) and ds.targets.tolist() == [0, 1, 2]
    (raw / "bad.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError):
        read_idx(raw / "bad.gz")


@pytest.mark.skipif(not MNIST_RAW.is_dir(), reason="../shared/data/mnist/raw is not available")
def test_mnist10k_carves_seeded_stratified_splits():
    s = load_splits("mnist10k", root=SHARED / "data", seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (7000, 1000, 2000)
    assert _disjoint(s.train, s.val, s.test)
    full = torch.cat([s.train.targets, s.val.targets, s.test.targets]).bincount().float()
    for part in (s.val, s.test):
        share = part.targets.bincount(minlength=10).float() / len(part)
        assert torch.allclose(share, full / full.sum(), atol=1.5 / len(part) + 1e-6)
    bench = load_splits("mnist10k", root=SHARED / "data", val_size=0, test_size=2000, seed=0)
    assert (len(bench.train), len(bench.val), len(bench.test)) == (8000, 0, 2000)
    assert np.array_equal(bench.test.indices, s.test.indices)  # same seed, same test split
    x, _ = s.train_plain[0]
    assert x.shape == (1, 28, 28) and -1 < float(x.mean()) < 1
