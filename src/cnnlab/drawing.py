"""Pillow drawing for the figures every run writes: text that fits, a title block, and a small line chart.

matplotlib takes 1-2 s to import and about a second to draw a two-panel figure on a slow CPU; every
``cnnlab train`` and every ``cnnlab evaluate`` that changes a figure paid it before the process could exit.
The figures a run writes (curves, confusion matrix, mistakes) are few and always alike, so they are drawn here
with Pillow alone: lines and text are drawn at :data:`SCALE` times the size and the picture is then shrunk
(anti-aliasing). ``cnnlab compare`` and ``cnnlab analyze`` still draw with matplotlib (:mod:`cnnlab.plots`).
"""

from __future__ import annotations

import functools
import importlib.util
import io
import math
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from cnnlab.fileio import FIGURE_MARK, atomic_write_bytes
from cnnlab.text import INVISIBLE, reads_as

FONT_SIZE, TITLE_SIZE = 12, 14
LINE_H = FONT_SIZE + 4
GAP = 14  # px: the margin around a figure's parts
INK, MUTED, GRID = (20, 20, 20), (90, 90, 90), (228, 228, 228)
#: matplotlib's "tab" colours, so that the figures look like the ones drawn with it.
COLOURS = {"blue": (31, 119, 180), "orange": (255, 127, 14), "green": (44, 160, 44), "gray": (127, 127, 127)}
SCALE = 2  # charts are drawn this many times larger, then shrunk: smooth lines
#: The keys of a context shown first, in this order; any other key follows as "key value".
CONTEXT_ORDER = ("model", "dataset", "run", "folder")


#: The font the figures are drawn in: DejaVu Sans, which matplotlib (a dependency) ships and draws its own figures
#: in. Pillow's built-in font (``ImageFont.load_default``) has Latin letters only: é, ß, Greek, CJK were one and the
#: same box, and classes named so could not be told apart.
FONT_FILE = ("mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
#: What a figure's name or title shows for a character its font has no glyph for (a CJK character or an emoji in
#: DejaVu Sans): its code point, so that names that differ there stay different (not each the same box).
MISSING = "U+{:04X}"
ELLIPSIS = "…"


@functools.cache
def font_file() -> str | None:
    """The path of matplotlib's DejaVu Sans, found without importing matplotlib (1-2 s); None without it."""
    try:
        spec = importlib.util.find_spec("matplotlib")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder).joinpath(*FONT_FILE)
        if path.is_file():
            return str(path)
    return None


@functools.cache
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """The figures' font at ``size`` px: DejaVu Sans (:func:`font_file`), or Pillow's built-in one without it."""
    if (path := font_file()) is not None:
        try:
            return ImageFont.truetype(path, size)
        except (OSError, ImportError):  # a damaged file, Pillow without FreeType
            pass
    try:
        return ImageFont.load_default(size=size)  # Pillow's scalable built-in font (needs FreeType)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()  # the small bitmap font


#: The characters taken as drawable by a font whose own table cannot be read (Pillow's built-in font): ASCII, and
#: the ellipsis that shortened text ends with (drawn again, a shortened name must stay as it is).
_ASCII = frozenset(range(0x20, 0x7F)) | {ord(ELLIPSIS)}


@functools.cache
def covered(path: str | None) -> frozenset[int]:
    """The code points the font file at ``path`` has glyphs for (its cmap, read once with fontTools, which
    matplotlib depends on); ASCII only for None, or a file fontTools cannot read."""
    if path is None:
        return _ASCII
    try:
        from fontTools.ttLib import TTFont

        with TTFont(path, lazy=True, fontNumber=0) as f:
            return frozenset(f.getBestCmap() or ()) | {0x20}
    except Exception:  # no fontTools, a damaged or unusual file: what every font has
        return _ASCII


def drawing_font_file() -> str | None:
    """The file :func:`font` draws with; None for Pillow's built-in font (held in memory, no file)."""
    path = getattr(font(FONT_SIZE), "path", None)
    return path if isinstance(path, str) else None


def units(text: str, font_path: str | None | bool = True) -> list[str]:
    """``text`` as what a figure shows of each character: a control character (a newline or tab in a folder's or a
    run's name) as a space, for Pillow measures and anchors one line only; a character the font at ``font_path``
    lacks (True: :func:`font`'s) as its code point, :data:`MISSING`."""
    text = str(text)
    if text.isascii():  # every font here draws printable ASCII: no need to read the font's table (50 ms)
        return [" " if unicodedata.category(c) == "Cc" else c for c in text]
    have = covered(drawing_font_file() if font_path is True else font_path)
    return [" " if unicodedata.category(c) == "Cc" else c if ord(c) in have else MISSING.format(ord(c))
            for c in text]


