"""The command line: flags generated from SearchConfig, listings, JSON output, resume rules, config files."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
from _cli import one_line_error
from _tiny import tiny

from n2n_fx import __version__
from n2n_fx.cli import _parser, main
from n2n_fx.cli.config_args import add_config_args, field_docs, flag_of, given_config
from n2n_fx.errors import ConfigError
from n2n_fx.search import SearchConfig, load_config_file, run_compress
from n2n_fx.search.fields import check_fields

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = [
    "teacher and data",
    "search (paper Algorithm 1)",
    "reward evaluation (students trained briefly by KD, paper §3.5)",
    "constraints (paper §3.3.1)",
    "final training (CE + λ·KD)",
    "run",
]


def _compress_parser() -> argparse.ArgumentParser:
    sub = next(a for a in _parser()[0]._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["compress"]


def _source_comments() -> dict[str, str]:
    """Field -> the comment written on its line in config.py, else the comment line just above it."""
    lines = (ROOT / "n2n_fx" / "search" / "config.py").read_text().splitlines()
    out = {}
    for i, line in enumerate(lines):
        m = re.match(r"    (\w+): [^=]+ = .*?(?:  # (.*))?$", line)
        if m and not line.lstrip().startswith("#"):
            above = lines[i - 1].strip()
            out[m.group(1)] = m.group(2) or (above[1:].strip() if above.startswith("#") else "")
    return out


# -- flags generated from the config ---------------------------------------------------------------------


def test_every_searchconfig_field_has_a_flag_whose_help_is_its_comment():
    """A field added to SearchConfig gets its flag, help and group with no edit of the CLI."""
    parser = _compress_parser()
    by_dest = {a.dest: a for a in parser._actions}
    group_of = {a.dest: g.title for g in parser._action_groups for a in g._group_actions}
    comments = _source_comments()
    docs = field_docs(SearchConfig)
    hints = typing.get_type_hints(SearchConfig)
    for f in dataclasses.fields(SearchConfig):
        action = by_dest.get(f.name)
        assert action is not None, f"SearchConfig.{f.name} has no flag"
        assert flag_of(f.name) in action.option_strings
        assert comments[f.name], f"SearchConfig.{f.name} has no comment"
        help_text = action.help.replace("%%", "%")
        assert comments[f.name] in help_text, (f.name, help_text)
        assert help_text.startswith(docs[f.name].help) and docs[f.name].help, f.name
        assert group_of[f.name] == docs[f.name].section, f.name
        if typing.get_origin(hints[f.name]) is Literal:
            assert list(action.choices) == list(typing.get_args(hints[f.name])), f.name
    assert [g.title for g in parser._action_groups if g.title in SECTIONS] == SECTIONS


def test_baseline_flags_carry_the_config_comments_too():
    sub = next(a for a in _parser()[0]._actions if isinstance(a, argparse._SubParsersAction))
    methods = next(a for a in sub.choices["baseline"]._actions if isinstance(a, argparse._SubParsersAction))
    docs = field_docs(SearchConfig)
    for method in ("random", "prune", "handmade"):
        fields = [a for a in methods.choices[method]._actions if a.dest in docs]
        assert {"model", "dataset", "seed", "device"} <= {a.dest for a in fields}, method
        for action in fields:
            assert action.help.replace("%%", "%").startswith(docs[action.dest].help), (method, action.dest)
    stage = next(a for a in methods.choices["random"]._actions if a.dest == "stage")
    assert stage.choices == ["removal", "shrink", "both"]


def test_compress_help_shows_comments_choices_and_groups(capsys):
    assert main(["compress", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--stage {removal,shrink,both}" in text
    assert "--reward-mode {kd,shared,shared+kd}" in text
    assert "Adam lr of the reward-time KD" in text  # reward_lr: a field that had no flag before
    assert "N1: policy updates of the removal stage (default: 60)" in text
    for title in SECTIONS:
        assert f"{title}:" in text


def test_a_field_added_later_gets_its_flag_without_a_cli_edit():
    @dataclass(frozen=True)
    class Later(SearchConfig):
        # a knob added after the CLI was written,
        # with a two-line comment
        new_knob: Literal["a", "b"] = "a"
        new_count: int | None = None  # how many of something (None: all)
        new_sizes: tuple[int, ...] = (1, 2)  # sizes to try

    p = argparse.ArgumentParser()
    add_config_args(p, Later)
    by_dest = {a.dest: a for a in p._actions}
    assert by_dest["new_knob"].choices == ["a", "b"]
    assert by_dest["new_knob"].help.startswith("a knob added after the CLI was written, with a two-line comment")
    assert by_dest["new_count"].help.startswith("how many of something (None: all)")
    assert by_dest["reward_lr"].help.startswith("Adam lr of the reward-time KD")  # from the base class
    assert by_dest["new_sizes"].help == "sizes to try (default: (1, 2))"
    args = p.parse_args(["--new-knob", "b", "--new-count", "none", "--max-flops-ratio", "2", "--new-sizes", "3", "4"])
    given = given_config(args, Later)
    assert given == {"new_knob": "b", "new_count": None, "max_flops_ratio": 2.0, "new_sizes": (3, 4)}
    assert Later(**given).new_sizes == (3, 4)  # and the config takes them
    with pytest.raises(SystemExit):
        p.parse_args(["--new-knob", "c"])


def test_literal_fields_name_what_their_registries_hold():
    """The choices the CLI offers are the ones the code runs: a registry and its Literal stay equal."""
    from n2n_fx.policy.learner import BASELINES
    from n2n_fx.reward import OBJECTIVES, PENALTY_MODES, REWARD_MODES, SCHEDULES
    from n2n_fx.search.executors import EXECUTORS

    hints = typing.get_type_hints(SearchConfig)
    registries = {
        "reward_mode": REWARD_MODES,
        "objective": OBJECTIVES,
        "penalty": PENALTY_MODES,
        "penalty_schedule": SCHEDULES,
        "executor": EXECUTORS,
        "reinforce_baseline": BASELINES,
    }
    for name, registry in registries.items():
        assert set(typing.get_args(hints[name])) == set(registry), name
    for name in ("reward_mode", "objective", "penalty", "executor"):
        for value in typing.get_args(hints[name]):
            SearchConfig(**{name: value})  # every choice is accepted


def test_check_fields_reads_literal_choices():
    with pytest.raises(ConfigError, match="unknown stage 'x'; use one of removal, shrink, both"):
        SearchConfig(stage="x")
    with pytest.raises(ConfigError, match="unknown final_loss 3"):
        SearchConfig(final_loss=3)

    @dataclass(frozen=True)
    class Modes:
        mode: Literal["a", "b"] | None = None  # an optional choice
        count: Literal[1, 2] = 1  # choices of another type

    check_fields(Modes("b"))
    check_fields(Modes(None))
    with pytest.raises(ConfigError, match="mode must be one of 'a', 'b' or unset"):
        check_fields(Modes("c"))
    with pytest.raises(ConfigError, match="unknown count True"):
        check_fields(Modes(count=True))  # True == 1, but not one of the choices


def test_usage_errors_are_one_line(capsys):
    one_line_error(capsys, ["compress", "--stage", "all"], "--stage", "invalid choice")
    one_line_error(capsys, ["compress", "--removal-iterations", "x"], "'x' is not an integer")
    one_line_error(capsys, ["compress", "--data-option", "oops", "--print-config"], "--data-option 'oops'")


# -- --print-config -----------------------------------------------------------------------------------------


def test_print_config_resolves_defaults_file_and_flags(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["compress", "--print-config", "--stage", "removal", "--reward-lr", "none", "--max-params", "20K"]
    argv += ["--data-option", "num_samples=100", "--max-flops-ratio", "none", "--download"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {
        **SearchConfig().to_dict(),
        "stage": "removal",
        "reward_lr": None,
        "max_params": 20000.0,
        "dataset_options": {"num_samples": 100},
        "max_flops_ratio": None,
        "download": True,
    }
    assert list(tmp_path.iterdir()) == []  # nothing was run or written

    (tmp_path / "c.json").write_text(json.dumps(printed))  # it is a config file: round trip
    assert main(["compress", "--config", str(tmp_path / "c.json"), "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out) == printed
    # flags override the file, --no-X turns a file's true off
    assert (
        main(["compress", "--config", str(tmp_path / "c.json"), "--print-config", "--no-download", "--seed", "4"]) == 0
    )
    again = json.loads(capsys.readouterr().out)
    assert again == {**printed, "download": False, "seed": 4}
    # split folders are image-folder options
    assert main(["compress", "--print-config", "--train-dir", "tr", "--data-option", "image_size=32"]) == 0
    folder = json.loads(capsys.readouterr().out)
    assert folder["dataset"] == "imagefolder" and folder["dataset_options"] == {"image_size": 32, "train_dir": "tr"}


def test_print_config_refuses_a_bad_setting_in_one_line(tmp_path, capsys):
    (tmp_path / "c.json").write_text(json.dumps({"rollouts": 0}))
    one_line_error(capsys, ["compress", "--config", str(tmp_path / "c.json"), "--print-config"], "rollouts")


# -- --version, models, datasets -------------------------------------------------------------------------------


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"n2n-fx {__version__}"
    project = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert project and project.group(1) == __version__


def test_models_and_datasets_list_alike(capsys):
    from n2n_fx import build_model

    assert main(["models", "--format", "json"]) == 0
    models = json.loads(capsys.readouterr().out)["models"]
    assert models["vgg_tiny"]["source"] == "project" and models["resnet18"]["source"] == "torchvision"
    assert {"conv4", "vgg13_small", "vgg_tiny", "mobilenet_v2"} <= set(models)
    assert all(m["about"] for m in models.values())
    for name in ("conv4", "squeezenet1_1"):  # a listed name builds
        build_model(name)
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("conv4: The paper's small MNIST teacher") and "resnet18" in text

    assert main(["datasets", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "synthetic" in data["datasets"] and data["datasets"]["synthetic"]["about"]
    assert "val_size" in data["split_options"] and "crop" in data["augmentations"]
    assert main(["models", "resnet18", "--format", "json"]) == 0
    assert list(json.loads(capsys.readouterr().out)["models"]) == ["resnet18"]
    one_line_error(capsys, ["models", "resnet19"], "unknown model 'resnet19'")
    one_line_error(capsys, ["datasets", "mnist2"], "unknown data set 'mnist2'")


# -- --format json on surgery, diff, report --------------------------------------------------------------------


def test_surgery_prints_json(capsys):
    argv = ["surgery", "resnet18", "--remove", "layer1.0.relu", "--shrink", "layer2.0.conv1=0.5", "--format", "json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["diff"]["removed"] == ["layer1_0_relu"]
    assert out["diff"]["shrunk"]["layer2_0_conv1"]["out"] == [128, 64]
    assert out["degenerate"] is None and out["student"]["params"] < out["teacher"]["params"]
    assert out["compression"] == pytest.approx(out["teacher"]["params"] / out["student"]["params"])


def test_a_degenerate_surgery_says_so_in_json(capsys):
    from n2n_fx import find_layers, trace

    layers = [lay.node for lay in find_layers(trace("conv4", input_size=(1, 28, 28))) if lay.removable]
    argv = ["surgery", "conv4", "--input-size", "1x28x28", "--remove", *layers, "--format", "json"]
    assert main(argv) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["degenerate"].startswith("empty") and out["student"] is None and out["compression"] is None
    assert out["diff"]["removed"] == layers


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli") / "run"
    run_compress(SearchConfig(**tiny(stage="removal")), d, quiet=True)
    return d


def test_diff_and_report_print_json(finished_run, capsys):
    assert main(["diff", str(finished_run), "--format", "json"]) == 0
    diff = json.loads(capsys.readouterr().out)
    assert diff == json.loads((finished_run / "student_diff.json").read_text())
    assert main(["report", str(finished_run), "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == json.loads((finished_run / "summary.json").read_text())
    one_line_error(capsys, ["report", str(finished_run), "--format", "json", "--markdown"], "--markdown")


# -- --resume: refuse conflicts, apply extensions -------------------------------------------------------------


def _rows(run: Path) -> list[dict]:
    keep = ("stage", "iteration", "rollout", "actions", "accuracy", "reward")
    return [{k: r[k] for k in keep} for r in map(json.loads, (run / "history.jsonl").read_text().splitlines())]


def test_resume_refuses_conflicting_flags_in_one_line(finished_run, capsys):
    run = str(finished_run)
    before = (finished_run / "config.json").read_text()
    one_line_error(
        capsys,
        ["compress", "--resume", run, "--reward-lr", "0.5"],
        "--reward-lr 0.5",
        "recorded reward_lr=none",
        "keeps the run's settings",
    )
    one_line_error(capsys, ["compress", "--resume", run, "--removal-iterations", "1"], "can only raise it")
    one_line_error(capsys, ["compress", "--resume", run, "--final-epochs", "5"], "the run has finished")
    one_line_error(capsys, ["compress", "--resume", run, "--shrink-iterations", "5"], "stage removal does not use it")
    one_line_error(capsys, ["compress", "--resume", run, "--run-dir", "elsewhere"], "--run-dir")
    assert (finished_run / "config.json").read_text() == before
    # the recorded values themselves are no conflict
    assert main(["compress", "--resume", run, "--print-config", "--seed", "0", "--removal-iterations", "2"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(before)


def test_resume_raises_the_iterations_as_if_asked_from_the_start(tmp_path, capsys):
    """A run stopped after its first removal iteration and resumed with more iterations records the
    history of a run asked for them from the start."""
    from n2n_fx.search import Search

    class StopAfterFirstIteration(Search):
        def save_checkpoint(self) -> None:
            super().save_checkpoint()
            if self.state.phase == "removal" and self.state.iteration == 1:
                raise KeyboardInterrupt

    cfg = tiny(stage="removal", removal_iterations=2)
    with pytest.raises(KeyboardInterrupt):
        run_compress(SearchConfig(**cfg), tmp_path / "cut", quiet=True, search_cls=StopAfterFirstIteration)
    argv = ["compress", "--resume", str(tmp_path / "cut"), "--removal-iterations", "3", "--final-epochs", "2"]
    assert main([*argv, "--data-root", str(tmp_path / "data"), "--seed", "0"]) == 0  # a data root may move
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("resume: "))
    assert "extended removal_iterations 2 -> 3" in line and "extended final_epochs 1 -> 2" in line
    assert f"changed data_root none -> {tmp_path / 'data'}" in line
    log = (tmp_path / "cut" / "run.log").read_text()  # both sessions, the resume's line included
    assert log.count("teacher logits: caching on") == 2  # once per session
    assert log.index("teacher logits") < log.index("resume: ") < log.index("resuming at removal iteration 1")
    recorded = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert recorded["removal_iterations"] == 3 and recorded["final_epochs"] == 2  # a later resume keeps them
    assert recorded["data_root"] == str(tmp_path / "data")
    run_compress(SearchConfig(**{**cfg, "removal_iterations": 3, "final_epochs": 2}), tmp_path / "whole", quiet=True)
    assert _rows(tmp_path / "cut") == _rows(tmp_path / "whole")
    assert max(r["iteration"] for r in _rows(tmp_path / "cut")) == 2


# -- TOML config files ------------------------------------------------------------------------------------------


def test_toml_config_files_on_every_supported_python(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text('stage = "removal"\nrollouts = 3\n[dataset_options]\nnum_samples = 100\n')
    expected = {"stage": "removal", "rollouts": 3, "dataset_options": {"num_samples": 100}}
    assert load_config_file(path) == expected
    if sys.version_info < (3, 11):
        return  # the tomli backport itself read it
    # Python 3.10 has no tomllib: the tomli backport (a dependency there) reads the file
    import tomllib

    read = []
    tomli = types.ModuleType("tomli")
    tomli.loads = lambda text: read.append(text) or tomllib.loads(text)
    monkeypatch.setitem(sys.modules, "tomli", tomli)
    monkeypatch.setattr(sys, "version_info", (3, 10, 14, "final", 0))
    assert load_config_file(path) == expected and read
    path.write_text("stage = \n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config_file(path)


def test_a_resumed_random_search_follows_the_same_rules(tmp_path, capsys):
    from n2n_fx.baselines.random_search import run_random_search

    d = tmp_path / "random"
    run_random_search(SearchConfig(**tiny(stage="removal")), d, quiet=True)
    resume = ["baseline", "random", "--resume", str(d)]
    one_line_error(capsys, [*resume, "--seed", "5"], "--seed 5 conflicts with the run's recorded seed=0")
    one_line_error(capsys, [*resume, "--p-remove", "0.3"], "--p-remove with --resume")
    one_line_error(capsys, [*resume, "--final-epochs", "3"], "the run has finished")
    assert main([*resume, "--seed", "0", "--quiet"]) == 0  # the recorded value: no conflict
