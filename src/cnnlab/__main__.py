import sys

try:
    from cnnlab.cli import console
except KeyboardInterrupt:  # Ctrl-C while the command line's own modules load: one line, not their traceback
    sys.stderr.write("cnnlab: interrupted\n")
    raise SystemExit(130) from None

if __name__ == "__main__":
    raise SystemExit(console())
