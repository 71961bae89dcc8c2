"""Failure paths of a run: kills, bad config values, divergence, locks, disk faults, bad files.

Every bad input gives one line and exit status 2; no run state is lost; a run directory
exists only once its inputs are valid; the same seed gives the same run however it was
interrupted or where its teacher came from.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
import torch
from _cli import one_line_error
from _tiny import tiny
from torch import nn

from n2n_fx import storage
from n2n_fx.cli import main
from n2n_fx.data import load_splits
from n2n_fx.errors import ConfigError
from n2n_fx.policy import Learner, LearnerConfig, RemovalPolicy, RemovalPolicyConfig, ShrinkPolicy, ShrinkPolicyConfig
from n2n_fx.rundir import RunLock
from n2n_fx.search import SearchConfig, compress, run_compress
from n2n_fx.search.fields import DEFAULT_RANGE, LR_RANGE, RANGES

TINY = tiny()
ROOT = Path(__file__).resolve().parents[1]
TIMING = {"wall_s", "surgery_s", "latency_ms"}  # history fields that differ between equal runs (measured times)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("N2N_FX_CACHE", str(tmp_path_factory.getbasetemp() / "n2n_cache"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of TINY (its teacher lands in the shared cache)."""
    os.environ["N2N_FX_CACHE"] = str(tmp_path_factory.getbasetemp() / "n2n_cache")
    d = tmp_path_factory.mktemp("ref") / "r"
    run_compress(SearchConfig(**TINY), d, quiet=True)
    return d


def _config_file(tmp_path: Path, **changes) -> Path:
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps({**TINY, **changes}))
    return p


def _history(d: Path) -> list[dict]:
    rows = [json.loads(x) for x in (d / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _weights(d: Path) -> dict[str, dict[str, torch.Tensor]]:
    out = {"student": torch.load(d / "student.pt", weights_only=True)["state_dict"]}
    for p in sorted((d / "policies").glob("*.pt")):
        out[p.name] = torch.load(p, weights_only=True)["state_dict"]
    return out


def _assert_same_run(d: Path, ref: Path) -> None:
    assert _history(d) == _history(ref)
    a, b = _weights(d), _weights(ref)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].keys() == b[name].keys(), name
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), f"{name}: {k}"


