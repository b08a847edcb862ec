"""``python -m cnnlab`` and the ``cnnlab`` console script (whose entry point is :func:`main`): a Ctrl-C while the
command line's own modules load is one line, not their traceback."""

import sys

try:
    from cnnlab.cli import console
except KeyboardInterrupt:
    sys.stderr.write("cnnlab: interrupted\n")
    raise SystemExit(130) from None


def main() -> int:
    """The console script's entry point: the command line, its modules loaded under the guard above."""
    return console()


if __name__ == "__main__":
    raise SystemExit(main())
