"""The ``n2n-fx`` command line: one module per subcommand, each with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import N2NError
from ..progress import console
from .common import add_verbosity_args, log_level

__all__ = ["main", "SUBCOMMANDS"]

# subcommand name -> module (relative to n2n_fx.cli) defining add_parser(sub) and run(args) -> int
SUBCOMMANDS = {
    "inspect": "inspect_cmd",
    "surgery": "surgery_cmd",
    "train-teacher": "train_teacher_cmd",
    "compress": "compress_cmd",
    "report": "report_cmd",
    "diff": "diff_cmd",
    "export": "export_cmd",
    "baseline": "baseline_cmd",
    "datasets": "datasets_cmd",
    "models": "models_cmd",
}


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error of the CLI (exit status 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = _Parser(
        prog="n2n-fx",
        description="Compress neural networks by learned graph surgery (N2N on torch.fx).",
    )
    parser.add_argument("--version", action="version", version=f"n2n-fx {__version__}")
    add_verbosity_args(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    runners = {}
    for name, mod_name in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(f".{mod_name}", __name__)
        except ModuleNotFoundError as e:
            if e.name and e.name.endswith(mod_name):
                continue  # subcommand not built yet
            raise
        p = mod.add_parser(sub, name)
        add_verbosity_args(p)
        p.set_defaults(_run=mod.run)
        runners[name] = mod.run
    return parser, runners


def main(argv: list[str] | None = None) -> int:
    parser, _ = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version (0) and usage errors (2, one line): a status, as every other exit
        return e.code if isinstance(e.code, int) else 2
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        with console(log_level(args)):  # progress lines on stderr, above the bars; the output on stdout
            return int(args._run(args) or 0)
    except N2NError as e:
        print(f"n2n-fx {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"n2n-fx {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