def one_line(text: str, font_path: str | None | bool = True) -> str:
    """``text`` on one line, every character drawable (:func:`units`)."""
    return "".join(units(text, font_path))


def shorten(text: str, fits: Callable[[str], bool], middle: bool = False, font_path: str | None | bool = True) -> str:
    """``text`` on one line (:func:`one_line`), cut with an ellipsis until ``fits`` takes it: at its end, or, with
    ``middle``, in its middle (its start and end kept, two thirds and one third: long class names that differ at
    their end stay different); never inside a character shown by its code point."""
    parts = units(text, font_path)
    if fits(whole := "".join(parts)):
        return whole
    head, tail = len(parts), 0
    if middle:
        head, tail = len(parts) - len(parts) // 3, len(parts) // 3
    while head + tail > 0:
        if tail and 2 * tail >= head:
            tail -= 1
        else:
            head -= 1
        cut = "".join(parts[:head]) + ELLIPSIS + "".join(parts[len(parts) - tail:] if tail else [])
        if fits(cut):
            return cut
    return ELLIPSIS


#: What a figure draws for a space of a class name that is only white space (' ' and '  ' were both an empty label),
#: and for the white space around a name when that is all that tells it from another ('x' and 'x ').
SPACE_MARK = "␣"


def class_labels(names: list[str], fits: Callable[[str], bool], font_path: str | None | bool = True) -> list[str]:
    """Every class name as a figure labels it, each taken by ``fits`` and every one distinguishable from the others.

    A name is shortened in its middle (:func:`shorten`); a name of white space only is drawn with a :data:`SPACE_MARK`
    for each space. Labels that still read as one (:func:`cnnlab.text.reads_as`: two long names that differ only in
    their middle, cut to the same start and end) are drawn with what tells them apart: their start, an ellipsis, and
    the text from where they differ (:func:`_showing`), the white space around them marked, an invisible character
    or another space by its code point. Labels that still collide (names that differ only in their Unicode form)
    get their class index (the label's number, from 0), ``name #3``. Distinct names that fit (MNIST's digits) are
    drawn as they are."""
    labels = [shorten(visible(n), fits, middle=True, font_path=font_path) for n in names]
    for group in _collisions(labels):
        parts = {k: units(_marked(names[k]), font_path) for k in group}
        for k in group:
            at = max(_common(parts[k], parts[j]) for j in group if j != k)
            labels[k] = _showing(parts[k], at, fits) or labels[k]
    for group in _collisions(labels):
        for k in group:
            number = f" #{k}"
            fits_numbered = lambda t: fits(t + number)  # noqa: E731
            labels[k] = shorten(visible(names[k]), fits_numbered, middle=True, font_path=font_path) + number
    return labels


def visible(name: str) -> str:
    """``name``, or where it would draw nothing (white space, invisible characters, or nothing at all) a
    :data:`SPACE_MARK` for each space and the code point of each other character (``""`` for an empty name)."""
    if not name:
        return '""'
    if all(c.isspace() or ord(c) in INVISIBLE or unicodedata.category(c) in ("Cc", "Cf") for c in name):
        return "".join(SPACE_MARK if c.isspace() else MISSING.format(ord(c)) for c in name)
    return name


def _marked(name: str) -> str:
    """``name`` with what a figure would not show made visible: the white space around it as :data:`SPACE_MARK`, an
    invisible character or a space other than ' ' inside it as its code point."""
    core = name.strip()
    if not core:
        return visible(name)
    lead, trail = len(name) - len(name.lstrip()), len(name) - len(name.rstrip())
    inside = "".join(MISSING.format(ord(c)) if ord(c) in INVISIBLE or (c.isspace() and c != " ") else c for c in core)
    return SPACE_MARK * lead + inside + SPACE_MARK * trail


def _collisions(labels: list[str]) -> list[list[int]]:
    """The indices of ``labels`` that read as one label (:func:`cnnlab.text.reads_as`), two or more a group."""
    groups: dict[str, list[int]] = {}
    for k, label in enumerate(labels):
        groups.setdefault(reads_as(label), []).append(k)
    return [group for group in groups.values() if len(group) > 1]


