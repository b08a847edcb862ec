"""``make bench``: run the benchmarks and write benchmarks/results/*.json and *.md.

    python -m benchmarks.run                       # all four
    python -m benchmarks.run throughput roofline   # some
    python -m benchmarks.run --quick               # fewer steps/repeats/seeds, to check it works;
                                                   # writes benchmarks/results/quick/, not the real results
"""

from __future__ import annotations

import argparse

from benchmarks import common, roofline, throughput, time_to_accuracy, whole_process


ALL = ("whole_process", "throughput", "roofline", "time_to_accuracy")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run")
    p.add_argument("which", nargs="*", choices=[[], *ALL], default=[],
                   help=f"benchmarks to run (default: all of {', '.join(ALL)})")
    p.add_argument("--quick", action="store_true", help="few steps, repeats and seeds")
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args(argv)
    args.which = args.which or list(ALL)
    steps, repeats = (40, 2) if args.quick else (300, 5)
    if args.quick:
        common.RESULTS = common.RESULTS / "quick"
    if "whole_process" in args.which:
        whole_process.run(repeats=1 if args.quick else 3)
    if "throughput" in args.which:
        throughput.run(steps=steps, repeats=repeats)
    if "roofline" in args.which:
        roofline.run(steps=steps // 2, repeats=max(1, repeats - 2))
    if "time_to_accuracy" in args.which:
        time_to_accuracy.run(seeds=1 if args.quick else args.seeds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
