"""Several lines: how well do the shipped nets read every row of digits on a page, with ``--lines``?

Each page holds 2 or 3 handwritten numbers, one under the other, as a list is written: each number 2 to 6 MNIST
*test* digits (drawn from ``--seed``) made into a row as ``benchmarks.number_digits`` makes them (8 px gaps between
the digits, each moved up or down by up to 2 px and scaled by 0.85-1.15), the rows 40 MNIST px apart (the digits'
ink 4-16 px apart between lines), each indented 0-10 px, the page enlarged 8 times, black ink on white. Under
"photo" the page is grey, lit unevenly, noisy and saved as JPEG (``number_digits.page``). "apart" puts 20 px more
between the lines. ``cnnlab.predictor(model=M).read_lines`` reads each page.

Per condition and net: the pages read right (every line, in order, every digit), the pages whose number of lines
is right, the lines read right among those pages, and ms a page. Also ``read_number`` on the same pages
(one line read, the others left out and counted): how often it counts some left out. Printed, and written to
``benchmarks/results/number_lines.{json,md}``.

    python -m benchmarks.number_lines [--n 200] [--models resnet inception]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import write
from benchmarks.number_digits import handwritten_row, page

#: name: (lines on a page, extra MNIST px between the lines, photo-like page)
CONDITIONS = {
    "2 lines, scan": (2, 0, False),
    "3 lines, scan": (3, 0, False),
    "3 lines, apart (20 px more), scan": (3, 20, False),
    "2 lines, photo": (2, 0, True),
}


def lines_ink(rows: list[np.ndarray], extra: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of ink (40 px high each) one under the other, ``extra`` px apart, each indented 0-10 px."""
    width = max(r.shape[1] for r in rows) + 10
    parts = []
    for r in rows:
        indent = int(rng.integers(0, 11))
        line = np.zeros((40, width), np.float32)
        line[:, indent:indent + r.shape[1]] = r
        parts += [line, np.zeros((extra, width), np.float32)]
    return np.concatenate(parts[:-1], axis=0)


def page_sets(data, n: int, seed: int) -> dict:
    """Per condition: (pages, truths), a truth being the page's numbers, top to bottom."""
    images, labels = data.test_images[:, 0].numpy(), data.test_labels.numpy()
    sets = {}
    for ci, (name, (count, extra, photo)) in enumerate(CONDITIONS.items()):
        rng = np.random.default_rng([seed, 11, ci])
        pages, truths = [], []
        for i in range(n):
            picks = [rng.choice(len(labels), size=int(rng.integers(2, 7)), replace=False) for _ in range(count)]
            r = np.random.default_rng([seed, 11, ci, i])
            rows = [handwritten_row([images[j] for j in idx], 8, r) for idx in picks]
            pages.append(page(lines_ink(rows, extra, r), photo, r))
            truths.append(["".join(str(int(labels[j])) for j in idx) for idx in picks])
        sets[name] = (pages, truths)
    return sets


def score(predictor, pages, truths) -> dict:
    """Pages right, pages with the right number of lines, lines right among those (%), ms a page; and how often
    ``read_number`` counts marks left out on them (%)."""
    right = count = lines = lines_right = noted = 0
    t0 = time.perf_counter()
    for img, truth in zip(pages, truths):
        read = [number.label for number in predictor.read_lines(img)]
        right += read == truth
        if len(read) == len(truth):
            count += 1
            lines += len(truth)
            lines_right += sum(a == b for a, b in zip(read, truth))
    ms = 1000 * (time.perf_counter() - t0) / len(pages)
    noted = sum(predictor.read_number(img).left_out > 0 for img in pages)
    n = len(pages)
    return {"pages": 100 * right / n, "line count": 100 * count / n, "lines": 100 * lines_right / max(lines, 1),
            "ms": ms, "read_number notes left out": 100 * noted / n}


def markdown(rows: dict, n: int) -> str:
    models = list(next(iter(rows.values())))
    out = [f"## Several lines read with `--lines`: {n} pages per condition (2-6 MNIST test digits a line)", "",
           "| condition | " + " | ".join(f"{m}: pages right | line count right | lines right" for m in models)
           + " | ms a page | `--number` notes lines left out |",
           "|---|" + "---:|---:|---:|" * len(models) + "---:|---:|"]
    for name, row in rows.items():
        cells = " | ".join(f"{row[m]['pages']:.1f}% | {row[m]['line count']:.1f}% | {row[m]['lines']:.1f}%"
                           for m in models)
        first = row[models[0]]
        out.append(f"| {name} | {cells} | {first['ms']:.0f} | {first['read_number notes left out']:.1f}% |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.number_lines", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200, help="pages per condition (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", nargs="+", default=["resnet", "inception"])
    args = p.parse_args(argv)

    import cnnlab
    from cnnlab.data import load_dataset

    sets = page_sets(load_dataset("mnist"), args.n, args.seed)
    predictors = {m: cnnlab.predictor(model=m) for m in args.models}
    rows = {}
    for name, (pages, truths) in sets.items():
        rows[name] = {m: score(pr, pages, truths) for m, pr in predictors.items()}
        print(f"  {name:36s} " + "  ".join(f"{m}: {r['pages']:5.1f}% pages ({r['line count']:5.1f}% line count, "
                                           f"{r['lines']:5.1f}% lines)" for m, r in rows[name].items()), flush=True)
    write("number_lines", {"n": args.n, "seed": args.seed, "rows": rows}, markdown(rows, args.n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
