"""The main job as a function: ``compress`` (Python API) and ``run_compress`` (CLI)."""

from __future__ import annotations

import copy
import logging
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn
from torch.utils.data import DataLoader, Dataset

from ..data.dataset import DatasetInfo
from ..data.splits import DataSplits
from ..errors import CheckpointError, ConfigError, DiskError, N2NError, RunDirError
from ..graph.shapes import node_shape
from ..progress import KeptRecords, capture, log_file, verbosity
from ..report import write_report
from ..rewrite import Diff
from ..rundir import LOG_FILE, SEARCH_OUTPUTS, PickledFileError, RunDir, safe_torch_load
from ..storage import atomic_write_bytes, torch_bytes
from ..teacher.fxfile import graph_from_state, graph_to_state
from ..teacher.trace import trace
from ..teacher.train import teacher_spec
from ..teacher.zoo import build_model
from .config import SearchConfig
from .resume import resumed_config
from .search import Search, rebuild_student
from .state import FINAL_NAMES
from .summary import write_summary
from .teacher_setup import load_data, prepare

__all__ = ["CompressionResult", "compress", "run_compress", "load_run", "load_teacher_file"]

logger = logging.getLogger(__name__)


@dataclass
class CompressionResult:
    """What a compression run produced."""

    student: fx.GraphModule  # the best student (trained), a GraphModule
    diff: Diff  # teacher -> student changes
    history: list[dict[str, Any]]  # one row per rollout
    summary: dict[str, Any]  # teacher / stage-1 / final numbers (paper Table 1 layout)
    run_dir: Path  # where everything is saved
    tables: dict[str, str]  # rendered report tables (summary, layers)


def _teacher_bytes(teacher: nn.Module, spec: dict[str, Any] | None, metrics: dict[str, Any]) -> bytes:
    """What teacher.pt holds, serialised before the run directory is made (so a failure leaves nothing).

    A named model: weights + spec. A user's own model: its traced graph as data (``fxfile``), so
    the CLI rebuilds it without the user's class; a full pickle only when the graph cannot be stored."""
    if spec is None and isinstance(teacher, fx.GraphModule):
        try:
            graph = graph_to_state(teacher)
        except ConfigError:
            graph = None  # e.g. a custom leaf module: pickle below
        if graph is not None:
            return torch_bytes({"graph": graph, "metrics": metrics, "pickled": False})
    if spec is not None:
        return torch_bytes({"state_dict": teacher.state_dict(), "spec": spec, "metrics": metrics, "pickled": False})
    # a user model that cannot be rebuilt by name: a full pickle, loaded only on request
    try:
        return torch_bytes({"module": teacher, "metrics": metrics, "pickled": True})
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        raise ConfigError(
            f"the teacher ({type(teacher).__qualname__}) cannot be pickled, which the run directory needs to resume "
            f"({str(e).splitlines()[0][:100]}); define its class at module level"
        ) from None


def load_teacher_file(run: RunDir, allow_pickle: bool) -> tuple[nn.Module, dict[str, Any] | None]:
    """The run's teacher (eval mode) from teacher.pt, and its spec (None for a user's own model).

    A pickled teacher (a custom model that could not be stored as data) loads only with
    ``allow_pickle``; otherwise ``PickledFileError`` says how to allow it."""
    path = run.file("teacher.pt")
    hint = "pass --allow-pickle (allow_pickle=True) if you trust this run: its teacher is a custom model"
    try:
        ck = safe_torch_load(path, pickle_hint=hint)
        if isinstance(ck, dict) and "graph" in ck:
            return graph_from_state(ck["graph"]).eval(), None
        model = build_model(
            str(ck["spec"]["model"]),
            num_classes=int(ck["spec"]["num_classes"]),
            in_channels=int(ck["spec"]["in_channels"]),
        )
        model.load_state_dict(ck["state_dict"])
        return model.eval(), dict(ck["spec"])
    except PickledFileError:
        if not allow_pickle:
            raise
        ck = safe_torch_load(path, allow_pickle=True)
        return ck["module"].eval(), None
    except (KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path} does not match its spec ({str(e).splitlines()[0][:120]})") from None


