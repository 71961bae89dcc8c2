"""On a CUDA GPU: every model runs there, AMP agrees with float32, a CUDA teacher with CPU data
works, the local executor puts one worker on each GPU. Skipped without CUDA (CI has none);
``python -m benchmarks.gpu_check`` runs them on a lent GPU."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from _devices import cpu_compute, devices_of
from _tiny import removed, tiny
from torch.utils.data import DataLoader

from n2n_fx import trace
from n2n_fx.data import load_splits
from n2n_fx.data.loaders import make_loader
from n2n_fx.distill import DistillConfig, LogitCache, distill
from n2n_fx.reward import RewardEvaluator
from n2n_fx.search import SearchConfig, compress, run_compress
from n2n_fx.search.executors import Job, LocalExecutor, SequentialExecutor

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CPU = torch.device("cpu")
SIZE = (1, 16, 16)


@pytest.fixture(scope="module")
def splits():
    return load_splits("synthetic", num_samples=600, image_size=16, seed=0)


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return trace("vgg_tiny", input_size=SIZE).eval()


@pytest.fixture(scope="module")
def cache(splits, teacher):
    return LogitCache.build(teacher, splits.train_plain, device="cuda")


@pytest.fixture(autouse=True)
def _no_report_latency(monkeypatch, tmp_path):
    """The report's latency column is a CPU measurement by design: left out of the CPU-compute counts."""
    monkeypatch.setattr("n2n_fx.search.summary.latency_ms", lambda *a, **k: 1.0)
    monkeypatch.setenv("N2N_FX_CACHE", str(tmp_path / "cache"))


def _cpu_tensors_only(path) -> None:
    """Every tensor in a run file loads onto the CPU without a map_location."""

    def walk(obj):
        if isinstance(obj, torch.Tensor):
            assert obj.device == CPU, path
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v)

    walk(torch.load(path, weights_only=True))


@pytest.mark.parametrize("mode", ["kd", "shared", "shared+kd"])
def test_search_on_cuda_runs_every_model_there(tmp_path, mode):
    """Placement of every tensor: the run finishes (CUDA refuses mixed devices), no model runs on
    the CPU, the files hold CPU tensors and the student comes back on the CPU."""
    extra = {} if mode == "kd" else {"reward_mode": mode, "supernet_steps": 20, "supernet_shrink_steps": 20}
    cfg = SearchConfig(**tiny(**extra), device="cuda")
    with cpu_compute() as seen:
        res = run_compress(cfg, tmp_path / "run", quiet=True)
    assert seen.cpu_convs == 0, "a model was trained or evaluated on the CPU"
    assert devices_of(res.student) == {CPU}
    for name in ("checkpoint.pt", "student.pt", "teacher.pt", *(["supernet.pt"] if mode != "kd" else [])):
        _cpu_tensors_only(tmp_path / "run" / name)
    ctx = json.loads((tmp_path / "run" / "reward_cache.json").read_text())["context"]
    assert ctx["device"] == "cuda"


def test_logit_cache_is_uploaded_once_and_batches_are_pinned(splits, teacher, cache):
    assert next(iter(make_loader(splits.val, 8, device="cuda")))[0].is_pinned()
    first = cache.on("cuda")
    cfg = DistillConfig(steps=2, batch_size=32, device="cuda")
    for k in (4, 7):
        distill(removed(teacher, k), splits.train_plain, cfg, logit_cache=cache)
    assert cache.on("cuda") is first and first.is_cuda


def test_amp_on_and_off_agree(splits, teacher, cache):
    """bfloat16 autocast trains to the float32 result within a tolerance; the reward cache keeps them apart."""
    records, contexts = {}, {}
    for amp in (False, True):
        ev = RewardEvaluator(
            splits.train_plain,
            splits.val,
            teacher_accuracy=0.5,
            teacher_params=50_000,
            input_size=SIZE,
            config=DistillConfig(steps=60, lr=1e-2, batch_size=64, device="cuda", amp=amp),
            logit_cache=cache,
        )
        torch.manual_seed(0)
        records[amp] = ev(removed(teacher, 4))
        contexts[amp] = ev.context()
    off, on = records[False], records[True]
    assert on.degenerate is None and off.degenerate is None
    assert abs(on.accuracy - off.accuracy) <= 0.05, (on.accuracy, off.accuracy)
    assert abs(on.extra["losses"][-1] - off.extra["losses"][-1]) <= 0.1 * off.extra["losses"][-1] + 0.05
    assert contexts[True] != contexts[False]


def test_cuda_teacher_with_cpu_loaders(tmp_path, splits, teacher):
    model = copy.deepcopy(teacher).cuda()
    with cpu_compute() as seen:
        res = compress(
            model,
            DataLoader(splits.train_plain, batch_size=32),
            DataLoader(splits.val, batch_size=32),
            run_dir=tmp_path / "run",
            removal_iterations=2,
            shrink_iterations=1,
            rollouts=2,
            reward_steps=5,
            final_epochs=1,
            batch_size=32,
            device="cuda",
            supernet_steps=50,
            supernet_shrink_steps=50,
            reward_accuracy="ratio",  # an untrained teacher: above-chance rewards would refuse it
        )
    assert seen.cpu_convs == 0
    assert all(d.type == "cuda" for d in devices_of(model)), "compress moved the user's teacher"
    assert devices_of(res.student) == {CPU}


def test_local_executor_one_worker_per_gpu(splits, teacher, cache):
    def evaluator():
        return RewardEvaluator(
            splits.train_plain,
            splits.val,
            teacher_accuracy=0.5,
            teacher_params=50_000,
            input_size=SIZE,
            config=DistillConfig(steps=5, batch_size=32, device="cuda"),
            logit_cache=cache,
        )

    def jobs():
        return [Job(removed(teacher, k), step=0, seed=10 + k) for k in (1, 4, 7)]

    want = SequentialExecutor().evaluate(evaluator(), jobs())
    ex = LocalExecutor(SearchConfig(executor="local", workers=0))
    try:
        got_jobs = jobs()
        got = ex.evaluate(evaluator(), got_jobs)
        n = torch.cuda.device_count()
        assert ex._pool is not None and [s.device for s in ex._pool.slots] == [f"cuda:{k}" for k in range(n)]
    finally:
        ex.close()
    one_sample = 1 / len(splits.val)
    for a, b in zip(got, want, strict=True):  # GPU kernels may differ in the last bits between processes
        assert abs(a.accuracy - b.accuracy) <= one_sample + 1e-9
    for job in got_jobs:
        assert {v.device for v in job.trained.values()} == {CPU}