def _common(a: list[str], b: list[str]) -> int:
    """How many units ``a`` and ``b`` share at their start."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _showing(parts: list[str], at: int, fits: Callable[[str], bool]) -> str | None:
    """``parts`` (:func:`units`) whole if ``fits`` takes it, else cut so that its unit ``at`` (where it differs from
    a name it would be taken for) shows: its start, an ellipsis, the text from the unit before ``at`` on, cut at its
    end. As much of its start as fits (up to 8 units) with 5 units from ``at`` on, else with 1; None when even that
    does not fit."""
    if fits(whole := "".join(parts)):
        return whole
    at = min(at, len(parts) - 1)
    start = max(0, at - 1)
    for shown in (min(len(parts), at + 5), at + 1):
        for head in range(min(8, start), -1, -1):
            middle = ELLIPSIS if start > head else ""
            text = lambda end: ("".join(parts[:head]) + middle + "".join(parts[start:end])  # noqa: E731
                                + (ELLIPSIS if end < len(parts) else ""))
            lo, hi = shown, len(parts)  # the longest end that fits, by halving (a 255-character name: 8 tries)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if fits(text(mid)) else (lo, mid - 1)
            if fits(text(lo)):
                return text(lo)
    return None


def fit(draw: ImageDraw.ImageDraw, text: str, f, width: float, middle: bool = False) -> str:
    """``text`` on one line, cut with an ellipsis (in its middle with ``middle``, as class names are:
    :func:`shorten`) so that it is at most ``width`` px wide."""
    return shorten(text, lambda t: draw.textlength(t, font=f) <= width, middle)


def wrap(draw: ImageDraw.ImageDraw, text: str, f, width: float, sep: str = " ") -> list[str]:
    """The ``sep``-separated parts of ``text`` in as few lines as fit ``width`` px (a part longer than a
    line is cut with an ellipsis)."""
    lines: list[str] = []
    for part in one_line(text).split(sep) if text else []:
        if lines and draw.textlength(lines[-1] + sep + part, font=f) <= width:
            lines[-1] += sep + part
        else:
            lines.append(part)
    return [fit(draw, line, f, width) for line in lines]


def context_text(context: dict | None) -> str:
    """``{"model": "inception", "dataset": "mnist", "run": "r1"}`` -> ``"model inception · dataset mnist · run r1"``.

    Empty values are left out; an empty or missing context gives ``""``."""
    if not context:
        return ""
    keys = [k for k in CONTEXT_ORDER if k in context] + [k for k in context if k not in CONTEXT_ORDER]
    return " · ".join(f"{k} {context[k]}" for k in keys if context[k] not in (None, ""))


def header(title: str, context: dict | None, width: int) -> list[tuple[str, int, tuple]]:
    """The title (wrapped on spaces) and the context line (wrapped on " · ") as (text, font size, colour)
    lines that fit ``width`` px less the margins."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    head = [(t, TITLE_SIZE, INK) for t in wrap(probe, title, font(TITLE_SIZE), width - 2 * GAP)]
    return head + [(t, FONT_SIZE, MUTED) for t in wrap(probe, context_text(context), font(FONT_SIZE),
                                                         width - 2 * GAP, sep=" · ")]


def header_height(head: list) -> int:
    return GAP + sum(TITLE_SIZE + 6 if size == TITLE_SIZE else LINE_H for _, size, _ in head) + GAP // 2


def draw_header(draw: ImageDraw.ImageDraw, head: list, width: int) -> None:
    y = GAP
    for text, size, colour in head:
        draw.text((width // 2, y), text, font=font(size), fill=colour, anchor="ma")
        y += TITLE_SIZE + 6 if size == TITLE_SIZE else LINE_H


def rotated_text(text: str, f, colour, degrees: float) -> Image.Image:
    """``text`` (on one line) in ``colour`` on a transparent RGBA picture, turned ``degrees`` counter-clockwise."""
    text = one_line(text)
    left, top, right, bottom = f.getbbox(text)
    mask = Image.new("L", (right - left + 2, bottom - top + 2), 0)
    ImageDraw.Draw(mask).text((1 - left, 1 - top), text, font=f, fill=255)
    mask = mask.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True)
    layer = Image.new("RGBA", mask.size, colour)
    layer.putalpha(mask)
    return layer


def save_png(image: Image.Image, path) -> Path:
    """Write ``image`` as PNG atomically (never a half-written picture), marked as cnnlab's figure
    (:data:`cnnlab.fileio.FIGURE_MARK`: a resume tells it from a user's image of the same name)."""
    info = PngImagePlugin.PngInfo()
    info.add_text(*FIGURE_MARK)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, pnginfo=info)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


