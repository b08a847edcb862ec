"""The newcomer tester's defects (s44, fix helper fixN): a negative number written with an exponent or as inf read as
a value; ... docs/reliability.md lists them."""

from __future__ import annotations

import pytest

from cnnlab.cli import main


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """``cnnlab ARGV``'s exit code, stdout and stderr (argparse's refusals exit)."""
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- D7: -1e-3, -inf


@pytest.mark.parametrize("argv, line", [
    (["train", "--lr", "-1e-3", "--dry-run"], "--lr must be a positive finite number, got -0.001"),
    (["train", "--ema", "-inf", "--dry-run"], "--ema is a decay in [0, 1) (0: off), got -inf"),
    (["train", "--lr", "-2.5E+1", "--dry-run"], "--lr must be a positive finite number, got -25.0"),
    (["train", "--seed", "-1e3", "--dry-run"], "argument --seed: invalid int value: '-1e3'"),
    (["analyze", "gradients", "--lr", "-1E-2"], "--lr must be a positive finite number, got -0.01"),
])
def test_a_negative_number_with_an_exponent_or_inf_is_a_value(argv, line, capsys):
    """newcomer D7. ``train --lr -1e-3`` said ``argument --lr: expected one argument`` (argparse's negative-number
    test knew ``-1`` and ``-.5`` only, and took ``-1e-3`` and ``-inf`` for options): the value is read, and the
    flag's own check names the problem, as ``--lr=-1e-3`` did."""
    code, out, err = run(argv, capsys)
    assert code == 2 and not out and err.count("\n") == 1, err
    assert line in err and "expected one argument" not in err, err
