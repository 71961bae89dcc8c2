"""Executors: local worker processes and Ray give what sequential evaluation gives, and survive
workers that raise or are killed."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from _tiny import tiny
from torch import nn

from n2n_fx import apply_actions, find_layers, trace
from n2n_fx.data import load_splits
from n2n_fx.degenerate import Reason
from n2n_fx.distill import DistillConfig, LogitCache
from n2n_fx.errors import ConfigError
from n2n_fx.reward import Constraints, Penalty, RewardCache, RewardEvaluator, count_params
from n2n_fx.search import SearchConfig
from n2n_fx.search.executors import (
    EXECUTORS,
    Job,
    LocalExecutor,
    SequentialExecutor,
    make_executor,
)

SIZE = (1, 16, 16)
# what a record must share with sequential evaluation (wall_s / train_s are timings)
FIELDS = (
    "reward",
    "raw_reward",
    "accuracy",
    "params",
    "flops",
    "compression",
    "degenerate",
    "violations",
    "epsilon",
    "step",
    "arch",
    "cache_hit",
)


class Killer(nn.Module):
    """A student whose forward kills the process running it (never the test process)."""

    def __init__(self) -> None:
        super().__init__()
        self.home = os.getpid()  # the process that built it: the test itself
        self.linear = nn.Linear(SIZE[1] * SIZE[2], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if os.getpid() == self.home:
            raise RuntimeError("Killer must not run in the test process")
        os.kill(os.getpid(), signal.SIGKILL)
        return self.linear(x.flatten(1))


class Hog(nn.Module):
    """A student whose forward runs out of memory (MemoryError escapes the KD trainer)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(SIZE[1] * SIZE[2], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise MemoryError("cannot allocate 1 TiB")


@pytest.fixture(scope="module")
def setup():
    splits = load_splits("synthetic", num_samples=300, image_size=16, seed=0)
    torch.manual_seed(0)
    teacher = trace("vgg_tiny", input_size=SIZE).eval()
    cache = LogitCache.build(teacher, splits.train_plain)
    return splits, teacher, cache


def _evaluator(setup) -> RewardEvaluator:
    """Built like ``Search._evaluator``, with a tiny budget and an annealed constraint."""
    splits, teacher, cache = setup
    params = count_params(teacher)
    return RewardEvaluator(
        splits.train_plain,
        splits.val,
        teacher_accuracy=0.5,
        teacher_params=params,
        input_size=SIZE,
        config=DistillConfig(loss="l2", steps=3, batch_size=32, seed=0),
        logit_cache=cache,
        constraints=Constraints.from_limits(max_params=params * 0.97),
        penalty=Penalty("anneal", "linear", horizon=10),
        cache=RewardCache(),
    )


def _student(setup, *remove: str) -> nn.Module:
    teacher = setup[1]
    layers = [lay.node for lay in find_layers(teacher)]
    r = apply_actions(teacher, remove=[layers[i] for i in map(int, remove)], strict=False)
    assert r.valid
    return r.student


def _jobs(setup, spec: list) -> list[Job]:
    """Jobs from a compact spec: tuples of layer positions to remove, or a reason string."""
    out = []
    for k, s in enumerate(spec):
        student = s if isinstance(s, str) else _student(setup, *s)
        out.append(Job(student, step=2, seed=1000 + k))
    return out


def _same(a, b) -> None:
    for name in FIELDS:
        assert getattr(a, name) == getattr(b, name), name
    assert a.extra == b.extra  # per-epoch losses: the same float sums


def _check_weights(seq_jobs: list[Job], par_jobs: list[Job]) -> None:
    for s, p in zip(seq_jobs, par_jobs, strict=True):
        if not isinstance(s.student, nn.Module):
            continue
        got = p.student.state_dict()
        for k, v in s.student.state_dict().items():
            assert torch.equal(v, got[k]), k


BATCH1 = [("1",), ("4",), "empty: every layer was removed", ("1",), ("7", "9")]
BATCH2 = [("4",), ("12",)]


@pytest.fixture(scope="module")
def local():
    ex = LocalExecutor(SearchConfig(executor="local", workers=2), threads=1)
    yield ex
    ex.close()


@pytest.fixture
def one_thread():
    """Sequential evaluation with the workers' thread count: then results are bit-identical."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_local_gives_what_sequential_gives(setup, local, one_thread):
    seq_ev, par_ev = _evaluator(setup), _evaluator(setup)
    seq = SequentialExecutor()
    for spec in (BATCH1, BATCH2):
        seq_jobs, par_jobs = _jobs(setup, spec), _jobs(setup, spec)
        expected = seq.evaluate(seq_ev, seq_jobs)
        rng = torch.get_rng_state()
        got = local.evaluate(par_ev, par_jobs)
        assert torch.equal(rng, torch.get_rng_state())  # the generator ends where sequential's does
        assert len(got) == len(spec)
        for a, b in zip(expected, got, strict=True):
            _same(a, b)
        _check_weights(seq_jobs, par_jobs)
        for j, r in zip(par_jobs, got, strict=True):  # trained weights come back, CPU tensors
            assert (j.trained is not None) == (isinstance(j.student, nn.Module) and not r.cache_hit)
        assert list(seq_ev.cache) == list(par_ev.cache)
        for key in seq_ev.cache:
            a, b = seq_ev.cache.get(key), par_ev.cache.get(key)
            for d in (a, b):
                d.pop("wall_s"), d.pop("train_s")
            assert a == b
    # the repeat inside batch 1 and the already-scored architecture of batch 2 are cache hits
    assert [r.cache_hit for r in got] == [True, False]


def test_local_worker_killed(setup, local, one_thread):
    ev, ref_ev = _evaluator(setup), _evaluator(setup)
    jobs = [
        Job(_student(setup, "2"), 2, 5),
        Job(Killer(), 2, 6),
        Job(Killer(), 2, 7),  # the same architecture as the killer before it
        Job(_student(setup, "5"), 2, 9),
    ]
    records = local.evaluate(ev, jobs)
    assert records[1].degenerate.reason is Reason.FAILED
    assert str(records[1].degenerate).startswith("failed: worker process killed by SIGKILL")
    assert records[1].reward == -1.0 and records[1].params == count_params(Killer())
    assert records[2].degenerate == records[1].degenerate  # a repeat of the failed job
    ref = [Job(_student(setup, "2"), 2, 5), Job(_student(setup, "5"), 2, 9)]
    expected = SequentialExecutor().evaluate(ref_ev, ref)
    _same(records[0], expected[0])
    _same(records[3], expected[1])
    assert jobs[0].trained is not None and jobs[1].trained is None
    assert len(ev.cache) == 2  # failures are not cached: a later batch tries again
    # the pool was rebuilt: the next batch trains normally
    after = local.evaluate(ev, _jobs(setup, [("3",), ("2",)]))
    assert not after[0].is_degenerate and not after[0].cache_hit
    assert after[1].cache_hit


class Buggy(nn.Module):
    """A student whose forward has a bug (a KeyError): it must fail loudly, not score -1."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(SIZE[1] * SIZE[2], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1)) * {}["missing"]


@pytest.mark.parametrize("student", [Hog, Buggy])
def test_local_raises_what_sequential_raises(setup, local, one_thread, student):
    """An exception while evaluating a student propagates from every executor, at that job."""
    with pytest.raises(Exception) as seq:  # noqa: PT011  (whatever sequential raises)
        SequentialExecutor().evaluate(_evaluator(setup), [Job(student(), 2, 8)])
    assert "1 TiB" in str(seq.value) or "missing" in str(seq.value)
    ev = _evaluator(setup)
    jobs = [Job(_student(setup, "2"), 2, 5), Job(student(), 2, 8), Job(_student(setup, "5"), 2, 9)]
    with pytest.raises(type(seq.value)) as info:
        local.evaluate(ev, jobs)
    assert str(info.value) == str(seq.value)
    assert any("raised in an executor worker" in n for n in getattr(info.value, "__notes__", []))
    assert len(ev.cache) == 1  # the job before it was stored, as sequential would have
    after = local.evaluate(ev, _jobs(setup, [("3",)]))  # the pool still works
    assert not after[0].is_degenerate


def test_sequential_trains_with_rollout_threads_and_restores_the_setting(setup):
    evaluator, jobs = _evaluator(setup), _jobs(setup, [("1",), ("4",)])
    torch.set_num_threads(2)  # the process setting differs from rollout_threads
    before = torch.get_num_threads()
    seen = []

    class Spy:
        def __call__(self, student, step):
            seen.append(torch.get_num_threads())
            return evaluator(student, step=step)

    ex = make_executor(SearchConfig(rollout_threads=1))
    assert isinstance(ex, SequentialExecutor) and ex.threads == 1
    ex.evaluate(Spy(), jobs)
    assert seen == [1, 1] and torch.get_num_threads() == before == 2
    with pytest.raises(ConfigError, match="rollout_threads"):
        SearchConfig(rollout_threads=0)


def test_make_executor_and_errors(monkeypatch):
    assert isinstance(make_executor(SearchConfig()), SequentialExecutor)
    ex = make_executor(SearchConfig(executor="local", workers=3))
    assert isinstance(ex, LocalExecutor) and ex.workers == 3
    ex.close()
    assert set(EXECUTORS) == {"sequential", "local", "ray"}
    with pytest.raises(ConfigError, match="unknown executor 'gpu'"):
        make_executor(SearchConfig(executor="gpu"))
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError, match=r"pip install 'n2n-fx\[ray\]'"):
        make_executor(SearchConfig(executor="ray"))


