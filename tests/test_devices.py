"""The accelerator path on the CPU: every step of a run with a fake device (tests/_devices.py).

A run given the fake device where it would be given "cuda" must finish, compute what the
CPU run computes (the fake device runs the same CPU kernels), run no model on the CPU,
upload the teacher-logit cache once, and leave CPU tensors in every file and in the
teacher surgery starts from.
"""

from __future__ import annotations

import copy
import json
import pickle
import random
from dataclasses import replace

import pytest
import torch
from _devices import FAKE, devices_of, fake_device
from _tiny import removed, tiny
from torch import nn

from n2n_fx import trace
from n2n_fx.cli import main
from n2n_fx.data import load_splits, loaders
from n2n_fx.distill import DistillConfig, LogitCache, accuracy, distill, predict_logits
from n2n_fx.reward import RewardCache, RewardEvaluator
from n2n_fx.search import SearchConfig, compress, run_compress
from n2n_fx.search.executors import Job, ParallelExecutor, SequentialExecutor
from n2n_fx.search.executors.worker import Trainer, evaluator_payload
from n2n_fx.supernet import Supernet, SupernetConfig, train_supernet
from n2n_fx.supernet.train import sample_actions
from n2n_fx.teacher.train import PRESETS, train_teacher
from n2n_fx.teacher.zoo import build_model

CPU = torch.device("cpu")
SIZE = (1, 16, 16)


@pytest.fixture(scope="module")
def splits():
    return load_splits("synthetic", num_samples=300, image_size=16, seed=0)


@pytest.fixture(scope="module")
def traced_teacher():
    torch.manual_seed(0)
    return trace("vgg_tiny", input_size=SIZE).eval()


@pytest.fixture
def teacher(traced_teacher):
    """A fresh copy per test: a test that finds the teacher moved must not move it for the next one."""
    return copy.deepcopy(traced_teacher)


@pytest.fixture(scope="module")
def built_cache(splits, traced_teacher):
    return LogitCache.build(traced_teacher, splits.train_plain)


@pytest.fixture
def cache(built_cache):
    """The logits without device copies made by earlier tests (uploads are counted)."""
    return LogitCache(built_cache.logits, built_cache.fingerprint)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v.cpu(), sb[k].cpu()) for k, v in a.state_dict().items())


# -- the parts -------------------------------------------------------------------------------------


def test_accuracy_and_logits_run_a_cpu_model_on_the_device_and_leave_it_where_it_was(splits, teacher):
    want_acc, want_logits = accuracy(teacher, splits.val), predict_logits(teacher, splits.val)
    with fake_device() as seen:
        acc = accuracy(teacher, splits.val, device=FAKE)
        logits = predict_logits(teacher, splits.val, device=FAKE)
    assert acc == want_acc and torch.equal(logits, want_logits) and logits.device == CPU
    assert seen.cpu_convs == 0, "the model ran on the CPU, not on the device it was asked to run on"
    assert devices_of(teacher) == {CPU}


def test_logit_cache_built_on_the_device_and_uploaded_once(splits, teacher, cache):
    """Built from a CPU teacher on the device; many students reuse one device copy of it."""
    with fake_device() as seen:
        built = LogitCache.build(teacher, splits.train_plain, device=FAKE)
        cfg = DistillConfig(steps=2, batch_size=32, device=FAKE)
        for k in (1, 4, 7):
            distill(removed(teacher, k), splits.train_plain, cfg, logit_cache=cache)
    assert torch.equal(built.logits, cache.logits) and built.logits.device == CPU
    assert devices_of(teacher) == {CPU}
    assert seen.uploads_of(cache.logits.shape) == 1, "the logit cache was sent to the device once per student"
    pickle.loads(pickle.dumps(cache))  # workers get it: the device copy does not travel


def test_kd_on_the_device_gives_the_cpu_result_and_leaves_the_teacher_on_the_cpu(splits, teacher):
    cfg = DistillConfig(loss="ce+l2", steps=4, batch_size=32, keep_best=True)
    on_cpu = removed(teacher, 4)
    torch.manual_seed(0)  # the student's dropout draws
    want = distill(on_cpu, splits.train, cfg, teacher=teacher, val_data=splits.val)
    student = removed(teacher, 4)
    torch.manual_seed(0)
    with fake_device() as seen:
        got = distill(student, splits.train, replace(cfg, device=FAKE), teacher=teacher, val_data=splits.val)
    assert got.ok and got.val_accuracy == want.val_accuracy and got.losses == want.losses
    assert devices_of(student) == {FAKE} and _same_weights(student, on_cpu)
    assert devices_of(teacher) == {CPU}, "distill moved the caller's teacher and left it on the device"
    assert seen.cpu_convs == 0


