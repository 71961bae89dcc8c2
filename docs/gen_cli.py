"""Regenerate docs/cli.md from the argparse help of every command: ``python docs/gen_cli.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from n2n_fx.cli import SUBCOMMANDS as COMMANDS  # every command, in the order `n2n-fx --help` lists them

SUBCOMMANDS = {"baseline": ["random", "prune", "handmade"]}


def help_text(*args: str) -> str:
    env = dict(os.environ, COLUMNS="80")
    argv = [sys.executable, "-m", "n2n_fx", *args, "--help"]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    return out.stdout.rstrip()


def main() -> None:
    parts = ["# CLI reference", "", "Generated from `n2n-fx <command> --help` by `python docs/gen_cli.py`.", ""]
    parts += ["## `n2n-fx`", "", "```", help_text(), "```", ""]
    for cmd in COMMANDS:
        parts += [f"## `n2n-fx {cmd}`", "", "```", help_text(cmd), "```", ""]
        for sub in SUBCOMMANDS.get(cmd, []):
            parts += [f"### `n2n-fx {cmd} {sub}`", "", "```", help_text(cmd, sub), "```", ""]
    path = Path(__file__).with_name("cli.md")
    path.write_text("\n".join(parts))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