def test_local_unpicklable_evaluator_is_a_config_error(setup):
    ev = _evaluator(setup)
    ev.val_data = _Unpicklable()
    ex = LocalExecutor(SearchConfig(workers=1))
    with pytest.raises(ConfigError, match="cannot be sent to workers"):
        ex.evaluate(ev, _jobs(setup, [("1",)]))
    ex.close()


class _Unpicklable:
    def __reduce__(self):
        raise TypeError("not today")


# -- Ray ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_executor():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'n2n-fx[ray]')")
    from n2n_fx.search.executors import RayExecutor

    here = str(Path(__file__).resolve().parent)  # workers import this module (Killer)
    path = os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    ex = RayExecutor(SearchConfig(executor="ray", workers=2), threads=1)
    yield ex
    ex.close()
    ray.shutdown()


def test_ray_gives_what_sequential_gives(setup, ray_executor, one_thread):
    seq_ev, par_ev = _evaluator(setup), _evaluator(setup)
    seq_jobs, par_jobs = _jobs(setup, BATCH1), _jobs(setup, BATCH1)
    expected = SequentialExecutor().evaluate(seq_ev, seq_jobs)
    got = ray_executor.evaluate(par_ev, par_jobs)
    for a, b in zip(expected, got, strict=True):
        _same(a, b)
    _check_weights(seq_jobs, par_jobs)
    assert list(seq_ev.cache) == list(par_ev.cache)