# ----------------------------------------------------------------------------- a line chart


@dataclass
class Series:
    """One line: points (None, NaN, infinities and, on a log scale, values <= 0 are gaps), its style and legend."""
    x: list[float]
    y: list[float | None]
    label: str
    colour: tuple[int, int, int]
    marker: str = "o"  # "o", "s" (square) or "^"
    dashed: bool = False
    marker_size: float = 4.5  # px, radius


@dataclass
class Panel:
    """One set of axes: its series, scale, labels, a horizontal reference line and the x ticks to show."""
    series: list[Series]
    xlabel: str = ""
    ylabel: str = ""
    title: str = ""
    log_y: bool = False
    xticks: list[float] | None = None  # None: chosen from the data
    hline: tuple[float, tuple[int, int, int]] | None = None


def _finite(v, log: bool) -> bool:
    return v is not None and math.isfinite(v) and (v > 0 or not log)


def nice_ticks(lo: float, hi: float, most: int = 7) -> list[float]:
    """Round numbers (1, 2, 2.5 or 5 times a power of ten apart) from ``lo`` to ``hi``, at most ``most``."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / max(most - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9)
    return [k * step for k in range(first, math.floor(hi / step + 1e-9) + 1)]


def tick_label(v: float) -> str:
    """A tick's number as short as it reads: 0.001, 1e-5, 99.5, 100."""
    if v == 0:
        return "0"
    if 1e-4 <= abs(v) < 1e5:
        return f"{v:.6g}"
    return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e")


def _limits(values: list[float], log: bool) -> tuple[float, float]:
    """The range of ``values`` with a 5% margin each side, in log10 units on a log scale."""
    vals = [math.log10(v) if log else v for v in values]
    if not vals:
        return (-1.0, 0.0) if log else (0.0, 1.0)
    lo, hi = min(vals), max(vals)
    pad = 0.05 * (hi - lo) if hi > lo else (0.5 if log else abs(lo) * 0.05 or 1.0)
    return lo - pad, hi + pad


def log_ticks(lo: float, hi: float) -> tuple[list[float], list[float]]:
    """Labelled and unlabelled ticks for a log axis from 10**lo to 10**hi: the powers of ten inside, the
    2-9 multiples unlabelled; when fewer than two powers of ten fall inside, 1, 2 and 5 times them labelled;
    when fewer than two of those, round numbers (:func:`nice_ticks`)."""
    inside = lambda v: lo - 1e-9 <= math.log10(v) <= hi + 1e-9  # noqa: E731
    decades = range(math.floor(lo), math.ceil(hi) + 1)
    majors = [10.0 ** k for k in decades if inside(10.0 ** k)]
    minors = [m * 10.0 ** k for k in decades for m in range(2, 10) if inside(m * 10.0 ** k)]
    if len(majors) < 2:
        majors = [m * 10.0 ** k for k in decades for m in (1, 2, 5) if inside(m * 10.0 ** k)]
        minors = [v for v in minors if v not in majors]
    if len(majors) < 2:  # a narrow range (e.g. losses from 1.7 to 2.3): round numbers, as on a linear axis
        majors, minors = [v for v in nice_ticks(10.0 ** lo, 10.0 ** hi, most=5) if v > 0 and inside(v)], []
    if len(majors) > 8:  # a loss that blew up: every k-th power of ten, no minor ticks
        majors, minors = majors[::math.ceil(len(majors) / 8)], []
    return majors, minors


class _Axes:
    """Data to pixels for one panel drawn at :data:`SCALE` (``box``: the plotting area, px)."""

    def __init__(self, p: Panel, box: tuple[int, int, int, int]):
        self.p, self.box = p, box
        xs = [x for s in p.series for x in s.x if _finite(x, False)]  # every epoch, drawn or not: panels align
        ys = [y for s in p.series for y in s.y if _finite(y, p.log_y)]
        ys += [p.hline[0]] if p.hline and _finite(p.hline[0], p.log_y) else []
        self.xlim, self.ylim = _limits(xs, False), _limits(ys, p.log_y)

    def px(self, x: float, y: float) -> tuple[float, float]:
        (x0, y0, x1, y1), (a, b), (c, d) = self.box, self.xlim, self.ylim
        t = math.log10(y) if self.p.log_y else y
        return x0 + (x - a) / (b - a) * (x1 - x0), y1 - (t - c) / (d - c) * (y1 - y0)

    def xticks(self) -> list[float]:
        a, b = self.xlim
        ticks = self.p.xticks if self.p.xticks is not None else nice_ticks(a, b)
        return [t for t in ticks if a - 1e-9 <= t <= b + 1e-9]

    def yticks(self) -> tuple[list[float], list[float]]:
        c, d = self.ylim
        return log_ticks(c, d) if self.p.log_y else ([t for t in nice_ticks(c, d) if c <= t <= d], [])


