"""Logging and progress: the library is silent unless asked, the CLI shows progress on stderr
(-q hides it, -v adds detail), the run directory's run.log keeps the lines either way."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys

import pytest
from _cli import one_line_error
from _tiny import tiny

from n2n_fx.cli import main
from n2n_fx.progress import PACKAGE, console, log_file, progress_bar, quieted, verbosity
from n2n_fx.search import SearchConfig, run_compress

RUN = tiny(stage="removal", removal_iterations=1, rollouts=1)  # one rollout, then final training
TEACHER = ["train-teacher", "vgg_tiny", "--preset", "cpu", "--epochs", "1"]
TEACHER_DATA = ["--data-option", "num_samples=120", "--data-option", "image_size=12"]
# the progress lines a user reads, in the order a run logs them
RUN_LINES = ("data: ", "teacher epoch 1/", "teacher logits: caching on", "removal 1/1: mean reward", "final removal")


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal (bars are drawn only there)."""

    def isatty(self) -> bool:
        return True


class _Kept(logging.Handler):
    """The messages a user's own handler is given."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _bare_root(*handlers: logging.Handler):
    """The root logger of a process that configured nothing (pytest's capture handlers set aside), plus ``handlers``."""
    saved = logging.root.handlers[:]
    for h in saved:
        logging.root.removeHandler(h)
    for h in handlers:
        logging.root.addHandler(h)
    try:
        yield
    finally:
        for h in handlers:
            logging.root.removeHandler(h)
        for h in saved:
            logging.root.addHandler(h)


@contextlib.contextmanager
def _levels(package: int, root: int = logging.WARNING):
    """The package and root loggers at these levels for the block (``setLevel``: logging's caches follow)."""
    pkg = logging.getLogger(PACKAGE)
    saved = pkg.level, logging.root.level
    pkg.setLevel(package)
    logging.root.setLevel(root)
    try:
        yield
    finally:
        pkg.setLevel(saved[0])
        logging.root.setLevel(saved[1])


def _drawn() -> bool:
    """Whether a progress bar made now is drawn."""
    with progress_bar(3, "students") as bar:
        return not bar.disable


def _package_state() -> tuple:
    pkg = logging.getLogger(PACKAGE)
    return pkg.level, pkg.propagate, list(pkg.handlers)


# -- the library ----------------------------------------------------------------------------------
def test_the_library_is_silent_by_default_and_run_log_keeps_the_lines(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("N2N_FX_CACHE", str(tmp_path / "cache"))  # the teacher is trained: its lines too
    before = _package_state()
    with _bare_root():
        # no handler anywhere: the package's NullHandler keeps logging's last resort from printing
        logging.getLogger("n2n_fx.search").warning("a warning nobody asked to see")
        run_compress(SearchConfig(**RUN), tmp_path / "run")
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert _package_state() == before
    log = (tmp_path / "run" / "run.log").read_text()
    places = [log.find(line) for line in RUN_LINES]
    assert -1 not in places and places == sorted(places), log  # the data and teacher lines came before the run
    assert " INFO n2n_fx.search.stages: removal 1/1" in log  # time, level and module of each line
    warning = json.loads((tmp_path / "run" / "teacher.json").read_text()).get("warning")
    if warning:  # the near-chance tiny teacher
        assert f"WARNING n2n_fx.search.teacher_setup: {warning}" in log


def test_a_run_log_does_not_change_what_your_handlers_see(tmp_path):
    """run.log gets the INFO lines although the package logger would drop them; a handler of the
    user's (here on the root logger, as ``logging.basicConfig()`` puts it) still sees warnings only."""
    yours = _Kept()
    log = logging.getLogger("n2n_fx.search.stages")
    before = _package_state()
    with _bare_root(yours):
        with log_file(tmp_path / "run.log"):
            log.info("removal 1/2: mean reward 0.5")
            log.warning("the teacher is weak")
            log.debug("detail")
        log.info("after the run")
    assert yours.messages == ["the teacher is weak"]
    text = (tmp_path / "run.log").read_text()
    assert "INFO n2n_fx.search.stages: removal 1/2" in text and "WARNING n2n_fx.search.stages: the teacher" in text
    assert "detail" not in text and "after the run" not in text
    assert _package_state() == before


def test_quiet_means_no_progress_line_or_bar_whatever_the_configuration(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Terminal())
    yours = _Kept()
    log = logging.getLogger("n2n_fx.search.stages")
    with _bare_root(yours), _levels(logging.INFO):  # the user asked for the package's INFO lines
        with verbosity(True):
            assert not _drawn()
            log.info("hidden")
            log.warning("shown")
        with verbosity(None):  # as configured
            assert _drawn()
            log.info("as configured")
    assert yours.messages == ["shown", "as configured"]
    assert "as configured" not in sys.stderr.getvalue()  # verbosity(None) adds no console of its own
    with _levels(logging.NOTSET), verbosity(False):
        assert _drawn()
        log.info("on stderr")
    assert "on stderr\n" in sys.stderr.getvalue()


def test_bars_are_drawn_on_a_terminal_when_progress_lines_are_shown(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Terminal())
    with _levels(logging.NOTSET, logging.WARNING):  # the library's default: no INFO line, no bar
        assert not _drawn()
        _bars_follow_the_console(tmp_path, monkeypatch)


def _bars_follow_the_console(tmp_path, monkeypatch) -> None:
    with console(logging.INFO):
        assert _drawn()
        with log_file(tmp_path / "a.log"):
            assert _drawn()
    with console(logging.ERROR):  # -q
        assert not _drawn()
        with log_file(tmp_path / "b.log"):  # the run's file lowers the logger: the bars stay hidden
            assert not _drawn()
    with quieted():
        assert not _drawn()
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: no bars, whatever the level
    with console(logging.INFO):
        assert not _drawn()


def test_console_lines_say_their_level_but_progress_lines(capsys):
    log = logging.getLogger("n2n_fx.teacher.train")
    with console(logging.DEBUG):
        log.info("teacher epoch 1/3: loss 2.3")
        log.debug("teacher recipe")
        log.warning("teacher is weak")
    assert capsys.readouterr().err == "teacher epoch 1/3: loss 2.3\ndebug: teacher recipe\nwarning: teacher is weak\n"
    with console(logging.INFO):
        log.debug("not shown")
    assert capsys.readouterr().err == ""


# -- the command line -----------------------------------------------------------------------------
def test_the_cli_shows_progress_on_stderr_the_report_on_stdout_and_q_only_the_report(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("N2N_FX_CACHE", str(tmp_path / "cache"))
    (tmp_path / "run.json").write_text(json.dumps(RUN))
    assert main(["compress", "--config", str(tmp_path / "run.json"), "--run-dir", str(tmp_path / "r")]) == 0
    out, err = capsys.readouterr()
    for line in RUN_LINES:
        assert line in err and line not in out, line
    assert "run directory:" in out
    assert "removal 1/1: mean reward" in (tmp_path / "r" / "run.log").read_text()
    assert main(["compress", "-q", "--config", str(tmp_path / "run.json"), "--run-dir", str(tmp_path / "q")]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "run directory:" in out
    assert "removal 1/1: mean reward" in (tmp_path / "q" / "run.log").read_text()  # -q quiets the console only


@pytest.mark.parametrize("where", ["before", "after"])
def test_cli_q_hides_the_progress_lines_and_v_adds_detail(tmp_path, capsys, where):
    def run(flag: str, out: str) -> tuple[str, str]:
        argv = [*TEACHER, *TEACHER_DATA, "--out", str(tmp_path / out)]
        flags = [flag] if flag else []
        assert main([*flags, *argv] if where == "before" else [*argv, *flags]) == 0
        return capsys.readouterr()

    out, err = run("", "a.pt")
    assert "teacher epoch 1/1" in err and "data: " in err and "debug: " not in err
    assert "val accuracy" in out and "teacher epoch" not in out  # the result stays on stdout
    out, err = run("-q", "b.pt")
    assert err == ""  # as --quiet always was: the result, and an error if any
    assert "val accuracy" in out
    out, err = run("-v", "c.pt")
    assert "teacher epoch 1/1" in err and "debug: teacher recipe" in err


def test_cli_refuses_q_with_v_in_one_line(capsys):
    one_line_error(capsys, ["-q", "train-teacher", "vgg_tiny", "-v"], "-q/--quiet")
    one_line_error(capsys, ["train-teacher", "vgg_tiny", "-q", "-v"], "not allowed with")
