"""Executors: who trains the m students of an iteration (in this process, in local worker
processes, or on a Ray cluster).

An executor's ``evaluate(evaluator, jobs)`` returns one ``RewardRecord`` per ``Job``, in
order, exactly as evaluating them one after the other in this process would
(``SequentialExecutor``). The parallel executors keep that promise this way:

* the main process decides which jobs need training: a degenerate job (a reason string), a
  student without trainable parameters, a student whose architecture hash is already in
  ``evaluator.cache`` or repeats an earlier job's of the same batch are all scored in the
  main process, after the trained ones, in job order, so they are cache hits exactly where
  sequential evaluation has them;
* every other student travels as a *packet*: its weights by name (a state_dict that also
  holds non-persistent buffers) and a weightless pickle of the module that refers to them
  (the rebuild spec); a worker rebuilds it, sets ``torch.manual_seed(job.seed)`` and calls
  its copy of the evaluator, which got the data sets, the teacher-logit cache and the
  configuration once, when the worker started;
* the worker returns the record, the unscored cache entry and the trained weights; the
  main process stores the entries in ``evaluator.cache`` in job order, loads the weights
  into ``job.student`` and sets ``job.trained``.

An exception raised while a worker evaluates a student propagates exactly as under
``SequentialExecutor``: the main process re-raises it (the same type, the worker's
traceback in its notes) at that job, after storing the results of the jobs before it. Only
a worker *process* that dies (killed, e.g. by the out-of-memory killer, or lost with its
node) fails its own job alone: that record is degenerate with reason ``"failed: <why>"``
(reward −1), the worker is replaced, and the other jobs of the batch keep their results.
"""

from __future__ import annotations

import contextlib
import copy
import io
import multiprocessing as mp
import os
import pickle
import signal
import weakref
from collections import deque
from dataclasses import dataclass, replace
from multiprocessing.connection import wait
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..reward import RewardCache, RewardEvaluator, RewardRecord, count_params

__all__ = [
    "Job",
    "Executor",
    "SequentialExecutor",
    "ParallelExecutor",
    "LocalExecutor",
    "RayExecutor",
    "make_executor",
    "EXECUTORS",
]

RAY_HINT = "pip install 'n2n-fx[ray]'"


@dataclass
class Job:
    """One student to score."""

    student: Any  # the student nn.Module, or a degenerate reason (str)
    step: int  # search iteration t (anneals the constraint penalty)
    seed: int  # torch seed set before its training, so any worker reproduces it
    # weights after training (CPU state_dict), set by executors that train elsewhere
    trained: dict[str, torch.Tensor] | None = None