def test_loaders_pin_memory_for_cuda_batches(splits, teacher, monkeypatch):
    assert loaders.make_loader(splits.val, 8, device="cuda").pin_memory
    assert not loaders.make_loader(splits.val, 8, device="cpu").pin_memory
    assert not loaders.make_loader(splits.val, 8).pin_memory
    seen = []
    real = loaders.make_loader

    def spy(*args, **kwargs):
        seen.append(kwargs.get("device"))
        return real(*args, **kwargs)

    monkeypatch.setattr(loaders, "make_loader", spy)
    for mod in ("n2n_fx.distill.trainer", "n2n_fx.distill.evaluate", "n2n_fx.distill.calibrate"):
        monkeypatch.setattr(f"{mod}.make_loader", spy)
    with fake_device():
        cfg = DistillConfig(steps=1, device=FAKE)
        distill(removed(teacher, 4), splits.train_plain, cfg, teacher=teacher, val_data=splits.val)
    assert seen and all(d is not None and torch.device(d) == FAKE for d in seen), seen


def test_teacher_training_on_the_device_gives_the_cpu_teacher(splits):
    recipe = replace(PRESETS["plateau"], epochs=1)
    models = []
    for device in (CPU, FAKE):
        torch.manual_seed(0)
        model = build_model("vgg_tiny", num_classes=10, in_channels=1)
        with fake_device() as seen:
            model, metrics = train_teacher(model, splits, recipe, seed=0, device=device)
        models.append((model, metrics))
    (cpu_model, cpu_m), (dev_model, dev_m) = models
    assert dev_m["val_accuracy"] == cpu_m["val_accuracy"] and _same_weights(cpu_model, dev_model)
    assert seen.cpu_convs == 0


def test_reward_cache_context_names_device_and_amp(splits, cache):
    def ctx(**kw):
        return RewardEvaluator(
            splits.train_plain,
            splits.val,
            teacher_accuracy=0.5,
            teacher_params=100,
            input_size=SIZE,
            config=DistillConfig(**kw),
            logit_cache=cache,
        ).context()

    assert ctx(device="cpu") != ctx(device="cuda")  # CPU float32 and GPU rewards never mix
    assert ctx(device="cuda", amp=True) != ctx(device="cuda", amp=False)  # nor bfloat16 and float32
    assert ctx(device="cuda:0") == ctx(device="cuda:1")  # workers on other GPUs share the cache
    assert ctx(device="cpu", amp=True) == ctx(device="cpu", amp=False)  # amp does nothing on the CPU
    with pytest.raises(Exception, match="device"):  # a cache file of a CPU run refuses a GPU run
        RewardCache(context=ctx(device="cpu")).bind(ctx(device="cuda"))


# -- the supernet ----------------------------------------------------------------------------------


def test_supernet_trained_on_the_device_equals_the_cpu_one_and_leaves_everything_on_the_cpu(splits, teacher, cache):
    cfg = SupernetConfig(steps=6, batch_size=32, seed=0, arch_reuse=2)
    want = Supernet(teacher)
    train_supernet(want, splits.train_plain, cache, cfg)
    # a tiny architecture cache: students are evicted and drawn again while training
    net = Supernet(teacher, cache_elements=1)
    with fake_device() as seen:
        train_supernet(net, splits.train_plain, cache, cfg, device=FAKE)
    assert torch.equal(net.flat.detach(), want.flat.detach())
    assert seen.cpu_convs == 0 and seen.uploads_of(cache.logits.shape) == 1
    assert net.flat.device == CPU
    for k in range(4):  # every student it hands out afterwards lives on the CPU, whole
        arch = net.arch(sample_actions(net, random.Random(k), 0.6))
        if arch.valid:
            assert devices_of(arch.template) == {CPU} and devices_of(net.extract(arch)) == {CPU}


def _evaluator(splits, cache, mode: str, device) -> RewardEvaluator:
    return RewardEvaluator(
        splits.train_plain,
        splits.val,
        teacher_accuracy=0.5,
        teacher_params=50_000,
        input_size=SIZE,
        config=DistillConfig(steps=3, batch_size=32, device=device),
        logit_cache=cache,
        mode=mode,
        calib_batches=2,
        supernet_tag=None if mode == "kd" else "t0",
    )


class _InProcess(ParallelExecutor):
    """The parallel executors' path (packets, a worker's evaluator copy, merge) in this process."""

    def _train(self, evaluator, tasks):
        worker = Trainer(evaluator_payload(evaluator), None, 1)
        return {i: worker.run(task) for i, task in tasks.items()}