def _stage_students(run: RunDir, teacher_gm: fx.GraphModule, student: fx.GraphModule) -> dict[str, nn.Module]:
    """The final student of each stage the run saved: the run's result is in hand, the other is rebuilt."""
    final = safe_torch_load(run.file("checkpoint.pt")).get("final", {})
    out: dict[str, nn.Module] = {}
    for stage, key in FINAL_NAMES.items():
        fname = f"student_{key}.pt"
        if not final.get(stage) or not run.file(fname).is_file():
            continue
        if stage == (final.get("winner") or "removal"):
            out[stage] = student
        else:
            c = safe_torch_load(run.file(fname))
            out[stage] = rebuild_student(teacher_gm, c["actions"], c["state_dict"]).student
    return out


def _finish(run: RunDir, search: Search, teacher_gm: fx.GraphModule) -> CompressionResult:
    student, diff = load_run(run.path, allow_pickle=True, teacher_gm=teacher_gm)
    summary = write_summary(run, teacher_gm, _stage_students(run, teacher_gm, student))
    tables = write_report(run, teacher_gm, student, diff)
    return CompressionResult(student, diff, run.history(), summary, run.path, tables)


def run_compress(
    cfg: SearchConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    quiet: bool | None = None,
    allow_pickle: bool = False,
    search_cls: Callable[..., Search] = Search,
    teacher: nn.Module | None = None,
    extra_files: dict[str, Any] | None = None,
    changes: dict[str, Any] | None = None,
) -> CompressionResult:
    """Run (or resume) the full compression described by ``cfg`` in ``run_dir``.

    A resume runs the config the run recorded (``cfg`` is not read); ``changes`` are settings
    asked for on top of it: equal ones pass, raised budgets and a new data root or executor
    are applied and recorded, others raise ``ConfigError`` (search/resume.py).

    Progress goes to the ``n2n_fx`` logger (silent unless logging is configured) and to the
    run's ``run.log``; ``quiet=True`` hides the lines and bars, ``quiet=False`` shows them on
    stderr (n2n_fx/progress.py).

    Baselines reuse the whole job: ``search_cls`` builds the search (e.g. random search's
    learners), ``teacher`` replaces the teacher ``cfg`` would load (e.g. an N2N run's own),
    ``extra_files`` (name -> JSON) are written into a new run directory."""
    with verbosity(quiet):
        earlier = KeptRecords()  # the data and teacher lines, written to run.log once it exists
        with capture(earlier):
            run, cfg, gm, splits = _open_run(cfg, run_dir, resume, allow_pickle, teacher, extra_files, changes)
        return _search(run, cfg, gm, splits, resume=resume, search_cls=search_cls, earlier=earlier.records)


def _open_run(
    cfg: SearchConfig,
    run_dir: str | Path,
    resume: bool,
    allow_pickle: bool,
    teacher: nn.Module | None,
    extra_files: dict[str, Any] | None,
    changes: dict[str, Any] | None,
) -> tuple[RunDir, SearchConfig, fx.GraphModule, DataSplits]:
    """``run_compress``'s locked run directory, config, traced teacher and data (a new run: its inputs written)."""

    def inputs(cfg: SearchConfig) -> tuple[nn.Module, dict[str, Any], Any, dict[str, Any]]:
        if teacher is None:
            p = prepare(cfg)
            return p.model, p.spec, p.splits, p.metrics
        splits = load_data(cfg)
        spec = teacher_spec(cfg.model, splits.num_classes, splits.in_channels, splits.input_size, cfg.dataset)
        return teacher.eval(), spec, splits, {}

    if resume:
        run = RunDir.open(run_dir).lock()
        try:
            cfg, changed = resumed_config(run, changes or {})
            if changed:  # recorded, so that a later resume keeps them
                run.write_json("config.json", cfg.to_dict())
                logger.info(f"resume: {', '.join(changed)}")
            if run.missing_inputs():  # killed while it was being created: make them again
                model, spec, splits, metrics = inputs(cfg)
                _write_inputs(run, cfg, _teacher_bytes(model, spec, metrics), splits, extra_files, metrics)
            else:
                model, spec = load_teacher_file(run, allow_pickle)
                splits = load_data(cfg)
            gm = trace(model, input_size=splits.input_size).eval()
        except BaseException:  # any exit, Ctrl-C included, releases the lock first; re-raised
            run.release()
            raise
    else:
        RunDir.ensure_new(run_dir)  # before minutes of teacher training
        model, spec, splits, metrics = inputs(cfg)
        gm = trace(model, input_size=splits.input_size).eval()  # before the folder: a bad teacher leaves none
        run = _create(run_dir, cfg, _teacher_bytes(model, spec, metrics), splits, extra_files, metrics)
    return run, cfg, gm, splits