@pytest.mark.slow
def test_ray_survives_a_killed_actor(setup, ray_executor):
    ev = _evaluator(setup)
    jobs = [Job(Killer(), 2, 7), *_jobs(setup, [("5",)])]
    records = ray_executor.evaluate(ev, jobs)
    assert str(records[0].degenerate).startswith("failed: worker process died")
    assert records[0].reward == -1.0
    assert not records[1].is_degenerate
    after = ray_executor.evaluate(ev, _jobs(setup, [("3",), ("6",)]))
    assert not any(r.is_degenerate for r in after)


# -- a whole search -------------------------------------------------------------------------------


@pytest.mark.slow
def test_search_with_local_executor_matches_sequential(tmp_path, monkeypatch):
    from n2n_fx.search import run_compress

    monkeypatch.setenv("N2N_FX_CACHE", str(tmp_path / "cache"))
    cfg = SearchConfig(
        **tiny(rollouts=3, reward_steps=5),
        device="cpu",
        rollout_threads=1,  # every executor trains each student with 1 thread: bit-identical results
    )
    seq = run_compress(cfg, tmp_path / "seq", quiet=True)
    par = run_compress(cfg.replace(executor="local", workers=2), tmp_path / "par", quiet=True)
    keys = ("stage", "iteration", "actions", "params", "accuracy", "reward", "cache_hit")
    rows = [[{k: r[k] for k in keys} for r in res.history] for res in (seq, par)]
    assert len(rows[0]) == 2 * 3 + 2 * 3 and rows[0] == rows[1]
    # the best students' weights came back from the workers: the final students are the same
    got = par.student.state_dict()
    assert all(torch.equal(v, got[k]) for k, v in seq.student.state_dict().items())
