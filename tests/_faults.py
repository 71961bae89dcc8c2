"""Run ``n2n-fx`` in this process and kill it with SIGKILL at a chosen point (used by the tests).

    python tests/_faults.py MODE -- n2n-fx arguments...

MODE:
    none       run normally (one torch thread, like the test process), print the number of writes
    start      kill -9 when the search starts (the run's inputs are written, no checkpoint yet)
    write:K    kill -9 half-way through the K-th file write (temp file or history row cut)
Every write of n2n_fx goes through ``n2n_fx.storage._write``, so K counts them all.
"""

from __future__ import annotations

import os
import signal
import sys


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    mode, sep, *args = argv
    assert sep == "--", "usage: _faults.py MODE -- n2n-fx args..."
    import torch

    torch.set_num_threads(1)  # as tests/conftest.py: results equal to the in-process runs
    from n2n_fx import storage
    from n2n_fx.cli import main as cli_main
    from n2n_fx.search.search import Search

    writes = 0
    real_write = storage._write

    def counted_write(f, data, path):
        nonlocal writes
        writes += 1
        if mode == f"write:{writes}":
            f.write(bytes(data)[: max(1, len(data) // 2)])
            f.flush()
            _die()
        real_write(f, data, path)

    storage._write = counted_write
    if mode == "start":
        Search.run = lambda self, resume=False: _die()
    rc = cli_main(args)
    print(f"writes={writes}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