class Executor:
    """Scores jobs; subclasses may do so in parallel but must return what sequential would."""

    name = "base"
    on_done = None  # optional callback after each scored job (executors that can report it call it)

    def evaluate(self, evaluator: RewardEvaluator, jobs: list[Job]) -> list[RewardRecord]:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers (no-op for in-process executors)."""


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads (None: leave the setting alone)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SequentialExecutor(Executor):
    """Train the students one after the other in this process (the default).

    ``threads``: torch threads while training (None: this process's setting). Parallel
    executors given the same count return bit-identical results.
    """

    name = "sequential"

    def __init__(self, cfg: Any = None, *, threads: int | None = None) -> None:
        self.threads = threads if threads is not None else getattr(cfg, "rollout_threads", None)

    def evaluate(self, evaluator: RewardEvaluator, jobs: list[Job]) -> list[RewardRecord]:
        out = []
        with _torch_threads(self.threads):
            for job in jobs:
                torch.manual_seed(job.seed)
                out.append(evaluator(job.student, step=job.step))
                if self.on_done is not None:
                    self.on_done()  # one student scored (progress bars)
        return out


# -- students as packets: weights by name + a weightless pickle ---------------------------------


class _SpecPickler(pickle.Pickler):
    """Pickles a module with every parameter and buffer replaced by a reference to its name."""

    def __init__(self, file: io.BytesIO, refs: dict[int, tuple]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.refs = refs

    def persistent_id(self, obj: Any) -> tuple | None:
        return self.refs.get(id(obj)) if isinstance(obj, torch.Tensor) else None


class _SpecUnpickler(pickle.Unpickler):
    """Rebuilds the module, creating each referenced tensor once (tied weights stay tied)."""

    def __init__(self, file: io.BytesIO, weights: dict[str, torch.Tensor]) -> None:
        super().__init__(file)
        self.weights = weights
        self.made: dict[str, torch.Tensor] = {}

    def persistent_load(self, pid: tuple) -> torch.Tensor:
        kind, name = pid[0], pid[1]
        if name not in self.made:
            t = self.weights[name]
            self.made[name] = nn.Parameter(t, requires_grad=pid[2]) if kind == "param" else t
        return self.made[name]


def _pack(student: nn.Module) -> tuple[bytes, dict[str, torch.Tensor]]:
    """(rebuild spec, weights): a pickle of ``student`` without tensors, and its tensors by name."""
    refs: dict[int, tuple] = {}
    weights: dict[str, torch.Tensor] = {}
    for name, p in student.named_parameters(remove_duplicate=False):
        if id(p) not in refs:
            refs[id(p)] = ("param", name, p.requires_grad)
            weights[name] = p.detach().cpu()
    for name, b in student.named_buffers(remove_duplicate=False):
        if id(b) not in refs:
            refs[id(b)] = ("buffer", name)
            weights[name] = b.detach().cpu()
    buf = io.BytesIO()
    _SpecPickler(buf, refs).dump(student)
    return buf.getvalue(), weights


def _unpack(spec: bytes, weights: dict[str, torch.Tensor]) -> nn.Module:
    """The module ``_pack`` described, with its weights."""
    return _SpecUnpickler(io.BytesIO(spec), weights).load()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


# -- the worker side ------------------------------------------------------------------------------


def _evaluator_payload(evaluator: RewardEvaluator) -> bytes:
    """The evaluator as workers get it: no reward cache (the main process owns it), no
    DataLoader worker processes (the workers are the parallelism)."""
    ev = copy.copy(evaluator)
    ev.cache = RewardCache()
    ev.config = replace(ev.config, num_workers=0)
    try:
        return pickle.dumps(ev, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:  # e.g. a data set holding a lambda or an open file
        raise ConfigError(
            f"the reward evaluator cannot be sent to workers ({_first_line(e)}); use --executor sequential"
        ) from None


class _Trainer:
    """Lives in a worker: holds the evaluator copy and trains one packed student per call."""

    def __init__(self, payload: bytes, device: str | None, threads: int) -> None:
        torch.set_num_threads(max(1, threads))
        with contextlib.suppress(RuntimeError):  # already set in this process
            torch.set_num_interop_threads(1)
        self.evaluator: RewardEvaluator = pickle.loads(payload)
        if device is not None:  # "cuda:k": the pool's GPU k, or the one GPU Ray made visible
            torch.cuda.set_device(torch.device(device))
            self.evaluator.config = replace(self.evaluator.config, device=device)

    def run(self, task: bytes) -> tuple[str, Any]:
        """("ok", (record, cache entry, trained weights, rng state)) or ("raise", exception).

        The evaluator's exceptions are not turned into degenerate records: they go back to the
        main process, which raises them where sequential evaluation would have raised them.
        """
        try:
            spec, weights, seed, step = pickle.loads(task)
            student = _unpack(spec, weights)
            self.evaluator.cache = RewardCache()  # never a hit: the main process decided
            torch.manual_seed(seed)
            record = self.evaluator(student, step=step)
        except Exception as e:  # sent back and re-raised by the main process (not swallowed)
            return "raise", _portable(e)
        entry = self.evaluator.cache.get(record.arch) if record.arch else None
        trained = {k: v.detach().cpu() for k, v in student.state_dict().items()}
        return "ok", (record, entry, trained, torch.get_rng_state())


class WorkerError(RuntimeError):
    """An exception a worker raised that could not be sent back as itself (its text and traceback)."""


def _portable(e: BaseException) -> BaseException:
    """``e`` if it survives pickling, else a ``WorkerError`` carrying its type, message and traceback."""
    import traceback

    tb = "".join(traceback.format_exception(e))
    try:
        pickle.loads(pickle.dumps(e))
    except Exception:  # any pickling failure: send its text instead
        return WorkerError(f"{type(e).__name__}: {e}\n{tb}")
    e.__notes__ = [*getattr(e, "__notes__", []), f"raised in an executor worker:\n{tb}"]
    return e


def _worker_main(conn, payload: bytes, device: str | None, threads: int) -> None:
    """Local worker process: start a ``_Trainer``, then answer tasks until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the search; it stops the pool
    try:
        trainer = _Trainer(payload, device, threads)
    except Exception as e:
        conn.send_bytes(pickle.dumps((None, "init", _first_line(e))))
        return
    conn.send_bytes(pickle.dumps((None, "ready", None)))
    while True:
        try:
            msg = conn.recv_bytes()
        except (EOFError, OSError):  # the main process went away
            return
        if not msg:
            return
        index, task = pickle.loads(msg)
        status, result = trainer.run(task)
        conn.send_bytes(pickle.dumps((index, status, result), protocol=pickle.HIGHEST_PROTOCOL))


def _death(exitcode: int | None) -> str:
    """Why a worker process ended, in words."""
    if exitcode is None:
        return "worker process stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = ", e.g. out of memory" if -exitcode == signal.SIGKILL else ""
        return f"worker process killed by {name}{hint}"
    return f"worker process exited with code {exitcode}"


# -- the main side: plan, train elsewhere, merge --------------------------------------------------


class ParallelExecutor(Executor):
    """Base of executors that train elsewhere: decides what to train, merges results in order.

    Subclasses implement ``_train(evaluator, tasks)``: ``tasks`` maps job positions to
    packed tasks; the answer maps each position to ``("ok", result)``, ``("raise", exception)``
    (re-raised in job order) or ``("error", why)`` (the worker process died: a failed job).
    """

    name = "parallel"

    def _train(self, evaluator: RewardEvaluator, tasks: dict[int, bytes]) -> dict[int, tuple[str, Any]]:
        raise NotImplementedError

    def evaluate(self, evaluator: RewardEvaluator, jobs: list[Job]) -> list[RewardRecord]:
        keys: list[str | None] = []
        tasks: dict[int, bytes] = {}
        first: set[str] = set()
        for i, job in enumerate(jobs):
            st = job.student
            if not isinstance(st, nn.Module) or count_params(st) == 0:
                keys.append(None)  # scored in this process, like sequential does
                continue
            key = evaluator.key(st)
            keys.append(key)
            if key in first or key in evaluator.cache:
                continue  # a cache hit once the earlier jobs are stored
            first.add(key)
            evaluator.cache.misses += 1  # the lookup sequential evaluation makes
            spec, weights = _pack(st)
            tasks[i] = pickle.dumps((spec, weights, job.seed, job.step), protocol=pickle.HIGHEST_PROTOCOL)
        results = self._train(evaluator, tasks) if tasks else {}
        records: list[RewardRecord] = []
        failed: dict[str, str] = {}
        for i, job in enumerate(jobs):
            key = keys[i]
            if i in tasks:
                status, result = results.get(i, ("error", "no answer from the worker"))
                if status == "ok":
                    record, entry, trained, rng = result
                    if entry is not None:
                        entry["arch"] = key
                        evaluator.cache.put(key, entry)
                    job.student.load_state_dict(trained, strict=False)
                    job.trained = trained
                    torch.set_rng_state(rng)  # where sequential evaluation leaves the generator
                    records.append(replace(record, arch=key))
                    continue
                if status == "raise":  # where sequential evaluation would raise it
                    raise result
                failed[key] = f"failed: {result}"
            if key is not None and key in failed:  # the job, or a repeat of a job, that failed
                torch.manual_seed(job.seed)
                rec = evaluator(failed[key], step=job.step)
                records.append(replace(rec, params=count_params(job.student), arch=key))
                continue
            torch.manual_seed(job.seed)
            records.append(evaluator(job.student, step=job.step))
        return records


def _auto_workers(cuda: bool) -> int:
    if cuda:
        return max(1, torch.cuda.device_count())
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _uses_cuda(evaluator: RewardEvaluator) -> bool:
    return str(evaluator.config.device).startswith("cuda") and torch.cuda.is_available()


class _Slot:
    """One local worker process and the job it is running."""

    def __init__(self, index: int, device: str | None) -> None:
        self.index = index
        self.device = device
        self.process: Any = None
        self.conn: Any = None
        self.job: int | None = None


class _ProcessPool:
    """Worker processes that started with one evaluator payload; a dead one is replaced."""

    def __init__(self, ctx: Any, size: int, payload: bytes, devices: list[str | None], threads: int) -> None:
        self.ctx = ctx
        self.payload = payload
        self.threads = threads
        self.slots = [_Slot(i, devices[i % len(devices)]) for i in range(size)]

    def _start(self, slot: _Slot) -> None:
        parent, child = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(
            target=_worker_main,
            args=(child, self.payload, slot.device, self.threads),
            name=f"n2n-fx-worker-{slot.index}",
            daemon=True,
        )
        proc.start()
        child.close()
        slot.process, slot.conn, slot.job = proc, parent, None

    def _stop(self, slot: _Slot) -> None:
        if slot.conn is not None:
            slot.conn.close()
        if slot.process is not None:
            slot.process.join(timeout=1)
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join(timeout=5)
        slot.process = slot.conn = slot.job = None

    def _dead(self, slot: _Slot, results: dict[int, tuple[str, Any]]) -> None:
        slot.process.join(timeout=5)
        if slot.job is not None:
            results[slot.job] = ("error", _death(slot.process.exitcode))
        self._stop(slot)
        self._start(slot)

    def _read(self, slot: _Slot, results: dict[int, tuple[str, Any]]) -> None:
        """Take every message the slot's worker has sent; replace the worker if it died."""
        try:
            while slot.conn.poll():
                index, status, result = pickle.loads(slot.conn.recv_bytes())
                if status == "init":
                    self.close()
                    raise ConfigError(f"local executor workers cannot start ({result}); use --executor sequential")
                if status != "ready" and index == slot.job:
                    results[index] = (status, result)
                    slot.job = None
                    return
        except (EOFError, OSError):
            pass
        if not slot.process.is_alive():
            self._dead(slot, results)

    def run(self, tasks: dict[int, bytes]) -> dict[int, tuple[str, Any]]:
        results: dict[int, tuple[str, Any]] = {}
        queue = deque(tasks.items())
        while queue or any(s.job is not None for s in self.slots):
            for slot in self.slots:
                if not queue:
                    break
                if slot.job is not None:
                    continue
                if slot.process is None or not slot.process.is_alive():
                    self._stop(slot)
                    self._start(slot)
                index, task = queue.popleft()
                slot.job = index
                try:
                    slot.conn.send_bytes(pickle.dumps((index, task), protocol=pickle.HIGHEST_PROTOCOL))
                except (BrokenPipeError, OSError):
                    self._dead(slot, results)
            busy = {s.conn: s for s in self.slots if s.job is not None}
            busy.update({s.process.sentinel: s for s in self.slots if s.job is not None})
            if busy:
                for obj in wait(list(busy)):
                    slot = busy[obj]
                    if slot.job is not None:
                        self._read(slot, results)
        return results

    def close(self) -> None:
        for slot in self.slots:
            if slot.conn is not None:
                with contextlib.suppress(OSError):  # the worker is already gone
                    slot.conn.send_bytes(b"")
            self._stop(slot)


class LocalExecutor(ParallelExecutor):
    """Train the students of an iteration in a pool of local worker processes.

    ``cfg.workers`` processes (0 or less: one per CPU core, or one per GPU when the
    evaluator trains on CUDA; each worker then owns GPU ``k mod #GPUs``); each uses
    ``threads`` torch threads (default ``cfg.rollout_threads``, else ``cores // workers``, so
    the pool does not oversubscribe the CPU). Records, cache entries and trained weights are
    bit-identical to sequential evaluation run with the same number of torch threads (set
    ``rollout_threads`` in the config to get that for a whole search); with another count,
    float sums are reduced in another order, so weights may differ in the last bits (and,
    rarely, an accuracy by a sample). The evaluator reaches each worker once, when it starts;
    a new evaluator object restarts the pool (changes made to the same object later are not
    seen: call ``close()``). ``start_method``: ``forkserver`` (default where available: torch
    is imported once, restarts are fast, CUDA-safe) or ``spawn``; both re-import the main
    script in workers, so scripts need the ``if __name__ == "__main__":`` guard.
    """

    name = "local"

    def __init__(self, cfg: Any = None, *, threads: int | None = None, start_method: str | None = None) -> None:
        self.workers = int(getattr(cfg, "workers", 0) or 0)
        self.threads = threads if threads is not None else getattr(cfg, "rollout_threads", None)
        methods = mp.get_all_start_methods()
        self.start_method = start_method or ("forkserver" if "forkserver" in methods else "spawn")
        if self.start_method not in methods:
            raise ConfigError(f"start method {self.start_method!r} is not one of {', '.join(methods)}")
        self._pool: _ProcessPool | None = None
        self._owner: Any = None  # weak reference to the evaluator the pool was started with
        self._finalizer = weakref.finalize(self, LocalExecutor._close_pool, [None])

    @staticmethod
    def _close_pool(holder: list) -> None:
        if holder[0] is not None:
            holder[0].close()

    def _pool_for(self, evaluator: RewardEvaluator) -> _ProcessPool:
        if self._pool is not None and self._owner is not None and self._owner() is evaluator:
            return self._pool
        self.close()
        cuda = _uses_cuda(evaluator)
        size = self.workers if self.workers > 0 else _auto_workers(cuda)
        devices: list[str | None] = [f"cuda:{k}" for k in range(torch.cuda.device_count())] if cuda else [None]
        threads = self.threads or max(1, _auto_workers(False) // size)
        ctx = mp.get_context(self.start_method)
        if self.start_method == "forkserver":
            ctx.set_forkserver_preload([__name__])  # torch is imported once, in the server
        self._pool = _ProcessPool(ctx, size, _evaluator_payload(evaluator), devices, threads)
        self._owner = weakref.ref(evaluator)
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, LocalExecutor._close_pool, [self._pool])
        return self._pool

    def _train(self, evaluator: RewardEvaluator, tasks: dict[int, bytes]) -> dict[int, tuple[str, Any]]:
        try:
            return self._pool_for(evaluator).run(tasks)
        except BaseException:  # a worker could not start, or Ctrl-C: do not leave workers behind
            self.close()
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        self._pool = self._owner = None


class RayExecutor(ParallelExecutor):
    """Train the students of an iteration on Ray actors (a local Ray or a cluster).

    Connects with ``ray.init(address=cfg.ray_address)`` unless Ray is already initialised
    (``None``: Ray's own rule, i.e. ``RAY_ADDRESS``, the latest local cluster, or a new
    local instance; ``"auto"``: an existing cluster only). ``cfg.workers`` actors (0 or less:
    one per cluster GPU when the evaluator trains on CUDA, else one per cluster CPU), each
    reserving ``num_cpus`` = ``threads`` (default cluster CPUs // workers, at most the
    largest node's) and one GPU on CUDA; results match sequential evaluation as for
    ``LocalExecutor`` (bit-identical at equal torch thread counts). The evaluator is put
    into the object store once; each actor loads it once. Students travel as weights +
    rebuild spec, so every node must be able to import ``n2n_fx`` and any custom module
    class the students use.
    """

    name = "ray"

    def __init__(self, cfg: Any = None, *, threads: int | None = None, **init_kwargs: Any) -> None:
        """``init_kwargs`` go to ``ray.init`` when this executor starts Ray."""
        try:
            import ray
        except ImportError:
            raise ConfigError(f"the ray executor needs Ray: {RAY_HINT}") from None
        self.ray = ray
        self.workers = int(getattr(cfg, "workers", 0) or 0)
        self.threads = threads if threads is not None else getattr(cfg, "rollout_threads", None)
        self._started = False
        if not ray.is_initialized():
            address = getattr(cfg, "ray_address", None)
            try:
                ray.init(address=address, **init_kwargs)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise ConfigError(f"cannot connect to Ray at {address!r}: {_first_line(e)}") from None
            self._started = True
        self._actors: list[Any] = []
        self._size = 1
        self._owner: Any = None
        self._payload_ref: Any = None
        self._options: dict[str, Any] = {}

    def _resources(self, cuda: bool) -> tuple[int, dict[str, Any]]:
        total = self.ray.cluster_resources()
        cpus = int(total.get("CPU", 1))
        gpus = int(total.get("GPU", 0))
        cuda = cuda and gpus > 0
        size = self.workers if self.workers > 0 else (gpus if cuda else cpus)
        biggest = max(
            (int(n.get("Resources", {}).get("CPU", 0)) for n in self.ray.nodes() if n.get("Alive")),
            default=cpus,
        )
        threads = self.threads or max(1, min(cpus // max(1, size), biggest))
        return max(1, size), {"num_cpus": threads, "num_gpus": 1 if cuda else 0, "threads": threads}

    def _new_actor(self) -> Any:
        opts = dict(self._options)
        threads = opts.pop("threads")
        device = "cuda:0" if opts["num_gpus"] else None  # the GPU Ray made visible
        remote = self.ray.remote(_Trainer).options(max_restarts=0, max_task_retries=0, **opts)
        return remote.remote(self._payload_ref, device, threads)

    def _actors_for(self, evaluator: RewardEvaluator, n_tasks: int) -> list[Any]:
        if self._owner is None or self._owner() is not evaluator:
            self._kill_actors()
            size, self._options = self._resources(_uses_cuda(evaluator))
            self._size = size
            self._payload_ref = self.ray.put(_evaluator_payload(evaluator))
            self._owner = weakref.ref(evaluator)
        while len(self._actors) < min(self._size, n_tasks):
            self._actors.append(self._new_actor())
        return self._actors

    def _train(self, evaluator: RewardEvaluator, tasks: dict[int, bytes]) -> dict[int, tuple[str, Any]]:
        ray = self.ray
        actors = self._actors_for(evaluator, len(tasks))
        results: dict[int, tuple[str, Any]] = {}
        queue = deque(tasks.items())
        idle = list(range(len(actors)))
        inflight: dict[Any, tuple[int, int]] = {}  # object ref -> (actor slot, job position)
        while queue or inflight:
            while queue and idle:
                slot = idle.pop()
                index, task = queue.popleft()
                inflight[actors[slot].run.remote(task)] = (slot, index)
            done, _ = ray.wait(list(inflight), num_returns=1)
            for ref in done:
                slot, index = inflight.pop(ref)
                try:
                    results[index] = ray.get(ref)
                except ray.exceptions.RayError as e:  # actor died (killed, out of memory, node lost)
                    if not isinstance(e, ray.exceptions.RayActorError):
                        results[index] = ("raise", e)  # not a lost worker: propagates like sequential
                        idle.append(slot)
                        continue
                    why = _first_line(e).split(": ", 1)[-1]
                    results[index] = ("error", f"worker process died ({why})")
                    with contextlib.suppress(Exception):  # already gone
                        ray.kill(actors[slot])
                    actors[slot] = self._new_actor()
                idle.append(slot)
        return results

    def _kill_actors(self) -> None:
        for actor in self._actors:
            with contextlib.suppress(Exception):  # already gone
                self.ray.kill(actor)
        self._actors = []

    def close(self) -> None:
        self._kill_actors()
        self._owner = self._payload_ref = None
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
            self._started = False


EXECUTORS = {"sequential": SequentialExecutor, "local": LocalExecutor, "ray": RayExecutor}


def make_executor(cfg: Any) -> Executor:
    """The executor a SearchConfig asks for (``executor`` field, default sequential)."""
    name = getattr(cfg, "executor", "sequential")
    cls = EXECUTORS.get(name)
    if cls is None:
        raise ConfigError(f"unknown executor {name!r}; use one of {', '.join(sorted(EXECUTORS))}")
    return cls(cfg)
