"""Checks the CLI tests share."""

from __future__ import annotations

from n2n_fx.cli import main


def one_line_error(capsys, argv: list[str], *must: str) -> str:
    """Run ``n2n-fx argv``: exit status 2 and one stderr line holding each of ``must``; return the line."""
    rc = main(argv)  # usage errors too: a status, not SystemExit
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    for m in must:
        assert m in err, err
    return err