def _faulty(mode: str, args: list[str]) -> subprocess.CompletedProcess:
    """n2n-fx ``args`` in a child process that kills itself (tests/_faults.py MODE)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(ROOT / "tests" / "_faults.py"), mode, "--", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _temp_files(d: Path) -> list[Path]:
    return [p for p in d.rglob("*") if p.is_file() and (p.name.endswith(".tmp") or p.name.startswith(".x"))]


# -- 1. killed before the first checkpoint ------------------------------------------------------------


def test_kill_before_first_checkpoint_resumes_and_new_run_reuses(tmp_path, reference, capsys):
    cfg = _config_file(tmp_path)
    d = tmp_path / "r"
    done = _faulty("start", ["compress", "--config", str(cfg), "--run-dir", str(d), "--quiet"])
    assert done.returncode == -signal.SIGKILL, done.stderr[-500:]
    assert (d / "teacher.pt").is_file() and not (d / "checkpoint.pt").exists()
    assert main(["compress", "--resume", str(d), "--quiet"]) == 0  # restarts from the saved inputs
    _assert_same_run(d, reference)

    d2 = tmp_path / "r2"  # the same, then a new run in that folder instead of a resume
    _faulty("start", ["compress", "--config", str(cfg), "--run-dir", str(d2), "--quiet"])
    assert not (d2 / "checkpoint.pt").exists()
    assert main(["compress", "--config", str(cfg), "--run-dir", str(d2), "--quiet"]) == 0
    _assert_same_run(d2, reference)
    capsys.readouterr()
    # a folder holding a started run is still refused, with the way out
    one_line_error(capsys, ["compress", "--config", str(cfg), "--run-dir", str(d2)], "--resume")


# -- 2. config values: type and range, table-driven -------------------------------------------------------

_CHOICE_FIELDS = {"stage", "algo", "reinforce_baseline", "penalty", "penalty_schedule", "executor", "device"}


def _bad_values(name: str, typ, rng: random.Random) -> list:
    """Values of the wrong type or out of range for a SearchConfig field."""
    args = typing.get_args(typ) if typing.get_origin(typ) is not typing.Literal else ()
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), typ) if args else typ
    base = typing.get_origin(base) or base
    choices = base is typing.Literal  # one of its values: a string, and not any string
    base = str if choices else base
    wrong_types = {
        int: ["3", 1.5, True, [1], {"a": 1}],
        float: ["0.1", True, [0.5], {"x": 1}, float("nan"), float("inf")],
        str: [3, 1.5, True, ["a"], {"a": "b"}],
        bool: ["true", 1, 0.0, [True]],
        dict: [[1, 2], "a=1", 3],
    }[base]
    bad = list(wrong_types) + ([] if optional else [None])
    if base in (int, float):
        r = RANGES.get(name) or (LR_RANGE if name.endswith("_lr") else DEFAULT_RANGE)
        if r.low is not None:
            bad.append(r.low if r.open_low else r.low - rng.choice([1, 7, 1000]))
        if r.high is not None:
            bad.append(r.high)
    if name in _CHOICE_FIELDS or choices:
        bad.append("no-such-" + name)
    return bad


def _toml(data: dict) -> str | None:
    """A TOML file for flat scalar settings (None where TOML cannot say it)."""
    lines = []
    for k, v in data.items():
        if isinstance(v, bool):
            lines.append(f"{k} = {str(v).lower()}")
        elif isinstance(v, (int, float)) and math.isfinite(v):
            lines.append(f"{k} = {v!r}")
        elif (
            isinstance(v, str)
            or isinstance(v, list)
            and all(isinstance(x, (int, str)) and not isinstance(x, bool) for x in v)
        ):
            lines.append(f"{k} = {json.dumps(v)}")
        else:
            return None
    return "\n".join(lines) + "\n"


def test_random_wrong_config_values_one_line_nothing_written(tmp_path, capsys, monkeypatch):
    rng = random.Random(1717)
    hints = typing.get_type_hints(SearchConfig)
    cases = [(f.name, v) for f in dataclasses.fields(SearchConfig) for v in _bad_values(f.name, hints[f.name], rng)]
    cache = Path(os.environ["N2N_FX_CACHE"])
    before = sorted(cache.rglob("*")) if cache.exists() else []
    monkeypatch.chdir(tmp_path)  # a default run directory would land here
    picked = rng.sample(cases, 40)
    for i, (name, value) in enumerate(picked):
        settings = {"removal_iterations": 1, **{k: v for k, v in rng.sample(sorted(TINY.items()), 3)}, name: value}
        text = _toml(settings) if i % 3 == 0 else None
        path = tmp_path / (f"c{i}.toml" if text else f"c{i}.json")
        path.write_text(text or json.dumps(settings))
        run_dir = tmp_path / f"run{i}"
        err = one_line_error(capsys, ["compress", "--config", str(path), "--run-dir", str(run_dir)])
        assert name in err or name.replace("_", " ") in err, (name, value, err)
        assert not run_dir.exists(), (name, value)
    assert all(p.is_file() and p.name.startswith("c") for p in tmp_path.iterdir())  # the config files only
    assert (sorted(cache.rglob("*")) if cache.exists() else []) == before


def test_config_types_are_read_from_the_dataclass():
    with pytest.raises(ConfigError, match="removal_iterations must be an integer"):
        SearchConfig(removal_iterations=1.5)
    with pytest.raises(ConfigError, match="rollouts must be an integer, not 'x'"):
        SearchConfig(rollouts="x")
    with pytest.raises(ConfigError, match="removal_lr must be a number"):
        SearchConfig(removal_lr="0.01")
    with pytest.raises(ConfigError, match="final_lr=nan must be a finite number"):
        SearchConfig(final_lr=float("nan"))
    assert SearchConfig(removal_lr=1).removal_lr == 1  # an int is a number
    assert SearchConfig(reward_subset=100).reward_subset == 100  # and stays a count, not a fraction
    from n2n_fx.cli import _parser

    flags = _parser()[0].parse_args(["compress", "--reward-subset", "100"])
    assert flags.reward_subset == 100 and isinstance(flags.reward_subset, int)  # a count from the CLI too

    @dataclasses.dataclass(frozen=True)
    class Later(SearchConfig):  # a field added later is checked without being listed anywhere
        supernet_steps: int = 3  # hypothetical
        supernet_lr: float = 0.1  # hypothetical

    with pytest.raises(ConfigError, match="supernet_steps must be an integer"):
        Later(supernet_steps="3")
    with pytest.raises(ConfigError, match="supernet_lr=0 must be > 0"):
        Later(supernet_lr=0)
    # past Adam's float32 range torch would raise inside the optimiser step: refused up front, in one line
    with pytest.raises(ConfigError, match=r"removal_lr=1e\+39 must be < 3e\+37"):
        SearchConfig(removal_lr=1e39)


# -- 3. a diverging final training ----------------------------------------------------------------------


@pytest.mark.parametrize(("loss", "lr"), [("ce+l2", 1e12), ("ce+kl", 1e3)])
def test_diverging_final_training_keeps_the_search_time_weights(tmp_path, loss, lr):
    """An absurd final lr: with logit L2 at 1e12 the loss goes non-finite (the fallback, said in the
    report); with KL at 1e3 it stays finite and every epoch is worse, so the best-epoch rule keeps
    epoch 0 (KL at 1e4 already diverges on TINY's student). Either way the shipped student carries the
    weights the search measured."""
    cfg = SearchConfig(**{**TINY, "stage": "removal", "final_lr": lr, "final_loss": loss})
    res = run_compress(cfg, tmp_path / "r", quiet=True)
    ck = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    final = ck["final"]["removal"]
    if loss == "ce+l2":
        assert final["fallback"] and "search-time weights" in final["fallback"]
        assert "search-time weights" in (tmp_path / "r" / "report.md").read_text()
        assert res.summary["stage1"]["fallback"]
    else:
        assert final["fallback"] is None and final["best_epoch"] == 0
    saved = torch.load(tmp_path / "r" / "student.pt", weights_only=True)["state_dict"]
    best = ck["best"]["removal"]["state_dict"]
    for k, v in saved.items():
        assert torch.isfinite(v).all() if v.is_floating_point() else True, k
        assert torch.equal(v, best[k]), k
    assert all(torch.isfinite(p).all() for p in res.student.parameters())


# -- 4. a diverging policy ----------------------------------------------------------------------------


def test_diverging_policy_update_is_skipped_with_a_logged_line(tmp_path, capsys):
    # Adam's first step moves every weight by lr / (1 - beta1) = 1e38, still a float32: the policy's
    # outputs overflow on any step with a gradient (1e30 did not on every seed: outputs stayed finite)
    cfg = _config_file(tmp_path)
    argv = ["compress", "--config", str(cfg), "--run-dir", str(tmp_path / "r"), "--removal-lr", "1e37"]
    assert main([*argv, "--shrink-lr", "1e37"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "policy update skipped" in err and "non-finite" in err
    for stage in ("removal", "shrink"):
        state = torch.load(tmp_path / "r" / "policies" / f"{stage}.pt", weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values())


def test_learner_refuses_a_step_that_breaks_the_policy():
    torch.manual_seed(0)
    policy = ShrinkPolicy(ShrinkPolicyConfig(feature_dim=6, ratios=(0.25, 0.5, 1.0)))
    learner = Learner(policy, LearnerConfig(lr=1e30, rollouts=3))
    x, var = torch.randn(4, 6), torch.zeros(4, dtype=torch.long)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    ro = learner.sample(x=x, variable=var)
    stats = learner.update(ro, [0.1, 0.9, 0.4], x=x, variable=var)
    assert stats.skipped and "non-finite" in stats.skipped
    assert all(torch.equal(v, before[k]) for k, v in policy.state_dict().items())
    learner.sample(x=x, variable=var)  # still usable
    # a policy that is already broken (e.g. a transferred one) stops with one line, no traceback
    removal = RemovalPolicy(RemovalPolicyConfig(feature_dim=6))
    with torch.no_grad():
        next(removal.parameters()).fill_(float("nan"))
    with pytest.raises(ConfigError, match="removal policy has diverged"):
        Learner(removal, LearnerConfig()).sample(x=x, removable=torch.ones(4, dtype=torch.bool))
    with torch.no_grad():
        next(policy.parameters()).fill_(float("nan"))
    with pytest.raises(ConfigError, match="shrink policy has diverged"):
        learner.sample(x=x, variable=var)


# -- 5. a run directory only once its inputs are valid --------------------------------------------------------


def test_bad_inputs_leave_no_run_directory(tmp_path, capsys):
    d = tmp_path / "r"
    one_line_error(capsys, ["compress", "--reward-subset", "-3", "--run-dir", str(d)], "reward_subset")
    one_line_error(capsys, ["compress", "--executor", "gpu-farm", "--run-dir", str(d)], "executor")
    one_line_error(
        capsys, ["compress", "--config", str(_config_file(tmp_path, removal_lr=float("nan"))), "--run-dir", str(d)]
    )
    assert not d.exists()
    # found only once the search starts (a subset larger than the data): the folder is removed again
    big = _config_file(tmp_path, reward_subset=100000)
    one_line_error(capsys, ["compress", "--config", str(big), "--run-dir", str(d), "--quiet"], "subset")
    assert not d.exists()
    d.mkdir()  # an empty folder given by the user stays, empty
    one_line_error(capsys, ["compress", "--config", str(big), "--run-dir", str(d), "--quiet"], "subset")
    assert d.is_dir() and not any(d.iterdir())


# -- 6. CLI and API error paths ---------------------------------------------------------------------------


def test_cli_and_api_error_paths_are_one_line(tmp_path, capsys):
    one_line_error(
        capsys,
        [
            "surgery",
            "conv4",
            "--input-size",
            "1x28x28",
            "--remove",
            "features.3",
            "--dot",
            str(tmp_path / "no" / "x.dot"),
        ],
        "x.dot",
        "does not exist",
    )
    one_line_error(capsys, ["inspect", "conv4", "--num-classes", "0"], "--num-classes")
    from n2n_fx.teacher.train import save_teacher
    from n2n_fx.teacher.zoo import build_model

    ck = tmp_path / "conv4.pt"
    save_teacher(
        ck,
        build_model("conv4", in_channels=1),
        model_name="conv4",
        num_classes=10,
        in_channels=1,
        input_size=(1, 16, 16),
    )
    d = tmp_path / "r"
    one_line_error(
        capsys,
        ["compress", "--config", str(_config_file(tmp_path, teacher_checkpoint=str(ck))), "--run-dir", str(d)],
        "conv4",
        "--model conv4",
    )
    assert not d.exists()


def test_unpicklable_teacher_through_the_api(tmp_path):
    class Local(nn.Module):  # defined in a function: pickle cannot find it
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(4, 10)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))

    from n2n_fx.search.api import _teacher_bytes

    # the run stores the traced graph as data, so a class pickle cannot find is no obstacle
    splits = load_splits("synthetic", seed=0, num_samples=120, image_size=8)
    res = compress(
        Local(),
        splits.train_plain,
        splits.val,
        run_dir=tmp_path / "api",
        removal_iterations=1,
        shrink_iterations=1,
        reward_accuracy="ratio",  # an untrained teacher: above-chance rewards would refuse it
    )
    assert res.student is not None and (tmp_path / "api" / "teacher.pt").is_file()
    # a module that must be pickled (no graph) and cannot be: one line naming the fix
    with pytest.raises(ConfigError) as e:
        _teacher_bytes(Local(), None, {})
    assert len(str(e.value).splitlines()) == 1 and "module level" in str(e.value)


# -- 7. stale temp files ----------------------------------------------------------------------------------


def test_resume_removes_stale_temp_files(tmp_path, reference, capsys):
    d = tmp_path / "r"
    shutil.copytree(reference, d)
    junk = [
        d / ".checkpoint.pt.ab12cd.tmp",
        d / "reward_cache.json.tmp",
        d / ".history.jsonl.x9",
        d / "policies" / ".removal.pt.q.tmp",
    ]
    for p in junk:
        p.write_bytes(b"\0" * 1000)
    (d / ".DS_Store").write_bytes(b"not ours")
    assert main(["compress", "--resume", str(d)]) == 0
    assert not any(p.exists() for p in junk)
    assert (d / ".DS_Store").exists()
    assert "temp file(s)" in capsys.readouterr().err
    _assert_same_run(d, reference)


# -- 8. one process per run directory -----------------------------------------------------------------------


def test_a_second_process_is_refused_and_a_dead_holder_is_taken_over(tmp_path, reference, capsys):
    d = tmp_path / "r"
    shutil.copytree(reference, d)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from n2n_fx.rundir import RunLock; RunLock(sys.argv[1]).acquire(); print('ok', flush=True); time.sleep(120)",
            str(d),
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ok"
        before = {p: p.read_bytes() for p in d.rglob("*") if p.is_file() and p.name != ".lock"}
        err = one_line_error(
            capsys, ["compress", "--resume", str(d)], f"pid {holder.pid}", socket.gethostname(), "in use"
        )
        assert "resume" not in err.split("in use")[0]
        after = {p: p.read_bytes() for p in d.rglob("*") if p.is_file() and p.name != ".lock"}
        assert before == after
        with pytest.raises(Exception, match=f"pid {holder.pid}"):
            RunLock(d).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = RunLock(d).acquire()  # the holder died with its lock held: taken over
    assert lock.previous and lock.previous["pid"] == holder.pid
    lock.release()
    assert main(["compress", "--resume", str(d), "--quiet"]) == 0


def test_two_live_runs_never_share_a_folder(tmp_path, capsys):
    d = tmp_path / "r"
    d.mkdir()
    with RunLock(d):  # a new run starting up there (its inputs not yet written)
        one_line_error(
            capsys, ["compress", "--config", str(_config_file(tmp_path)), "--run-dir", str(d)], "in use by pid"
        )


# -- 9. same seed, same run, wherever the teacher comes from ------------------------------------------------------


def test_same_seed_same_run_with_teacher_trained_cached_or_from_the_run(tmp_path, monkeypatch):
    cfg = SearchConfig(**{**TINY, "stage": "removal", "removal_iterations": 1, "teacher_epochs": 1})
    monkeypatch.setenv("N2N_FX_CACHE", str(tmp_path / "cache1"))
    run_compress(cfg, tmp_path / "fresh1", quiet=True)  # teacher trained on the fly
    torch.manual_seed(12345)  # whatever the global RNG holds before a run
    run_compress(cfg, tmp_path / "cached", quiet=True)  # teacher from the cache
    monkeypatch.setenv("N2N_FX_CACHE", str(tmp_path / "cache2"))
    run_compress(cfg, tmp_path / "fresh2", quiet=True)  # trained on the fly again
    t = [
        torch.load(tmp_path / n / "teacher.pt", weights_only=True)["state_dict"] for n in ("fresh1", "cached", "fresh2")
    ]
    for k in t[0]:
        assert torch.equal(t[0][k], t[1][k]) and torch.equal(t[0][k], t[2][k]), k
    _assert_same_run(tmp_path / "cached", tmp_path / "fresh1")
    _assert_same_run(tmp_path / "fresh2", tmp_path / "fresh1")


# -- 10. disk faults ------------------------------------------------------------------------------------------


def _inject(monkeypatch, target: str, err: int, after: int = 0):
    """Make the (after+1)-th write of a file named ``target`` fail with ``err``."""
    real = storage._write
    seen = {"n": 0}

    def failing(f, data, path):
        if Path(path).name == target:
            seen["n"] += 1
            if seen["n"] > after:
                f.write(bytes(data)[:100])  # part of it made it to disk
                raise OSError(err, os.strerror(err))
        real(f, data, path)

    monkeypatch.setattr(storage, "_write", failing)
    return seen


@pytest.mark.parametrize(
    ("target", "err", "after", "advice"),
    [
        ("checkpoint.pt", errno.ENOSPC, 2, "free some disk space"),
        ("reward_cache.json", errno.EACCES, 1, "writable"),
        ("history.jsonl", errno.ENOSPC, 3, "disk space"),
    ],
)
def test_disk_fault_mid_run_is_one_line_and_the_run_resumes(
    tmp_path, reference, capsys, monkeypatch, target, err, after, advice
):
    d = tmp_path / "r"
    cfg = _config_file(tmp_path)
    snap: dict[str, bytes] = {}
    real_save = storage.atomic_write_bytes

    def remember(path, data):  # keeps the last checkpoint written whole
        real_save(path, data)
        if Path(path).name == "checkpoint.pt":
            snap["ck"] = Path(path).read_bytes()

    with monkeypatch.context() as m:
        _inject(m, target, err, after)
        m.setattr(storage, "atomic_write_bytes", remember)  # atomic_torch_save calls it
        argv = ["compress", "--config", str(cfg), "--run-dir", str(d), "--quiet"]
        one_line_error(capsys, argv, target, advice, f"--resume {d}")
    assert (d / "checkpoint.pt").read_bytes() == snap["ck"]  # the last checkpoint is intact
    assert not _temp_files(d)
    assert main(["compress", "--resume", str(d), "--quiet"]) == 0
    _assert_same_run(d, reference)


def test_unwritable_run_directory_is_found_before_the_work(tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access, real_mkdir = os.access, Path.mkdir
    with monkeypatch.context() as m:  # a read-only parent (root passes every permission check: simulated)
        m.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
        one_line_error(capsys, ["compress", "--run-dir", str(ro / "r")], str(ro), "writable")

    def refuse(self, *a, **k):
        if self == ro / "r":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)

    with monkeypatch.context() as m:  # access() passes but the mkdir fails (a race, ACLs): still one line
        m.setattr(Path, "mkdir", refuse)
        cfg = str(_config_file(tmp_path))
        argv = ["compress", "--config", cfg, "--run-dir", str(ro / "r"), "--quiet"]
        one_line_error(capsys, argv, f"{ro / 'r'}:", "writable")
    assert not (ro / "r").exists()


# -- 11. messages that do not mislead ------------------------------------------------------------------------


def test_messages_name_the_real_problem(tmp_path, reference, capsys):
    d = tmp_path / "pickled-runs" / "r"
    shutil.copytree(reference, d)
    (d / "teacher.pt").write_bytes((d / "teacher.pt").read_bytes()[:500])  # truncated
    err = one_line_error(capsys, ["diff", str(d)], "teacher.pt", "damaged")
    assert "custom teacher" not in err and "allow-pickle" not in err
    shutil.copy(reference / "teacher.pt", d / "teacher.pt")
    torch.save({"format": "n2n_fx.student/1", "actions": os.getcwd}, d / "student.pt")  # needs a full unpickle
    err = one_line_error(capsys, ["diff", str(d), "--allow-pickle"], "student.pt", "pickled")
    assert "allow-pickle" not in err and "allow_pickle" not in err
    torch.save({"format": "x", "f": os.getcwd}, d / "checkpoint.pt")
    err = one_line_error(capsys, ["compress", "--resume", str(d)], "checkpoint.pt")
    assert "allow-pickle" not in err


# -- fault injection: kill -9 anywhere -----------------------------------------------------------------------


def _child(mode: str, args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(ROOT / "tests" / "_faults.py"), mode, "--", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> bool:
    """Poll until ``path`` exists (True) or ``proc`` ends / the time is up (False)."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end and proc.poll() is None:
        if path.exists():
            return True
        time.sleep(0.005)
    return False


@pytest.mark.slow
def test_kill_at_20_random_moments_every_resume_equals_the_uninterrupted_run(tmp_path, reference, capsys):
    """kill -9 at 20 moments of a tiny run: at the start of the search (inputs written, no
    checkpoint), half-way through randomly chosen file writes (temp files and history rows
    cut), at random times of the start-up (data, teacher) and at random times after the run
    folder appeared. Each run is then resumed (or, when killed before its folder was a run,
    started again with the same command) and must end with the history and weights of the
    uninterrupted run."""
    cfg = str(_config_file(tmp_path))
    args = lambda d: ["compress", "--config", cfg, "--run-dir", str(d), "--quiet"]  # noqa: E731
    t0 = time.perf_counter()
    proc = _child("none", args(tmp_path / "whole"))
    assert _wait_for(tmp_path / "whole" / "run.json", proc, 600)
    t_folder = time.perf_counter() - t0
    err = proc.communicate(timeout=600)[1]
    total_s = time.perf_counter() - t0
    assert proc.returncode == 0, err[-500:]
    n_writes = int(err.rsplit("writes=", 1)[1].split()[0])
    _assert_same_run(tmp_path / "whole", reference)  # a child process gives the in-process run

    rng = random.Random(20)
    moments = [("start", 0.0)]
    moments += [("write", float(k)) for k in sorted(rng.sample(range(1, n_writes + 1), 9))]
    moments += [("startup", round(rng.uniform(0.2, t_folder), 2)) for _ in range(3)]
    moments += [("search", round(rng.uniform(0.0, total_s - t_folder), 2)) for _ in range(7)]
    seen = []
    for i, (kind, at) in enumerate(moments):
        d = tmp_path / f"k{i}"
        mode = {"start": "start", "write": f"write:{int(at)}"}.get(kind, "none")
        proc = _child(mode, args(d))
        if kind in ("startup", "search"):
            if kind == "search":
                _wait_for(d / "run.json", proc, 600)
            try:
                proc.wait(timeout=at)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=600)
        state = (
            "finished"
            if proc.returncode == 0
            else "no folder"
            if not (d / "run.json").is_file()
            else "no checkpoint"
            if not (d / "checkpoint.pt").is_file()
            else "checkpointed"
        )
        cut = [p.name for p in _temp_files(d)] if d.exists() else []
        how = ["compress", "--resume", str(d), "--quiet"] if (d / "run.json").is_file() else args(d)
        capsys.readouterr()
        assert main(how) == 0, (kind, at, state, capsys.readouterr().err)
        assert not _temp_files(d)
        _assert_same_run(d, reference)
        seen.append((kind, at, proc.returncode, state, cut))
    capsys.readouterr()
    with capsys.disabled():
        print(f"\nuninterrupted run: {total_s:.1f} s (folder at {t_folder:.1f} s), {n_writes} writes")
        for kind, at, rc, state, cut in seen:
            print(f"  kill at {kind} {at:g}: exit {rc}, {state}, temp files left {cut}")
    assert sum(1 for s in seen if s[3] in ("no folder", "no checkpoint")) >= 2  # before the first checkpoint
    assert sum(1 for s in seen if s[2] == -signal.SIGKILL) >= 15