def _dashes(points: list[tuple[float, float]], on: float, off: float):
    """The pieces of a polyline that a dashed line draws."""
    travelled = 0.0
    for (xa, ya), (xb, yb) in zip(points, points[1:]):
        length = math.hypot(xb - xa, yb - ya)
        pos = 0.0
        while pos < length:
            phase = travelled % (on + off)
            step = min((on - phase) if phase < on else (on + off - phase), length - pos)
            if phase < on:
                f0, f1 = pos / length, (pos + step) / length
                yield [(xa + f0 * (xb - xa), ya + f0 * (yb - ya)), (xa + f1 * (xb - xa), ya + f1 * (yb - ya))]
            pos += step
            travelled += step


def _marker(draw: ImageDraw.ImageDraw, xy: tuple[float, float], kind: str, r: float, colour) -> None:
    x, y = xy
    if kind == "s":
        draw.rectangle((x - r * 0.85, y - r * 0.85, x + r * 0.85, y + r * 0.85), fill=colour)
    elif kind == "^":
        draw.polygon([(x, y - r * 1.1), (x - r, y + r * 0.75), (x + r, y + r * 0.75)], fill=colour)
    else:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)


#: A series has a marker on each of its points when it has at most this many (an epoch a point): 1,000 epochs' markers
#: made a band that hid the lines, another series' line under it; more, and it is its line alone, thinner.
MARKERS_MOST = 50


def _few(s: Series) -> bool:
    """Whether ``s`` is drawn with markers and the wider line (:data:`MARKERS_MOST`)."""
    return len(s.x) <= MARKERS_MOST


def _line_width(s: Series) -> int:
    return (2 if _few(s) else 1) * SCALE


def _draw_series(draw: ImageDraw.ImageDraw, ax: _Axes, s: Series) -> list[tuple[float, float]]:
    """One series: its line, broken where a value is missing, and a marker on every point where they are few
    (:data:`MARKERS_MOST`); returns the points' pixels, with a few along each segment (for placing the legend clear
    of the lines)."""
    width, runs, run = _line_width(s), [], []
    for x, y in zip(s.x, s.y):
        if _finite(y, ax.p.log_y) and _finite(x, False):
            run.append(ax.px(x, y))
        elif run:
            runs, run = runs + [run], []
    runs += [run] if run else []
    occupied = []
    for pts in runs:
        pieces = _dashes(pts, 6 * SCALE, 4 * SCALE) if s.dashed else [pts]
        for piece in pieces:
            if len(piece) > 1:
                draw.line(piece, fill=s.colour, width=width, joint="curve")
        for (xa, ya), (xb, yb) in zip(pts, pts[1:]):
            occupied += [(xa + k / 8 * (xb - xa), ya + k / 8 * (yb - ya)) for k in range(8)]
        occupied += pts
        for xy in pts if _few(s) else ():
            _marker(draw, xy, s.marker, s.marker_size * SCALE, s.colour)
    return occupied