def _write_inputs(
    run: RunDir,
    cfg: SearchConfig,
    teacher: bytes,
    splits,
    extra_files: dict[str, Any] | None,
    metrics: dict[str, Any] | None = None,
) -> None:
    """The run's inputs, teacher.pt last: once it is there they are complete (``RunDir.missing_inputs``)."""
    run.write_json("config.json", cfg.to_dict())
    for name, data in (extra_files or {}).items():
        run.write_json(name, data)
    run.write_json("data.json", {"input_size": list(splits.input_size), "num_classes": splits.num_classes})
    run.write_json("teacher.json", {k: v for k, v in (metrics or {}).items() if k != "recipe"})
    atomic_write_bytes(run.file("teacher.pt"), teacher)  # last: the run's inputs are complete


def _create(
    run_dir,
    cfg: SearchConfig,
    teacher: bytes,
    splits,
    extra_files: dict[str, Any] | None,
    metrics: dict[str, Any] | None = None,
) -> RunDir:
    """A new, locked run directory holding the run's inputs (nothing is left if writing them fails)."""
    run = RunDir.create(run_dir, cfg.to_dict())
    try:
        _write_inputs(run, cfg, teacher, splits, extra_files, metrics)
    except N2NError:
        run.discard(remove_folder=run.created_folder)
        raise
    return run


def _search(
    run: RunDir,
    cfg: SearchConfig,
    gm: fx.GraphModule,
    splits,
    *,
    resume: bool,
    search_cls: Callable[..., Search] = Search,
    earlier: Sequence[logging.LogRecord] = (),
) -> CompressionResult:
    """Run the search of the locked ``run`` and write its report; the lock is released at the end.

    The package's lines go to the run's log file meanwhile (``earlier`` ones first). A resumed
    run without a checkpoint starts over from its inputs. A new run that fails on bad input
    before its first rollout leaves no run directory behind."""
    try:
        with log_file(run.file(LOG_FILE), earlier):
            if run.stale_removed:
                logger.info(
                    f"removed {len(run.stale_removed)} temp file(s) of writes cut by a crash: {', '.join(run.stale_removed)}"
                )
            restart = resume and not run.started
            if restart:
                kept = tuple(f.name for f in run.path.iterdir() if f.name not in SEARCH_OUTPUTS)
                run.clear(keep=kept)
                logger.info(f"{run.path} stopped before its first checkpoint: starting its search over")
            search = search_cls(cfg, run, gm, splits)
            before = 0.0  # search time of earlier sessions of a resumed run
            if resume and run.file("timing.json").is_file():
                before = float(run.read_json("timing.json").get("search_s", 0.0))
            t0 = time.perf_counter()
            search.run(resume=resume and not restart)
            timing = {
                "search_s": before + time.perf_counter() - t0,  # + earlier finished sessions
                # part of search_s (shared modes): the shared weights of both stages
                "supernet_s": float(sum(r.get("wall_s", 0.0) for r in search.state.supernet.values())),
            }
            run.write_json("timing.json", timing)
            return _finish(run, search, gm)
    except DiskError as e:
        if run.started:
            raise DiskError(f"{e}; then resume: n2n-fx compress --resume {run.path}") from None
        _discard_if_new(run, resume)
        raise
    except N2NError:
        _discard_if_new(run, resume)
        raise
    finally:
        run.release()


def _discard_if_new(run: RunDir, resume: bool) -> None:
    if not resume and not run.file("history.jsonl").is_file():
        run.discard(remove_folder=run.created_folder)


def _as_dataset(d: Dataset | DataLoader) -> Dataset:
    return d.dataset if isinstance(d, DataLoader) else d


