"""The Ray executor: students trained on Ray actors (a local Ray or a cluster)."""

from __future__ import annotations

import contextlib
import weakref
from collections import deque
from typing import Any

from ...errors import ConfigError, first_line
from ...reward import RewardEvaluator
from .base import ParallelExecutor, uses_cuda
from .worker import Trainer, evaluator_payload

__all__ = ["RayExecutor", "RAY_HINT"]

RAY_HINT = "pip install 'n2n-fx[ray]'"


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
                raise ConfigError(f"cannot connect to Ray at {address!r}: {first_line(e, with_type=True)}") from None
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
        remote = self.ray.remote(Trainer).options(max_restarts=0, max_task_retries=0, **opts)
        return remote.remote(self._payload_ref, device, threads)

    def _actors_for(self, evaluator: RewardEvaluator, n_tasks: int) -> list[Any]:
        if self._owner is None or self._owner() is not evaluator:
            self._kill_actors()
            size, self._options = self._resources(uses_cuda(evaluator))
            self._size = size
            self._payload_ref = self.ray.put(evaluator_payload(evaluator))
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
                    why = first_line(e, with_type=True).split(": ", 1)[-1]
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