def _draw_frame(canvas: Image.Image, ax: _Axes) -> None:
    """Grid at the labelled ticks, the frame, tick marks and their numbers, the axis labels and the title."""
    draw, (x0, y0, x1, y1), s = ImageDraw.Draw(canvas), ax.box, SCALE
    small, tick = font(12 * s), 4 * s
    majors, minors = ax.yticks()
    for t in ax.xticks():
        x = ax.px(t, majors[0] if majors else 1.0)[0]
        draw.line((x, y0, x, y1), fill=GRID, width=s)
        draw.line((x, y1, x, y1 + tick), fill=INK, width=s)
        draw.text((x, y1 + tick + 2 * s), tick_label(t), font=small, fill=INK, anchor="ma")
    for t in majors + minors:
        y = ax.px(ax.xlim[0], t)[1]
        if t in majors:
            draw.line((x0, y, x1, y), fill=GRID, width=s)
            draw.text((x0 - tick - 3 * s, y), tick_label(t), font=small, fill=INK, anchor="rm")
        draw.line((x0 - (tick if t in majors else tick // 2), y, x0, y), fill=INK, width=s)
    draw.rectangle((x0, y0, x1, y1), outline=INK, width=s)
    label = font(13 * s)
    draw.text(((x0 + x1) / 2, y1 + tick + 20 * s), ax.p.xlabel, font=label, fill=INK, anchor="ma")
    ylabel = rotated_text(ax.p.ylabel, label, INK, 90)
    canvas.paste(ylabel, (int(x0 - 58 * s), int((y0 + y1) / 2 - ylabel.height / 2)), ylabel)
    draw.text(((x0 + x1) / 2, y0 - 6 * s), ax.p.title, font=label, fill=INK, anchor="md")


def _draw_legend(draw: ImageDraw.ImageDraw, ax: _Axes, occupied: list[tuple[float, float]]) -> None:
    """The series' samples and labels in a box, in the corner (or side) of the panel that covers fewest
    points of the lines (as matplotlib's ``loc="best"``)."""
    s, f = SCALE, font(12 * SCALE)
    items = [x for x in ax.p.series if x.label]
    if not items:
        return
    row, sample = 18 * s, 26 * s
    w = int(max(draw.textlength(x.label, font=f) for x in items) + sample + 20 * s)
    h = row * len(items) + 8 * s
    (x0, y0, x1, y1), pad = ax.box, 8 * s
    spots = [(x1 - pad - w, y0 + pad), (x0 + pad, y0 + pad), (x0 + pad, y1 - pad - h), (x1 - pad - w, y1 - pad - h),
             (x1 - pad - w, (y0 + y1 - h) / 2), (x0 + pad, (y0 + y1 - h) / 2)]
    covered = lambda spot: sum(spot[0] - pad <= px <= spot[0] + w + pad  # noqa: E731
                               and spot[1] - pad <= py <= spot[1] + h + pad for px, py in occupied)
    lx, ly = min(spots, key=covered)  # the first of the least covered, in matplotlib's order of preference
    draw.rounded_rectangle((lx, ly, lx + w, ly + h), radius=3 * s, fill="white", outline=(204, 204, 204), width=s)
    for k, x in enumerate(items):
        cy = ly + 4 * s + row * k + row / 2
        line = [(lx + 6 * s, cy), (lx + 6 * s + sample, cy)]
        for piece in (_dashes(line, 6 * s, 4 * s) if x.dashed else [line]):
            draw.line(piece, fill=x.colour, width=_line_width(x))
        if _few(x):  # the sample as the series is drawn
            _marker(draw, (lx + 6 * s + sample / 2, cy), x.marker, x.marker_size * s, x.colour)
        draw.text((lx + 12 * s + sample, cy), x.label, font=f, fill=INK, anchor="lm")


def chart(panels: list[Panel], title: str, context: dict | None = None, size: tuple[int, int] = (1100, 440)) -> Image.Image:
    """Panels side by side under a title block, as one RGB picture of ``size`` px (the title block's height
    added). Each panel: its lines with markers, grid, ticks, axis labels, title and a legend."""
    width, height = size
    head = header(title, context, width)
    top = header_height(head)
    big = Image.new("RGB", (width * SCALE, height * SCALE), "white")
    draw, s, cell = ImageDraw.Draw(big), SCALE, width * SCALE // max(len(panels), 1)
    for k, p in enumerate(panels):
        box = (k * cell + 78 * s, 26 * s, (k + 1) * cell - 16 * s, (height - 50) * s)
        ax, occupied = _Axes(p, box), []
        _draw_frame(big, ax)
        if p.hline and _finite(p.hline[0], p.log_y):  # under the lines, and kept clear by the legend too
            y = ax.px(ax.xlim[0], p.hline[0])[1]
            draw.line((box[0], y, box[2], y), fill=p.hline[1], width=s)
            occupied = [(box[0] + j / 16 * (box[2] - box[0]), y) for j in range(17)]
        occupied += [pt for series in p.series for pt in _draw_series(draw, ax, series)]
        _draw_legend(draw, ax, occupied)
    canvas = Image.new("RGB", (width, top + height), "white")
    canvas.paste(big.resize((width, height), Image.Resampling.LANCZOS), (0, top))
    draw_header(ImageDraw.Draw(canvas), head, width)
    return canvas