def compress(
    teacher: nn.Module,
    train_data: Dataset | DataLoader,
    val_data: Dataset | DataLoader,
    test_data: Dataset | DataLoader | None = None,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    quiet: bool | None = None,
    **config: Any,
) -> CompressionResult:
    """Compress your own ``teacher`` on your own data; everything lands in ``run_dir``.

    ``train_data`` must give un-augmented ``(x, y)`` samples (teacher logits are cached on
    it); ``val_data`` scores the rewards; ``test_data`` (default: ``val_data``) the final
    report. ``config`` takes any ``SearchConfig`` field (iterations, rollouts, constraints...).
    Progress goes to the ``n2n_fx`` logger (silent unless logging is configured) and to
    ``run_dir/run.log``; ``quiet=False`` shows it on stderr, ``quiet=True`` hides it.

    Example:
        >>> import tempfile
        >>> from n2n_fx.data import load_splits
        >>> s = load_splits("synthetic", num_samples=200, image_size=8)
        >>> my_cnn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
        ...                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
        >>> run = Path(tempfile.mkdtemp()) / "run"
        >>> result = compress(my_cnn, s.train_plain, s.val, run_dir=run, removal_iterations=1,
        ...                   shrink_iterations=1, rollouts=2, reward_steps=2, final_epochs=1,
        ...                   supernet_steps=2, supernet_shrink_steps=2, reward_accuracy="ratio", quiet=True)
        >>> result.summary["teacher"]["params"], (run / "report.md").is_file()
        (754, True)
    """
    train, val = _as_dataset(train_data), _as_dataset(val_data)
    test = _as_dataset(test_data) if test_data is not None else val
    x0, _ = train[0]
    if not isinstance(x0, torch.Tensor):
        raise ConfigError("train_data must yield (tensor, label) pairs; add a ToTensor transform")
    run_dir = Path(run_dir or f"runs/compress-{time.strftime('%Y%m%d-%H%M%S')}")
    cfg = SearchConfig.from_dict({**config, "model": type(teacher).__name__, "dataset": "custom"})
    # the run's own CPU copy (surgery's source; the search puts a copy on its device): the user's
    # teacher is neither moved nor switched to eval mode
    gm = trace(copy.deepcopy(teacher).cpu(), input_size=tuple(x0.shape)).eval()
    splits = DataSplits(
        train=train,
        train_plain=train,
        val=val,
        test=test,
        info=_custom_info(gm, x0),
        seed=cfg.seed,
    )
    if resume:
        run = RunDir.open(run_dir).lock()
        if run.missing_inputs():  # killed while it was being created: write them again
            try:
                _write_inputs(run, cfg, _teacher_bytes(gm, None, {}), splits, None)
            except BaseException:  # any exit, Ctrl-C included, releases the lock first; re-raised
                run.release()
                raise
    else:
        RunDir.ensure_new(run_dir)
        run = _create(run_dir, cfg, _teacher_bytes(gm, None, {}), splits, None)
    with verbosity(quiet):
        return _search(run, cfg, gm, splits, resume=resume)


def _custom_info(teacher: fx.GraphModule, x0: torch.Tensor):
    """The data set's description from one sample and the (CPU, eval-mode) traced teacher."""
    out = node_shape(next(n for n in reversed(teacher.graph.nodes) if n.op == "output"))  # from tracing
    if out is None:  # not one tensor: run the CPU copy once
        with torch.no_grad():
            out = teacher(x0.unsqueeze(0).cpu()).shape  # (1, n_classes)
    n = int(out[-1])
    c = int(x0.shape[0])
    return DatasetInfo("custom", n, c, int(x0.shape[-1]), (0.0,) * c, (1.0,) * c)


def load_run(
    run_dir: str | Path, *, allow_pickle: bool = False, teacher_gm: fx.GraphModule | None = None
) -> tuple[fx.GraphModule, Diff]:
    """The trained best student of a finished run (rebuilt from the teacher + actions) and its diff."""
    run = RunDir.open(run_dir)
    path = run.file("student.pt")
    if not path.is_file():
        raise RunDirError(
            f"{run.path} has no student.pt yet; finish the run with `n2n-fx compress --resume {run.path}`"
        )
    ck = safe_torch_load(path)
    if not isinstance(ck, dict) or ck.get("format") != "n2n_fx.student/1":
        raise CheckpointError(f"{path} is not an n2n_fx student file")
    if teacher_gm is None:
        teacher, _ = load_teacher_file(run, allow_pickle)
        size = tuple(run.read_json("data.json")["input_size"])
        teacher_gm = trace(teacher, input_size=size).eval()
    # only the surgery's setting: a run made with plug-ins (custom policies, reward functions) loads without them
    growth = run.read_json("config.json").get("max_linear_growth", SearchConfig.max_linear_growth)
    r = rebuild_student(teacher_gm, ck["actions"], ck["state_dict"], growth)
    return r.student.eval(), r.diff