@pytest.mark.parametrize("mode", ["kd", "shared", "shared+kd"])
@pytest.mark.parametrize("executor", [SequentialExecutor, _InProcess])
def test_rewards_on_the_device_equal_cpu_rewards(splits, teacher, cache, mode, executor):
    net = Supernet(teacher)

    def jobs():
        if mode == "kd":
            students = [removed(teacher, 1), removed(teacher, 4), "empty: every layer was removed"]
        else:
            archs = [net.arch({"remove": []}), net.arch({"remove": [], "shrink": {"features_0": 0.5}})]
            students = [net.extract(a) for a in archs]
        return [Job(s, step=0, seed=10 + k) for k, s in enumerate(students)]

    want = SequentialExecutor().evaluate(_evaluator(splits, cache, mode, "cpu"), jobs())
    with fake_device() as seen:
        got_jobs = jobs()
        got = executor().evaluate(_evaluator(splits, cache, mode, FAKE), got_jobs)
    assert [r.accuracy for r in got] == [r.accuracy for r in want]
    assert [r.reward for r in got] == [r.reward for r in want]
    assert seen.cpu_convs == 0, "a student was scored on the CPU"
    for job in got_jobs:
        if job.trained is not None:
            assert {v.device for v in job.trained.values()} == {CPU}


# -- whole runs ------------------------------------------------------------------------------------


def _history(d):
    keys = ("stage", "iteration", "rollout", "actions", "params", "accuracy", "reward", "cache_hit")
    return [{k: r[k] for k in keys} for r in map(json.loads, (d / "history.jsonl").read_text().splitlines())]


def _on_fake(monkeypatch):
    """Searches resolve their device to the fake one (config files cannot name it); the summary's
    latency column, a CPU measurement by design, is left out."""
    monkeypatch.setattr(SearchConfig, "resolved_device", lambda self: str(FAKE))
    monkeypatch.setattr("n2n_fx.search.summary.latency_ms", lambda *a, **k: 1.0)


MODES = {
    "kd": {},
    "shared": {"reward_mode": "shared", "supernet_steps": 4},
    "shared+kd": {"reward_mode": "shared+kd", "supernet_steps": 4},
}


@pytest.mark.parametrize("mode", list(MODES))
def test_search_on_the_device_is_the_cpu_search(tmp_path, monkeypatch, mode):
    """Teacher set-up, logit cache, supernet, rewards, final training: all on the device, same results."""
    cfg = SearchConfig(**tiny(removal_iterations=1, shrink_iterations=1, **MODES[mode]))
    monkeypatch.setenv("N2N_FX_CACHE", str(tmp_path / "cache_cpu"))
    monkeypatch.setattr("n2n_fx.search.summary.latency_ms", lambda *a, **k: 1.0)
    want = run_compress(cfg.replace(device="cpu"), tmp_path / "cpu", quiet=True)
    monkeypatch.setenv("N2N_FX_CACHE", str(tmp_path / "cache_dev"))  # the teacher is trained on the device too
    _on_fake(monkeypatch)
    with fake_device() as seen:
        got = run_compress(cfg, tmp_path / "dev", quiet=True)
    assert seen.cpu_convs == 0, "a model was trained or evaluated on the CPU"
    assert _history(tmp_path / "dev") == _history(tmp_path / "cpu")
    assert _summary_numbers(got) == _summary_numbers(want)
    assert devices_of(got.student) == {CPU} and _same_weights(got.student, want.student)


def _summary_numbers(result):
    s = copy.deepcopy(result.summary)
    for part in s.values():
        if isinstance(part, dict):
            # measured times, and the device the latency was measured on
            for k in [k for k in part if k.endswith("_s") or k in ("latency_ms", "latency_device")]:
                del part[k]
    return s


def test_compress_a_teacher_on_the_device_with_cpu_loaders(tmp_path, monkeypatch, splits, teacher):
    """The Python API with the user's teacher already on the device and CPU data loaders."""
    from torch.utils.data import DataLoader

    monkeypatch.setenv("N2N_FX_CACHE", str(tmp_path / "cache"))
    _on_fake(monkeypatch)
    with fake_device() as seen:
        model = copy.deepcopy(teacher).to(FAKE)
        res = compress(
            model,
            DataLoader(splits.train_plain, batch_size=32),
            DataLoader(splits.val, batch_size=32),
            run_dir=tmp_path / "run",
            removal_iterations=1,
            shrink_iterations=1,
            rollouts=2,
            reward_steps=2,
            final_epochs=1,
            batch_size=32,
            reward_mode="shared",
            supernet_steps=4,
            supernet_shrink_steps=4,
            reward_accuracy="ratio",  # an untrained teacher: above-chance rewards would refuse it
        )
    assert devices_of(model) == {FAKE}, "compress moved the user's teacher"
    assert devices_of(res.student) == {CPU}
    assert seen.cpu_convs == 0


def test_compress_cli_has_amp(tmp_path, monkeypatch):
    got = {}

    def fake_run(cfg, run_dir, **kw):
        got["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr("n2n_fx.cli.compress_cmd.run_compress", fake_run)
    with pytest.raises(SystemExit):
        main(["compress", "--amp", "--run-dir", str(tmp_path / "r")])
    assert got["cfg"].amp is True
