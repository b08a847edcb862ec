"""MNIST-style preprocessing: any image of a digit made into the 28x28 field the nets were trained on.

The net was trained on MNIST-like 28x28 images: white ink on black, the digit scaled so that its
longer side is 20 px and placed so that its centre of mass sits at the centre of the 28x28 field.
A photo or a drawing looks nothing like that, so :func:`preprocess` rebuilds the same conditions step
by step (each function documents its steps):

1. grayscale in 0..1; a transparent image's opacity is its ink (:func:`ink_map`);
2. polarity: is the paper light or dark? The strokes are a thin minority that departs from the
   paper on one side only, while shading and shadow edges are wide (:func:`light_paper`);
3. background removal: the paper's level, one number for an evenly lit page, else a map that
   follows shading, shadows and vignetting (the strokes closed over by a morphological closing on a
   small copy); the image is divided by it (flat-field), so the paper becomes 0 and the ink 0..1
   everywhere, in the light and in a shadow alike (:func:`paper_level`, :func:`ink_map`);
4. keep the digit: the strokes above an adaptive (Otsu) threshold are grouped into connected
   components; specks, grid lines, leftover shadow edges touching the border and marks away from
   the digit are dropped (:func:`keep_digit`, :func:`select_digit`); a page whose main stroke does not stand
   out of the paper's grain (noise, JPEG blocks) is blank (:func:`paper_grain`, :data:`GRAIN_OVER`);
5. crop to the ink, 6. scale it to a 20 px box, 7. centre it by mass in 28x28 (:func:`mnist_field`).

Step 8, the normalisation with the run's mean and std, belongs to the run: :meth:`cnnlab.predict.Predictor.tensor`.
numpy and Pillow only: no torch, no files (images arrive opened, by :mod:`cnnlab.imageio`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from cnnlab.errors import short_repr
from cnnlab.imageio import BadImageError, shrink, unit_gray

#: MNIST's geometry: the digit's longer side is 20 px inside a 28 px field (LeCun et al.).
MNIST_BOX, MNIST_FIELD = 20, 28
#: Images larger than this (longer side, px) are box-reduced by an integer factor (JPEGs decoded at
#: reduced scale) before anything else: the ink ends up at 20 px anyway, even a digit a tenth of the
#: image wide keeps 100 px, and this bounds the memory of the float steps (a 1024^2 float32 is 4 MiB).
WORK_SIDE = 1024
#: A pixel counts as ink for the bounding box when it has at least this fraction of the
#: strongest ink: keeps JPEG ringing and paper texture out of the box.
INK_THRESHOLD = 0.2
#: The paper's local level is estimated on a copy of at most this many px (longer side).
BG_SIDE = 128
#: The square that closes the strokes over, as a fraction of the shorter side (wider than a pen stroke).
BG_WINDOW = 0.3
#: Around each pixel, the paper's level lies within what its map holds over this many px of the reduced copy.
EDGE_WINDOW = 5
#: Images with a shorter side below this (px) are taken as evenly lit: a 28x28 field is no photo, and
#: its strokes are too wide for them to be closed over.
SHADED_MIN_SIDE = 64
#: A paper level map this close to the darkest ink (ratio) holds a stroke, not paper: the page is taken as evenly lit.
INK_SURVIVED = 1.5
#: A paper level map varying less than this (fraction of the paper's level) is an evenly lit page.
FLAT_PAPER = 0.1
#: The polarity is decided on a copy of at most this many px (longer side)...
POLARITY_SIDE = 80
#: ...against the median over a square of this fraction of its shorter side.
POLARITY_WINDOW = 0.25
#: A border whose 10th and 90th percentiles are this close is evenly lit (it then decides the polarity).
EVEN_RING = 0.1
#: A dark border is the paper with light ink touching it (:func:`inked_border`) only when its median is at most this
#: dark and at least :data:`MOSTLY_PAPER` of it lies within :data:`EVEN_RING` of that median: a shadow takes at most
#: about 80 % of the light (white paper in the benchmarks' deepest shadows: 0.18-0.34, the ring of a blank page
#: darkened over 60 % and more of its length), where dark paper, a board or a black canvas, lies at 0-0.16.
DARK_PAPER = 0.15
MOSTLY_PAPER = 0.6
#: Strokes must stand out on one side this many times more than on the other to decide the polarity.
POLARITY_RATIO = 2.0
#: A border rule's paper is the other way round only when the thin marks departing from it the other way also weigh
#: this many times more than those departing the expected way (:func:`turned_over`): white type on amber or grey and
#: black type on dark grey, clean, at JPEG q10 and with noise, weigh 17 times more and over; faint pencil (grey 150 on
#: 180) beside a white glare spot or sticker 0.2-1.2 times, beside a white streak 0.4-2.5 times (38 fonts x 10 digits).
TURNED_OVER = 5.0
#: The threshold of the strokes is at most this fraction of the strongest ink.
CUT_MAX = 0.6
#: Ink components are found on a copy of at most this many px (longer side).
LABEL_SIDE = 256
#: A number whose marks are all under this many px high on that copy (38 pt type with a wide margin: about 7 px,
#: strokes under a pixel, broken into pieces read as '1's and points) has its strokes found again on a crop around
#: them (:func:`closer_strokes`), where they are at least :data:`CLOSER_GAIN` times larger.
SMALL_MARKS = 20
CLOSER_GAIN = 1.5
#: Marks under this many px high on an ink map that is not reduced (:func:`tiny_marks`: a screenshot's type, 8-10 px)
#: are one mark where ink above this fraction of the strokes' threshold joins their pieces into a mark no wider than
#: high (:func:`_bridges`): a 0's arcs a pixel thin lie at 0.7-0.95 of it. Typed in 38 fonts at 11 and 13 px: of 380
#: single digits each, 12 and 5 were noted "2 digits side by side", 1 and 0 now; of 152 numbers, 93 and 129 read
#: right, 104 and 135 now (none lost; 16 px and larger as before). Joined by the fainter ink (half the threshold)
#: whatever their width, digits that touch were joined too: 7 of the 129 numbers read right at 13 px were lost, 6 of
#: 151 at 16 px.
TINY_MARKS = 12
TINY_BRIDGE = 0.7
#: ...but not where two uprights of the joined mark (its pieces one above the other taken together), each at least
#: this fraction of its height, stand side by side with no paper closed between them by the fainter ink
#: (:func:`set_close`): two or three 1s, or a 7 and a 1, set a pixel apart ("11", "111", "71"), where a 0's two sides
#: have its counter closed by its arcs. A tester's sweep (38 fonts x "11", "17", "71", "14", "41", "77", "111", "10",
#: "4", "1" at 9-14 px, sharp and blurred: 4,560 numbers): joined whatever their uprights, 23 numbers read right
#: without the joins were read wrong ("111" as "41", "11" as "4"), and 66 read wrong were read right; now 5 of the 23
#: are read wrong (1s whose feet are one stroke, a 7 whose bar reaches over its 1), the 66 all right.
FULL_UPRIGHT = 0.8
#: A component that encloses another of at least this fraction of its own ink is a frame around it (a box, a
#: circle), and is dropped; a dot or a bar inside a zero is lighter than this.
FRAMED_MASS = 0.25
#: A mark at least this many times wider than high, and this many times wider than the tallest mark that is not, is
#: a line ruled under or over the digits (an underline), no digit, and is dropped as a frame is (:func:`rule_labels`):
#: an underlined ``3378`` was read ``3127`` or ``310``, the line read as a digit 3 times wider than high, or, the
#: heaviest mark, as the number itself (``2``). A minus (0.3-0.6 of a digit's height wide) or a dash is shorter.
RULE_ASPECT = 6.0
RULE_LONG = 1.5
#: A component touching the border is taken as the digit only when this many times heavier than any inside.
BORDER_OVER = 4.0
#: Other components join the digit when at least this fraction of its ink mass...
PIECE_MASS = 0.03
#: ...and at most this fraction of its size away from it, or this many px of the reduced copy (:data:`LABEL_SIDE`)
#: for a small digit: a typed '2' 2 px from an 800-px page's corner, 9 px high on the copy, had its bottom bar 2 px
#: below its curve there (joined by fainter ink that reached the border, which the kept strokes follow a pixel
#: only), dropped: read '7' at 92%.
PIECE_GAP = 0.25
PIECE_NEAR = 2
#: Lines of ruled or squared paper run across at least this fraction of the image...
LINE_SPAN = 0.9
#: ...and are at most this fraction of the image's other side thick (a digit's strokes are thicker).
LINE_THICK = 0.03
#: ...and slant by at most this many degrees (a page photographed a little askew).
LINE_TILT = 3.0
#: A line is found in a band of at most this many rows (a line that steps a row, or is two rows thick).
LINE_ROWS = 5
#: A line of the paper runs on past the strokes it touches by at least this many columns on each side.
LINE_BEYOND = 8
#: An image whose alpha is at least this everywhere is opaque: its gray is read, not its opacity.
OPAQUE = 0.99
#: ...and its opacity draws strokes only where it varies by at least this much (see :func:`alpha_is_ink`).
ALPHA_SPREAD = 0.25
#: A number's digits lie in the main component's rows widened by this fraction of its height...
NUMBER_ROW = 0.5
#: ...each at most this fraction of its height from the next one sideways.
NUMBER_GAP = 1.0
#: Components whose columns overlap by at least this fraction of the narrower one are the same digit...
DIGIT_OVERLAP = 0.5
#: ...and a group of them shorter than this fraction of the tallest is no digit (a dot, a comma, a dash).
DIGIT_HEIGHT = 0.4
#: Marks away from a number's row at least this fraction as heavy as its main digit are counted as left out.
LEFT_OUT_MASS = 0.25
#: A mark left on a page once its rows were read starts another row (``--lines``) when it is at least this share of
#: the digits' median height (and not a speck: :data:`PIECE_MASS` of the main component's ink).
LINE_MARK = 0.5
#: A point in a number is at most this fraction of the digits' height, or this one when solid (filling this
#: fraction of its box with ink: a bold type's point fills 0.73-1.0, a piece of a broken stroke about 0.4)...
POINT_SIZE = 0.25
SOLID_POINT = 0.3
SOLID_FILL = 0.6
#: ...and a minus at least this many times wider than high.
MINUS_WIDTH = 1.5
#: A colon is two points one above the other (each at most :data:`SOLID_POINT` of the digits' height and no more than
#: this many times longer one way than the other), apart by at least half the taller one's height: ``10:30`` was read
#: ``10130``, the two points, one group by their columns, as tall as a digit's lower half.
COLON_ASPECT = 2.0
#: A comma is at most this fraction of the digits' height, higher than wide, and its tail reaches below its
#: neighbours' lowest rows by at least :data:`COMMA_BELOW` of their height (a point sits on them).
COMMA_SIZE = 0.5
COMMA_BELOW = 0.08
#: A digit wider than this fraction of its height may be two that touch: its halves are read too...
WIDE_DIGIT = 1.0
#: ...cut at its thinnest column within this fraction of its width around the middle.
CUT_ZONE = 0.4
#: A digit read whole though at least this many times wider than high is noted (:attr:`NumberFields.wide`): typed
#: digits are 0.45-0.9 times as wide as high, two or three that touch 1.0-3.2; but handwritten ones reach 1.9 (3.5 %
#: of MNIST's test digits are over 1.25, 0.04 % over 2), so only marks as wide as two digits or more are noted.
WIDE_NOTE = 2.0
#: The kept components follow fainter ink reaching the border (a grid line) by at most this fraction of the digit's size...
KEEP_GROW = 0.1
#: ...and are then widened by this fraction of the digit's size (the strokes' soft edges).
KEEP_MARGIN = 0.04
#: MNIST's strokes are about this wide in its 28x28 fields (px; twice the ink's area over its outline's length,
#: the ink taken at half the strongest: median 1.85 over 3,000 test digits, 10th percentile 1.36)...
MNIST_STROKE = 1.85
#: ...and strokes that would be thinner than this in the field are thickened to MNIST's width before scaling: a
#: 1-3 px pen line on a large canvas, box-averaged to 20 px, came out faint and uneven (its joints brighter than
#: its straight parts), and the nets misread it.
THIN_STROKE = 1.0
#: A field whose strokes are wider than this (px of 28; 99.9% of MNIST's training digits are thinner, the widest
#: 6.6) gets a note: a small digit drawn with a broad pen (the drawing page's 20-px pen, a digit 30-40 px high)
#: comes out 5-10 px wide, and the nets misread most such digits, sure of them (benchmarks/pen_digits.py: 28-58%
#: read right where the note fires, 98% on ordinary pens, where it never does). Eroding the strokes thinner was
#: tried and read no more of them right (their gaps and holes are filled: nothing to recover).
THICK_NOTE = 4.5
#: Strokes are thin when a square of the thin width erodes all but this fraction of the ink away...
THIN_KEPT = 0.05
#: ...the width being at most this many px of the (working-size) image: a pen's line. A crop stretched by marks
#: around the digit (dark grid lines) makes its 9-px strokes thin for the field, and thickening them and the
#: marks' stubs misread more of those digits.
PEN_WIDTH = 5
#: Less contrast than this (on a 0..1 scale) between the strongest ink and the paper is a blank image.
MIN_CONTRAST = 0.08
#: The digit's main stroke must stand out of the paper's grain (the sensor's noise, a JPEG's blocks, the paper's
#: texture) by at least this many times the grain's level, its mean ink over the grain (:func:`paper_grain`): a
#: photo of a blank page, or a page of noise, was read as a digit at 76-89% from marks that were the grain's own
#: peaks (at most 4.4x, against 6.1x and more for a digit in photo_digits' photo conditions, 10.5x and more but for
#: one of 1,800 of its stress pages; docs/predict.md).
GRAIN_OVER = 6.0
#: ...where the grain can be told: when more of the page than this lies below the paper's level, the level is
#: off (a dark grid, a hard shadow) and what lies below it is no grain: no check is made.
GRAIN_LEVEL_OFF = 0.6
#: ...and only what lies this little below it is grain: darker is the page's own (dark strokes on a page taken for
#: dark paper, a shadow), which made a clean canvas of bold black strokes "blank" at 1.6x.
GRAIN_MAX = 0.25
#: Ink (at half its strongest) at most this many px long is a speck, not a digit: one pixel was enlarged to a
#: solid 20x20 square and read '0' at 81%...
SPECK = 2
#: ...and so is ink filling this fraction of a box whose sides differ by at most this factor: a tap of the pen (a
#: disc) was read '0' at 92%, a filled square '0' too.
BLOB_FILL = 0.75
BLOB_ASPECT = 1.3
#: ...and having no inner structure: at most this share of its rows, and of its columns, cross the ink more than once
#: (:func:`crossed_twice`; a dot or a filled shape 0, a heavy type's digit that fills its box 0.10 and more).
BLOB_CROSSINGS = 0.05


# ----------------------------------------------------------------------------- preprocessing


def ink_map(img: Image.Image, name: str = "image") -> np.ndarray:
    """Steps 1-3: grayscale, polarity, background removal: "ink" in 0..1 with the paper at 0 everywhere.

    1. Grayscale in 0..1, scaled from the image's bit depth (:func:`cnnlab.imageio.unit_gray`: 16-bit
       images are divided by 65535, not clipped): colour images become luminance (Pillow's ITU-R 601
       ``L``). A transparent image (PNG/WebP/GIF with alpha, or a transparent colour) is different:
       its background is *transparent*, not light or dark, so the opacity is the ink (steps 2-3 skipped).
    2. Polarity (:func:`light_paper`): the ink is the minority that departs strongly from its
       neighbourhood; light paper (dark ink) when it departs downwards.
    3. The paper's level (:func:`paper_level`): one number (the median of the outermost ring of
       pixels) when the page is evenly lit, else a map (flat-field: shading, shadows, vignetting).
       The paper is then stretched to 0 and the strongest possible ink to 1:
       ``ink = (paper - gray) / paper`` on light paper, ``(gray - paper) / (1 - paper)`` on dark.

    Very large images are box-reduced first (integer factor, to at most :data:`WORK_SIDE`; any mode,
    :func:`cnnlab.imageio.shrink`).
    """
    return ink_and_grain(img, name)[0]


def ink_and_grain(img: Image.Image, name: str = "image") -> tuple[np.ndarray, float]:
    """:func:`ink_map`'s ink, and the level of the paper's grain in it (:func:`paper_grain`; 0 for a
    transparent image, whose opacity is the ink)."""
    gray, alpha = unit_gray(shrink(img, WORK_SIDE, name), name)  # (H, W) float32 in 0..1 each
    if alpha_is_ink(alpha):  # a transparent background: the opaque strokes are the ink
        lo, hi = float(alpha.min()), float(alpha.max())
        return (alpha if (lo, hi) == (0.0, 1.0) else (alpha - lo) / (hi - lo)).astype(np.float32), 0.0
    light = light_paper(gray)
    paper = paper_level(gray, light)
    if light:
        ink = (paper - gray) / np.maximum(paper, 1e-6)
    else:
        ink = (gray - paper) / np.maximum(1.0 - paper, 1e-6)
    return np.clip(ink, 0.0, 1.0).astype(np.float32), paper_grain(ink)


def alpha_is_ink(alpha: np.ndarray | None) -> bool:
    """Whether an image's opacity draws its strokes: some of it transparent, and opacity that varies by at least
    :data:`ALPHA_SPREAD` (strokes on a clear background). An evenly translucent image (a layer exported at 98% or
    50%) has no strokes in its opacity: its gray is read (it was refused as "one dot or blob")."""
    return alpha is not None and float(alpha.min()) < OPAQUE and float(alpha.max() - alpha.min()) >= ALPHA_SPREAD


def paper_grain(signed_ink: np.ndarray) -> float:
    """The level of the paper's grain (sensor noise, JPEG blocks, texture) in an ink map before it is clipped, on
    the copy the strokes are found on (:data:`LABEL_SIDE`): the root mean square of its values below the paper's
    level, down to :data:`GRAIN_MAX` below it. Ink only ever lies above the paper, so what lies below is the grain
    alone, half of it. 0 (no check) when more than :data:`GRAIN_LEVEL_OFF` of the copy lies below (the level is off
    there, not grainy), or when most of what lies below lies deeper than :data:`GRAIN_MAX` (the page's own marks)."""
    small = reduced(signed_ink, LABEL_SIDE)
    below = small[small < 0]
    if below.size == 0 or below.size > GRAIN_LEVEL_OFF * small.size:
        return 0.0
    grain = below[below > -GRAIN_MAX]
    if grain.size < 0.5 * below.size:  # mostly the page's own dark marks, no grain
        return 0.0
    return float(np.sqrt(np.mean(np.square(grain, dtype=np.float64))))


def _ring(a: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels of a 2-D array, as one vector."""
    return np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])


def reduced(a: np.ndarray, max_side: int) -> np.ndarray:
    """A float image area-averaged (box filter) so that its longer side is at most ``max_side``."""
    h, w = a.shape
    scale = max_side / max(h, w)
    if scale >= 1:
        return a.astype(np.float32)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize(size, Image.Resampling.BOX))


def _window(a: np.ndarray, k: int, reduce, axis: int) -> np.ndarray:
    """``reduce`` (np.max, np.min or np.mean) over a centred window of ``k`` pixels along ``axis``, edges repeated.

    The maximum and minimum double their window at each step (a window of ``k`` is the union of two of
    the largest power of two below it), so the cost grows with log(k), not k; the mean uses running sums."""
    pad = [(0, 0), (0, 0)]
    pad[axis] = (k // 2, k - 1 - k // 2)
    m = np.moveaxis(np.pad(a, pad, mode="edge"), axis, 0)
    n = a.shape[axis]
    if reduce is np.mean:
        c = np.concatenate([np.zeros((1,) + m.shape[1:]), np.cumsum(m, axis=0, dtype=np.float64)])
        return np.moveaxis(((c[k:] - c[:-k]) / k).astype(np.float32), 0, axis)
    pick = {np.max: np.maximum, np.min: np.minimum}[reduce]
    width = 1
    while 2 * width <= k:  # m[i] = reduce over the padded rows i .. i + 2 * width - 1
        m = pick(m[:-width], m[width:])
        width *= 2
    return np.moveaxis(pick(m[:n], m[k - width : k - width + n]), 0, axis)


def sparse_median(a: np.ndarray, k: int) -> np.ndarray:
    """The median over a ``k`` x ``k`` square (``k`` odd) around every pixel (edges mirrored), of every other
    row and column of the square: nearly the full median, at a quarter of its cost."""
    half = k // 2
    view = np.lib.stride_tricks.sliding_window_view(np.pad(a, half, mode="symmetric"), (k, k))[:, :, ::2, ::2]
    values = view.reshape(a.shape + (-1,))  # (H, W, n) copied
    mid = values.shape[-1] // 2  # n is odd for an odd k: the middle value is the median
    return np.partition(values, mid, axis=-1)[..., mid].astype(np.float32)


def square_filter(a: np.ndarray, k: int, reduce) -> np.ndarray:
    """``reduce`` over a ``k`` x ``k`` square around every pixel (separable: rows, then columns)."""
    if k <= 1:
        return a
    return _window(_window(a, k, reduce, 0), k, reduce, 1)


def _dilate(mask: np.ndarray) -> np.ndarray:
    """A boolean mask grown by one pixel towards its 8 neighbours."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    grown = out.copy()
    grown[:, 1:] |= out[:, :-1]
    grown[:, :-1] |= out[:, 1:]
    return grown


def closing(a: np.ndarray, k: int) -> np.ndarray:
    """Morphological closing over a ``k`` x ``k`` square (maximum, then minimum): dark details narrower than
    ``k`` are filled with their surroundings; steps, ramps and wider structures are kept."""
    return square_filter(square_filter(a, k, np.max), k, np.min)


def opening(a: np.ndarray, k: int) -> np.ndarray:
    """Morphological opening (minimum, then maximum): the same for light details."""
    return square_filter(square_filter(a, k, np.min), k, np.max)


def even_border(gray: np.ndarray) -> float | None:
    """The median of the outermost ring of pixels of a copy reduced to at most :data:`POLARITY_SIDE` px
    (the noise averaged away) when that ring is evenly lit (its 10th and 90th percentiles within
    :data:`EVEN_RING`), else None."""
    lo, mid, hi = np.percentile(_ring(reduced(gray, POLARITY_SIDE)), [10, 50, 90])
    return float(mid) if hi - lo <= EVEN_RING else None


def inked_border(gray: np.ndarray) -> float | None:
    """The median of the outermost ring of pixels of the copy :func:`even_border` reads, when that ring is the paper
    with ink touching it (a digit cropped to its ink, or to a pixel of paper around it: its strokes cross the ring),
    else None: the median clearly light or dark (0.15 from 0.5), and nothing in the image beyond it on its side by
    more than :data:`EVEN_RING` (on light paper nothing lighter, on dark paper nothing darker): the paper is the
    lightest thing on a light page, the ink and any shadow darker. A dark ring must be darker than :data:`DARK_PAPER`
    and :data:`MOSTLY_PAPER` of it within :data:`EVEN_RING` of its median too: light does not add to paper, but a
    shadow takes it away, and a deep shadow over the border of a blank page is as dark as anything on it (on a page
    with a digit, the ink is darker still)."""
    small = reduced(gray, POLARITY_SIDE)
    ring = _ring(small)
    mid = float(np.median(ring))
    if abs(mid - 0.5) < 0.15:
        return None
    if mid >= 0.5:
        return mid if float(small.max()) - mid <= EVEN_RING else None
    mostly = mid <= DARK_PAPER and np.mean(np.abs(ring - mid) <= EVEN_RING) >= MOSTLY_PAPER
    return mid if mostly and mid - float(small.min()) <= EVEN_RING else None


def departs_the_other_way(gray: np.ndarray, border: float, light: bool) -> bool:
    """Whether the marks on a page whose paper is ``border`` (:func:`even_border`, :func:`inked_border`), taken for
    ``light`` paper or dark, depart from it on the side that does not expect: on light paper, something lighter than
    it beyond the grain (:data:`MIN_CONTRAST` of the ink's range there, plus three times the noise), and by
    :data:`POLARITY_RATIO` times more than anything darker (on dark paper the same, turned over). White type on an
    amber label or a light grey badge: the clearly light border made it light paper, its white strokes were clipped
    to 0 and the page refused as "no ink found" (or read from a JPEG's ringing around them). Light paper (at least
    0.65) leaves at most 0.35 to depart upwards, so dark ink is overruled only when it departs by under 0.175 (faint
    pencil) and something lighter twice as much. Measured on the copy the border is read on (:data:`POLARITY_SIDE`),
    38 fonts x 10 digits: typed digits, clean, at JPEG q10 and with noise, depart the other way by 0-0.04 (nothing
    is lighter than white paper); white type on amber or grey 180-200, and black type on grey 70, clean, at q10 and
    q30 and with noise, 2.6-25 times as much as the expected way."""
    small = reduced(gray, POLARITY_SIDE)
    noise = grain_noise(small)
    expected, other = border - float(small.min()), float(small.max()) - border
    if not light:
        expected, other = other, expected
    least = MIN_CONTRAST * (border if light else 1.0 - border) + 3.0 * noise
    return other >= least and other > POLARITY_RATIO * expected


def turned_over(gray: np.ndarray, border: float, light: bool) -> bool:
    """Whether a digit's page whose paper is ``border`` (a rule of :func:`light_paper` that reads the paper off the
    border), taken for ``light`` paper or dark, is the other way round: its marks depart from the border's level the
    other way (:func:`departs_the_other_way`, the extremes), and its thin marks that do outweigh those departing the
    expected way :data:`TURNED_OVER` times (:func:`thin_departures` against the border's level, on the same copy):
    strokes are thin and cover their share of the page, a glare spot or a white sticker is wide, a streak little.
    The extremes alone turned faint pencil over (grey 150 on paper 180, 0.12 below it) when anything white lay on the
    page (0.30 above it): a glare spot, a sticker, a streak; the digit was then refused as "one dot or blob" (the
    white spot taken for the ink) or read '1' at 90% (the streak)."""
    if not departs_the_other_way(gray, border, light):
        return False
    small = reduced(gray, POLARITY_SIDE)
    darker, lighter = thin_departures(small, border, thin_window(small), 3.0 * grain_noise(small))
    expected, other = (darker, lighter) if light else (lighter, darker)
    return other > TURNED_OVER * expected


def thin_window(small: np.ndarray) -> int:
    """The square (px) that pen strokes on the polarity's copy ``small`` are narrower than: half the square of
    :data:`POLARITY_WINDOW` of its shorter side, over which the vote of :func:`light_paper` takes the median."""
    return (polarity_window(small) // 2) | 1


def polarity_window(small: np.ndarray) -> int:
    """The square (px, odd) of :data:`POLARITY_WINDOW` of the shorter side of the polarity's copy ``small``."""
    return max(3, round(POLARITY_WINDOW * min(small.shape)) | 1)


def grain_noise(small: np.ndarray) -> float:
    """The noise of a copy: the (robust) spread of each pixel about the mean of the 3x3 square around it."""
    return 1.4826 * float(np.median(np.abs(small - square_filter(small, 3, np.mean))))


def thin_departures(small: np.ndarray, level: np.ndarray | float, thin: int, margin: float) -> tuple[float, float]:
    """How far the thin details of ``small`` depart below and above ``level`` (the paper's, a map or one number),
    beyond ``margin``, summed over the pixels: a pixel departs downwards by how much it is darker than ``level``
    *and* than the copy closed over a square of ``thin`` (:func:`closing`: only details thinner than the square are
    filled; steps, ramps and wide patches are kept), upwards the same with the opening (:func:`opening`)."""
    below = np.minimum(level, closing(small, thin)) - small
    above = small - np.maximum(level, opening(small, thin))
    return tuple(float(np.clip(d - margin, 0, None).sum()) for d in (below, above))


def light_paper(gray: np.ndarray) -> bool:
    """Step 2: whether the paper is light (dark ink), from the side on which the thin minority departs.

    When the image's border is evenly lit (:func:`even_border`) and clearly light or dark (its median at
    least 0.15 away from 0.5), it is the paper: light paper when its median is at least 0.5, the rule
    of earlier versions. This holds for scans, drawings and canvases, however
    bold the digit. So does a border that is the paper with ink touching it (:func:`inked_border`): a digit
    cropped to its ink (a bounding box, a detector's box) has its strokes cross the border, which is then not
    evenly lit, and its strokes are as wide as the window below, whose vote then went the wrong way (the typed
    digits of 38 fonts cropped to their ink: 180 of 380 read right; 369 of 380 now take this rule). Either
    border's paper is taken the other way round when the page is turned over (:func:`turned_over`): white type on
    an amber label or a light grey badge, black type on dark grey.

    Otherwise (shading or a shadow across the border, grey paper near 0.5), the paper is the majority
    of every neighbourhood, the strokes (and grid lines) a thin minority; a shadow or a gradient is
    wide. On that copy, in log scale (so that a contrast is a ratio, and ink in a shadow counts as
    much as ink in the light):

    - the median over a square of :data:`POLARITY_WINDOW` of the shorter side is the majority's level
      (it keeps a straight shadow edge and follows gradients), computed on every other row and column
      of the square (:func:`sparse_median`);
    - a pixel departs downwards by how much it is darker than that median *and* than the image closed
      over a square of half that size (:func:`closing`: only details thinner than the square are filled,
      steps and ramps are kept, so the slivers a median leaves along a shadow edge do not count); upwards
      the same with the opening.

    The departures beyond a noise margin are summed on each side. Light paper when those downwards
    outweigh those upwards at least :data:`POLARITY_RATIO` times, dark paper in the opposite case;
    otherwise (no thin detail, e.g. strokes wider than the square), and for images smaller than
    :data:`SHADED_MIN_SIDE`, the rule for an evenly lit page decides: light paper when the median of
    the image's outermost ring of pixels is at least 0.5. For a small image that median is the paper, unless the
    page is turned over (:func:`turned_over`), as for the border rules above: white type on amber or black on grey
    70, 60 px high, was read at 64 px and refused under it, "no ink found".
    """
    median = float(np.median(_ring(gray)))
    ring = median >= 0.5
    if min(gray.shape) < SHADED_MIN_SIDE:  # evenly lit: the ring's median is the paper, unless turned over
        return ring != turned_over(gray, median, ring)
    border = even_border(gray)
    if border is not None and abs(border - 0.5) >= 0.15:  # an evenly lit border, clearly light or dark
        return (border >= 0.5) != turned_over(gray, border, border >= 0.5)
    if (border := inked_border(gray)) is not None:  # the paper, the strokes of a digit cropped to its ink crossing it
        return (border >= 0.5) != turned_over(gray, border, border >= 0.5)
    small = np.log(reduced(gray, POLARITY_SIDE) + 0.03)  # contrast as a ratio: ink in a shadow counts as much
    level = sparse_median(small, polarity_window(small))
    below, above = thin_departures(small, level, thin_window(small), 0.05 + 3.0 * grain_noise(small))
    if below > POLARITY_RATIO * above:
        return True
    if above > POLARITY_RATIO * below:
        return False
    return ring


def paper_level(gray: np.ndarray, light: bool) -> np.ndarray | float:
    """Step 3: the paper's level under the ink, one number for an evenly lit page, else a map like ``gray``.

    The paper's local level is the grayscale with the strokes closed over. On a copy reduced to at
    most :data:`BG_SIDE` px (which also averages the sensor noise away), a maximum filter then a
    minimum filter (a morphological closing, :func:`closing`; minimum then maximum on dark paper,
    :func:`opening`) over a square of :data:`BG_WINDOW` of the shorter side, wider than any pen stroke,
    replaces every stroke by the paper around it, while gradients, vignetting and the edge of a shadow,
    larger than the square, are kept. Past the image's border the copy is continued by point reflection
    (a ramp goes on falling; the darker of that and the mirror image on light paper, so that a stroke
    near the border is not mirrored into a bright spot), so that light falling off towards the border
    is followed up to it.

    When that map varies by less than :data:`FLAT_PAPER` of the paper's level (and for images smaller
    than :data:`SHADED_MIN_SIDE`), the page is evenly lit and the median of the outermost ring of
    pixels is the level, one number, as in earlier versions, so clean scans and drawings are read as
    they always were. The same when the border is evenly lit (:func:`even_border`) and the map gets
    within :data:`INK_SURVIVED` times as dark as the darkest ink (as light as the lightest, on dark
    paper): paper in a shadow stays well lighter than ink, so there a stroke was too wide to be closed
    over (a bold digit filling a canvas), and the map would hollow it out. (Under shading across the
    border, faint ink in the light can be as dark as paper in the shade, so the test is not made there.) The same
    when the map gets that dark, the border is the paper with ink touching it (:func:`inked_border`, a digit
    cropped to its ink) and the map made with the paper continued past the border, instead of the ramp, is flat:
    the strokes along the border of such a crop (a 1's foot, a 7's bar) were taken for light falling off, and
    hollowed out.
    Otherwise the map is enlarged back to the image's size, with its resolution
    restored at sharp shadow edges: each pixel's level is its own gray value, held within the lowest and
    highest level of the map around it (:data:`EDGE_WINDOW` px of the copy). Paper at a shadow's edge
    is then its own level (no false ink along the edge), while ink, darker than the paper on both
    sides, gets the level of the paper next to it.
    """
    ring = float(np.median(_ring(gray)))
    if min(gray.shape) < SHADED_MIN_SIDE:
        return ring
    small = square_filter(reduced(gray, BG_SIDE), 3, np.mean)
    k = max(3, round(BG_WINDOW * min(small.shape)) | 1)
    level = _closed_over(small, k, light)
    if _flat(level, light) or (even_border(gray) is not None and _as_dark_as_ink(level, gray, light)):
        return ring
    if _as_dark_as_ink(level, gray, light) and (inked := inked_border(gray)) is not None \
            and _flat(_closed_over(small, k, light, inked), light):
        return ring  # a digit cropped to its ink: its strokes along the border were taken for light falling off
    h, w = gray.shape
    low, high = (np.asarray(Image.fromarray(square_filter(level, EDGE_WINDOW, f), mode="F").resize((w, h), Image.Resampling.BILINEAR))
                 for f in (np.min, np.max))
    return np.clip(gray, low, high)


def _closed_over(small: np.ndarray, k: int, light: bool, paper: float | None = None) -> np.ndarray:
    """:func:`paper_level`'s map on its reduced copy ``small``: the strokes closed over (:func:`closing`, or
    :func:`opening` on dark paper) by a square of ``k``. Past the border the copy is continued by point reflection,
    so that light falling off towards the border is followed there; or, ``paper`` given, by that level (the paper
    of a digit cropped to its ink, which continues past the crop: a stroke along the border is no falling light)."""
    if paper is None:
        even, odd = np.pad(small, k, mode="reflect"), np.pad(small, k, mode="reflect", reflect_type="odd")
        padded = np.minimum(even, odd) if light else np.maximum(even, odd)
    else:
        padded = np.pad(small, k, mode="constant", constant_values=paper)
    level = closing(padded, k) if light else opening(padded, k)
    return square_filter(level[k:-k, k:-k], 3, np.mean)


def _flat(level: np.ndarray, light: bool) -> bool:
    """Whether a paper level map varies by less than :data:`FLAT_PAPER` of the paper's level: an evenly lit page."""
    lo, hi = np.percentile(level, [2, 98])
    scale = max(float(np.median(level)), 1e-3) if light else max(1.0 - float(np.median(level)), 1e-3)
    return (hi - lo) / scale < FLAT_PAPER


def _as_dark_as_ink(level: np.ndarray, gray: np.ndarray, light: bool) -> bool:
    """Whether a paper level map gets within :data:`INK_SURVIVED` times as dark as the darkest ink (as light
    as the lightest, on dark paper): paper in a shadow stays well lighter than ink, a level that dark is a
    stroke too wide to be closed over."""
    if light:
        return float(level.min()) <= INK_SURVIVED * float(gray.min()) + 0.02
    return INK_SURVIVED * float(level.max()) >= float(gray.max()) - 0.02


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in 0..1: the cut that best separates them into two classes
    (maximal between-class variance of the histogram; in the middle of equally good cuts)."""
    hist = np.histogram(values, bins=bins, range=(0.0, 1.0))[0].astype(np.float64)
    centres = (np.arange(bins) + 0.5) / bins
    w0 = np.cumsum(hist)
    m0 = np.cumsum(hist * centres)
    w1, m1 = w0[-1] - w0, m0[-1] - m0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = np.nan_to_num(w0 * w1 * (m0 / w0 - m1 / w1) ** 2, nan=0.0)[:-1]
    if not between.any():  # no values, or all of them in one bin: nothing to separate
        return 0.5
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))  # ties (empty bins): the middle of them
    return float((best[0] + best[-1]) / 2 + 1) / bins


def label_components(mask: np.ndarray) -> np.ndarray:
    """Connected components (8-neighbours) of a boolean mask: each pixel of a component gets the flat
    index of the component's first pixel, the rest -1.

    Union-find, vectorised: along every edge between two mask pixels, the larger of their roots is
    hooked onto the smaller, then every pixel jumps to its root; a few rounds whatever the shapes."""
    h, w = mask.shape
    idx = np.arange(h * w).reshape(h, w)
    ends = []
    for a, b in (((slice(None), slice(0, -1)), (slice(None), slice(1, None))),  # right
                 ((slice(0, -1), slice(None)), (slice(1, None), slice(None))),  # down
                 ((slice(0, -1), slice(0, -1)), (slice(1, None), slice(1, None))),  # down-right
                 ((slice(0, -1), slice(1, None)), (slice(1, None), slice(0, -1)))):  # down-left
        both = mask[a] & mask[b]
        ends.append((idx[a][both], idx[b][both]))
    u = np.concatenate([e[0] for e in ends])
    v = np.concatenate([e[1] for e in ends])
    parent = idx.ravel().copy()
    while True:
        pu, pv = parent[u], parent[v]
        split = pu != pv
        if not split.any():
            break
        np.minimum.at(parent, np.maximum(pu, pv)[split], np.minimum(pu, pv)[split])  # roots only decrease
        while True:  # pointer jumping: every pixel to its root
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    return np.where(mask, parent.reshape(h, w), -1)


def _components(labels: np.ndarray, ink: np.ndarray, most: int = 64) -> list[dict]:
    """The ``most`` heaviest components: label, ink mass, bounding box (y0, x0, y1, x1, inclusive) and
    whether it touches the border; heaviest first."""
    h, w = labels.shape
    ys, xs = np.nonzero(labels >= 0)
    if ys.size == 0:
        return []
    lab = labels[ys, xs]
    order = np.argsort(lab, kind="stable")
    ys, xs, lab = ys[order], xs[order], lab[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    mass = np.add.reduceat(ink[ys, xs].astype(np.float64), starts)
    boxes = np.stack([np.minimum.reduceat(ys, starts), np.minimum.reduceat(xs, starts),
                      np.maximum.reduceat(ys, starts), np.maximum.reduceat(xs, starts)], axis=1)
    border = (boxes[:, 0] == 0) | (boxes[:, 1] == 0) | (boxes[:, 2] == h - 1) | (boxes[:, 3] == w - 1)
    return [{"label": int(lab[starts[i]]), "mass": float(mass[i]), "box": tuple(int(v) for v in boxes[i]),
             "border": bool(border[i])} for i in np.argsort(-mass, kind="stable")[:most]]


def _side(box: tuple) -> int:
    """The longer side of a bounding box (y0, x0, y1, x1, inclusive), minus one."""
    return max(box[2] - box[0], box[3] - box[1])


def _gap(a: tuple, b: tuple) -> int:
    """Chessboard distance between two bounding boxes (0 when they overlap)."""
    return max(0, a[0] - b[2], b[0] - a[2], a[1] - b[3], b[1] - a[3])


def frame_labels(comps: list[dict], labels: np.ndarray) -> list[int]:
    """The labels of the components that frame another: a box printed around the digit (a form's field) or a
    circle drawn around it. A frame encloses a component of at least :data:`FRAMED_MASS` of its own ink: that
    component's box lies inside the frame's, and the frame has ink on all four sides of it, along its middle row
    and column (a digit's detached stroke, such as a seven's bar, is not enclosed that way). The box was taken
    for the digit, or joined it, and the digit came out small in the field: a digit in an 8-px box read 46%.
    Found on the fainter ink (a thin circle, reduced, breaks into pieces at the strokes' threshold)."""
    return [f["label"] for f in comps if any(c is not f and c["mass"] >= FRAMED_MASS * f["mass"]
                                             and _encloses(f, c, labels) for c in comps)]


def rule_labels(comps: list[dict]) -> list[int]:
    """The labels of the components that are lines ruled under or over the digits (an underline, a line of the
    paper cut short): at least :data:`RULE_ASPECT` times wider than high, :data:`RULE_LONG` times wider than the
    tallest component that is not that flat (the digits' height), and clear of the image's border (where the
    border's own marks, a shadow's or a vignette's edge, are left to the rules for the border: dropped, one blank
    page was read as a digit from what was left). The line was taken for a digit, or, heavier than each, for the
    number's main digit, its row then the underline's (``--number`` read ``2`` for ``3378``). Found on the fainter
    ink, as frames are (a thin line breaks into dashes at the strokes' threshold); none on a page where every mark is
    flat (a minus alone is read as it was)."""
    def flat(c: dict) -> bool:
        return c["box"][3] - c["box"][1] + 1 >= RULE_ASPECT * (c["box"][2] - c["box"][0] + 1)

    tallest = max((c["box"][2] - c["box"][0] + 1 for c in comps if not flat(c)), default=0)
    return [c["label"] for c in comps if tallest and flat(c) and not c["border"]
            and c["box"][3] - c["box"][1] + 1 >= RULE_LONG * tallest]


def _encloses(frame: dict, inner: dict, labels: np.ndarray) -> bool:
    fy0, fx0, fy1, fx1 = frame["box"]
    y0, x0, y1, x1 = inner["box"]
    if not (fy0 < y0 and fx0 < x0 and y1 < fy1 and x1 < fx1):
        return False
    row, col, own = labels[(y0 + y1) // 2], labels[:, (x0 + x1) // 2], frame["label"]
    return all((part == own).any() for part in (row[fx0:x0], row[x1 + 1:fx1 + 1], col[fy0:y0], col[y1 + 1:fy1 + 1]))


def select_digit(comps: list[dict]) -> list[dict]:
    """The components that make up the digit.

    The main one is the heaviest (ink mass) that does not touch the image's border, unless a component
    touching the border is more than :data:`BORDER_OVER` times heavier (a digit cut by the frame, or
    drawn across it); then the others joining it are the components of at least :data:`PIECE_MASS` of its
    mass whose box lies within :data:`PIECE_GAP` of the digit's size (at least :data:`PIECE_NEAR` px) from the
    digit's box (a detached
    stroke, a stroke broken by the threshold). When the main one does not touch the border, a piece
    that does joins only when it is no longer than the digit (a stroke cut by the frame), as grid lines
    and the edges of shadows run across the page.
    """
    main = _main_component(comps)
    kept, box = [main], main["box"]
    candidates = sorted((c for c in comps if _may_join(c, main)), key=lambda c: -c["mass"])
    grew = True
    while grew:
        grew = False
        size = _side(box) + 1
        for c in [c for c in candidates if _gap(c["box"], box) <= max(PIECE_GAP * size, PIECE_NEAR)]:
            kept.append(c)
            candidates.remove(c)
            box = (min(box[0], c["box"][0]), min(box[1], c["box"][1]), max(box[2], c["box"][2]), max(box[3], c["box"][3]))
            grew = True
    return kept


def _main_component(comps: list[dict]) -> dict:
    """The digit's main component (:func:`select_digit`): the heaviest not touching the border, unless one that
    does is more than :data:`BORDER_OVER` times heavier."""
    inner = [c for c in comps if not c["border"]]
    heaviest = max(comps, key=lambda c: c["mass"])
    main = max(inner, key=lambda c: c["mass"]) if inner else heaviest
    return heaviest if heaviest["mass"] > BORDER_OVER * main["mass"] else main


def _may_join(c: dict, main: dict) -> bool:
    """Whether component ``c`` may belong with ``main``: heavy enough (:data:`PIECE_MASS`), and, when it touches
    the border and ``main`` does not, no longer than ``main`` (grid lines and shadow edges run across the page)."""
    return c is not main and c["mass"] >= PIECE_MASS * main["mass"] and (
        main["border"] or not c["border"] or _side(c["box"]) <= _side(main["box"]))


def _box(comps: list[dict]) -> tuple[int, int, int, int]:
    """The bounding box (y0, x0, y1, x1, inclusive) of components together."""
    return (min(c["box"][0] for c in comps), min(c["box"][1] for c in comps),
            max(c["box"][2] for c in comps), max(c["box"][3] for c in comps))


def select_number(comps: list[dict]) -> list[list[dict]]:
    """The digits of a number written in a row, left to right, each as its components (:func:`number_row`)."""
    return number_row(comps)[0]


def number_row(comps: list[dict]) -> tuple[list[list[dict]], list[dict]]:
    """The main component's row (digits, shorts) as :func:`number_rows` finds it, with every row on its line: a
    digit farther from the next than :data:`NUMBER_GAP` of the main one's height (an MNIST digit's own margins, a
    narrow '1' beside a bold '0') is still on the number's line, as ``--lines`` reads it (it was left out)."""
    main = _main_component(comps)
    rows = number_rows(comps)
    return next((r for r in rows if any(c is main for part in r[0] + [g["comps"] for g in r[1]] for c in part)),
                rows[0])


def left_out(comps: list[dict], row: list[list[dict]], digit_height: float = 0.0) -> int:
    """How many marks lie away from a number's ``row`` (its digits and the marks between them: both of
    :func:`number_row`), such as another line of digits, a word, a drawing: those as heavy as
    :data:`LEFT_OUT_MASS` of the number's main digit, and those as high as :data:`LINE_MARK` of ``digit_height``
    (the digits' median height; a thin '1' is light) and not specks (:data:`PIECE_MASS`), the marks that start a
    row of ``--lines``. Marks touching the border are not counted. A minus or a point, part of the row, is not one."""
    kept = {id(c) for d in row for c in d}
    main = _main_component(comps)
    tall = LINE_MARK * digit_height if digit_height > 0 else float("inf")
    return sum(1 for c in comps if id(c) not in kept and not c["border"] and (
        c["mass"] >= LEFT_OUT_MASS * main["mass"]
        or c["box"][2] - c["box"][0] + 1 >= tall and c["mass"] >= PIECE_MASS * main["mass"]))


def number_signs(digits: list[list[dict]], shorts: list[dict]) -> list[tuple[int, str]]:
    """The signs among a number's marks too short to be digits (``shorts``, beside its ``digits``: both of
    :func:`_number_groups`), as (the index of the digit they come before, the sign), read by their shape in the
    digits' lower part, between two of them: a comma ``,`` is higher than wide, at most :data:`COMMA_SIZE` of the
    digits' height, its tail reaching below the two (:data:`COMMA_BELOW`); its middle lies in the gap (a slanted
    digit's box may reach over it). A point ``.`` lies in the gap whole, compact (no wider than twice its height),
    at most :data:`POINT_SIZE` of the digits' height; a solid one (:data:`SOLID_FILL`: a bold type's) may be
    :data:`SOLID_POINT` high and reach under a slanted digit's box as a comma may (a piece of a broken stroke is as
    big and as near, but hollow). A minus ``-``, before the first digit, is at least
    :data:`MINUS_WIDTH` times wider than high, at mid-height. A colon ``:`` (:func:`_is_colon`) has its middle in
    the gap. Other short marks (an apostrophe, a speck) are not read. A comma is written as it stands: ``1,234``
    and ``12,5`` alike."""
    boxes = [_box(d) for d in digits]
    top, _, bottom, _ = _box([c for d in digits for c in d])
    height = bottom - top + 1
    signs: dict[int, str] = {}
    for g in shorts:
        y0, x0, y1, x1 = g["box"]
        h, w, mid = y1 - y0 + 1, x1 - x0 + 1, (y0 + y1) / 2 - top
        before = sum(1 for b in boxes if b[1] <= (x0 + x1) / 2)  # digits that start left of the mark's middle
        if before == 0:
            if x1 < boxes[0][1] and w >= MINUS_WIDTH * h and 0.25 * height <= mid <= 0.75 * height:
                signs.setdefault(0, "-")
            continue
        if before == len(boxes):
            continue
        left, right = boxes[before - 1], boxes[before]
        if _is_colon(g, height) and left[3] < (x0 + x1) / 2 < right[1]:
            signs.setdefault(before, ":")
            continue
        if mid < 0.6 * height:
            continue
        solid = sum(c["mass"] for c in g["comps"]) >= SOLID_FILL * h * w
        if left[3] < (x0 + x1) / 2 < right[1] and h <= COMMA_SIZE * height and h > w and \
                y1 - (left[2] + right[2]) / 2 >= COMMA_BELOW * height:
            signs.setdefault(before, ",")
        elif (left[3] < x0 and x1 < right[1] or solid and left[3] < (x0 + x1) / 2 < right[1]) and w <= 2 * h \
                and h <= (SOLID_POINT if solid else POINT_SIZE) * height:
            signs.setdefault(before, ".")
    return sorted(signs.items())


def number_rows(comps: list[dict]) -> list[tuple[list[list[dict]], list[dict]]]:
    """Every row of digits in the image, top to bottom, each as :func:`_number_groups` gives it (digits, shorts):
    the main component's row, then the row of the heaviest mark left, and so on while a mark of a digit's size is
    left away from the border (at least :data:`LINE_MARK` of the digits' median height, and :data:`PIECE_MASS` of
    the main component's ink: a faint '1' on a page of bold digits too, no speck). Rows on the same line (the
    middle of one within the other's height: a digit too faint to be seen broke the chain of a row) are one row."""
    main = _main_component(comps)
    rows, rest, seed = [], comps, None
    while True:
        digits, shorts = _number_groups(rest, seed)
        rows.append((digits, shorts))
        used = {id(c) for d in digits for c in d} | {id(c) for g in shorts for c in g["comps"]}
        rest = [c for c in rest if id(c) not in used and not c["border"]]
        tall = LINE_MARK * float(np.median([_box(d)[2] - _box(d)[0] + 1 for r in rows for d in r[0]]))
        marks = [c for c in rest if c["box"][2] - c["box"][0] + 1 >= tall and c["mass"] >= PIECE_MASS * main["mass"]]
        if not marks:
            return _same_line_rows(rows)
        seed = max(marks, key=lambda c: c["mass"])


def _same_line_rows(rows: list[tuple[list[list[dict]], list[dict]]]) -> list[tuple[list[list[dict]], list[dict]]]:
    """Rows (of :func:`number_rows`) top to bottom, those on the same line made one: its digits left to right."""
    def span(row):
        box = _box([c for d in row[0] for c in d])
        return box[0], box[2]

    merged: list[tuple[list[list[dict]], list[dict]]] = []
    for row in sorted(rows, key=lambda r: sum(span(r))):
        if merged:
            (a0, a1), (b0, b1) = span(merged[-1]), span(row)
            if a0 <= (b0 + b1) / 2 <= a1 or b0 <= (a0 + a1) / 2 <= b1:
                digits = sorted(merged[-1][0] + row[0], key=lambda d: _box(d)[1] + _box(d)[3])
                merged[-1] = (digits, merged[-1][1] + row[1])
                continue
        merged.append(row)
    return merged


def _number_groups(comps: list[dict], main: dict | None = None) -> tuple[list[list[dict]], list[dict]]:
    """The digits of a number written in a row, left to right, each as its components; and the groups too short
    to be digits (``{"box": ..., "comps": ...}``).

    The row is the main component's (:func:`_main_component`): the components that may join it
    (:func:`_may_join`), overlap its rows widened by :data:`NUMBER_ROW` of its height, and lie, one after
    another, at most :data:`NUMBER_GAP` of its height apart sideways. Components that overlap in their columns
    by at least :data:`DIGIT_OVERLAP` of the narrower one are one digit (a five's flag, a stroke broken by the
    threshold); a group shorter than :data:`DIGIT_HEIGHT` of the tallest is no digit (a dot, a comma, a dash).
    ``main``: the row's first component, when another than the main one (:func:`number_rows`)."""
    main = main or _main_component(comps)
    y0, x0, y1, x1 = main["box"]
    height = y1 - y0 + 1
    top, bottom = y0 - NUMBER_ROW * height, y1 + NUMBER_ROW * height
    row = [c for c in comps if (_may_join(c, main) or _thin_point(c, main, comps)) and c["box"][2] >= top
           and c["box"][0] <= bottom]
    kept, left, right, grew = [main], x0, x1, True
    while grew:
        near = [c for c in row if c["box"][1] - right <= NUMBER_GAP * height and left - c["box"][3] <= NUMBER_GAP * height]
        for c in near:
            row.remove(c)
            left, right = min(left, c["box"][1]), max(right, c["box"][3])
        kept += near
        grew = bool(near)
    groups = _column_groups(kept)
    tallest = max(g["box"][2] - g["box"][0] for g in groups)
    tall = [g for g in groups if g["box"][2] - g["box"][0] >= DIGIT_HEIGHT * tallest and not _is_colon(g, tallest)]
    digits = [g for g in tall if g["box"][2] - g["box"][0] >= COMMA_SIZE * tallest or not _hangs_below(g, tall, tallest)]
    shorts = [g for g in groups if g not in digits]
    return [g["comps"] for g in sorted(digits, key=lambda g: g["box"][1] + g["box"][3])], shorts


#: A thin type's point may be lighter than :data:`PIECE_MASS` of a digit: a point of a stroke's width holds about the
#: square of it, and a digit's stroke is about this many times as long as the digit is high (its ink over that length
#: is the stroke's width).
STROKE_LENGTH = 3.0
#: Only among digits this many times higher than their strokes are wide (DejaVuSans-ExtraLight: 19-31; handwriting and
#: regular type mostly 8-16) may a mark that light be a point: on handwritten pages pen specks became points, colons
#: and minus signs (a tester: a speck left of "193" read "-193", 48 of 60 pages right fell to 27).
THIN_STROKES = 18.0
#: Such a point is round (at most this much longer than wide, plus a pixel: a 3x2 px point at 24 pt; a minus is 1.5
#: times wider than high at least).
THIN_POINT_ASPECT = 1.3


def _thin_point(c: dict, main: dict, comps: list[dict]) -> bool:
    """Whether a mark lighter than :data:`PIECE_MASS` of the ``main`` digit may still be a point among thin strokes
    (DejaVuSans-ExtraLight's ``721.88`` was read ``72188``: its point held 2-3 % of a digit's ink): the digits' strokes
    thin (:data:`THIN_STROKES`), the mark round (:data:`THIN_POINT_ASPECT`), solid (:data:`SOLID_FILL`), at most
    :data:`POINT_SIZE` of the digit's height, in its lower third, not at the border, holding at least half the square
    of the strokes' width (the digit's ink over :data:`STROKE_LENGTH` times its height), and between two marks that
    may be digits (:func:`_may_join`), in a gap: never before the first digit (a minus) or on one (a colon's, an
    i-dot's place). Whether it is read as a point is :func:`number_signs`' rule, as for any mark."""
    (y0, x0, y1, x1), (m0, _, m1, _) = c["box"], main["box"]
    h, w, height = y1 - y0 + 1, x1 - x0 + 1, m1 - m0 + 1
    stroke = main["mass"] / (STROKE_LENGTH * height)
    if (c is main or c["border"] or height < THIN_STROKES * stroke or max(h, w) > THIN_POINT_ASPECT * min(h, w) + 1
            or max(h, w) > POINT_SIZE * height or y0 < m0 + 2 * height / 3 or y1 > m1 + POINT_SIZE * height
            or c["mass"] < SOLID_FILL * h * w or c["mass"] < 0.5 * stroke * stroke):
        return False
    digits = [d["box"] for d in comps if d is not c and (d is main or _may_join(d, main)) and d["box"][2] >= m0 and d["box"][0] <= m1]
    return (any(b[3] < x0 and x0 - b[3] <= NUMBER_GAP * height for b in digits)
            and any(b[1] > x1 and b[1] - x1 <= NUMBER_GAP * height for b in digits))


def _is_colon(group: dict, height: int) -> bool:
    """Whether a group (:func:`_column_groups`) is a colon among digits ``height`` high: two points one above the
    other, each compact (:data:`COLON_ASPECT`) and at most :data:`SOLID_POINT` of the height, the gap between them
    at least half the taller one's height (a bold type's points are big; the pieces of a broken stroke are long)."""
    if len(group["comps"]) != 2:
        return False
    upper, lower = sorted(group["comps"], key=lambda c: c["box"][0])
    sides = [(c["box"][2] - c["box"][0] + 1, c["box"][3] - c["box"][1] + 1) for c in (upper, lower)]
    if any(h > SOLID_POINT * height or max(h, w) > COLON_ASPECT * min(h, w) for h, w in sides):
        return False
    return lower["box"][0] - upper["box"][2] - 1 >= 0.5 * max(h for h, _ in sides)


def _hangs_below(group: dict, tall: list[dict], tallest: int) -> bool:
    """Whether a group is shaped and placed as a comma among the groups beside it (of ``tall``, the nearest on each
    side): higher than wide, starting below their middles and reaching below their feet by :data:`COMMA_BELOW` of
    ``tallest``. A comma's tail may be long enough to pass for a digit (it was read as a '1'); a short digit written
    low (a '1', a '7') ends on the row's foot. Asked of groups under :data:`COMMA_SIZE` of the tallest only: a broken
    digit's stem, as a nine's, may hang as low, but is longer."""
    y0, x0, y1, x1 = group["box"]
    left = [g["box"] for g in tall if g["box"][3] < x0]
    right = [g["box"] for g in tall if g["box"][1] > x1]
    beside = [max(left, key=lambda b: b[3])] if left else []
    beside += [min(right, key=lambda b: b[1])] if right else []
    if not beside or y1 - y0 <= x1 - x0:
        return False
    foot = sum(b[2] for b in beside) / len(beside)
    return all(y0 > (b[0] + b[2]) / 2 for b in beside) and y1 - foot >= COMMA_BELOW * tallest


def _column_groups(comps: list[dict]) -> list[dict]:
    """``comps`` grouped by their columns: each joins the group it overlaps most, when by at least
    :data:`DIGIT_OVERLAP` of the narrower width; groups as ``{"box": (y0, x0, y1, x1), "comps": [...]}``."""
    groups: list[dict] = []
    for c in sorted(comps, key=lambda c: -c["mass"]):
        y0, x0, y1, x1 = c["box"]
        best, most = None, 0.0
        for g in groups:
            overlap = min(x1, g["box"][3]) - max(x0, g["box"][1]) + 1
            share = overlap / min(x1 - x0 + 1, g["box"][3] - g["box"][1] + 1)
            if share >= DIGIT_OVERLAP and share > most:
                best, most = g, share
        if best is None:
            groups.append({"box": c["box"], "comps": [c]})
        else:
            b = best["box"]
            best["box"] = (min(b[0], y0), min(b[1], x0), max(b[2], y1), max(b[3], x1))
            best["comps"].append(c)
    return groups


def digit_columns(digits: list[list[dict]], width: int) -> list[tuple[int, int]]:
    """For each digit of :func:`select_number` (left to right), the columns it owns, end exclusive: from the middle
    of the gap to its left neighbour to the middle of the gap to its right one (the image's edges at the ends), each
    cut kept between the two digits' middle columns."""
    return owned_spans([_box(d)[1::2] for d in digits], width)


def owned_spans(spans: list[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """For spans (first, last, inclusive) in order along one axis, the part of ``0..length`` each owns, end
    exclusive: cut in the middle of the gap between neighbours, each cut kept between the two spans' middles."""
    mids = [(a + b) // 2 for a, b in spans]
    # each cut between the two digits' middles, so that every digit owns its middle column whatever its neighbours
    # reach (a wide neighbour may overlap it: the middle of the gap then lies past its middle)
    cuts = [min(max((a[1] + b[0]) // 2 + 1, ma + 1), mb) for a, b, ma, mb in zip(spans, spans[1:], mids, mids[1:])]
    cuts = [0] + cuts + [length]
    return list(zip(cuts[:-1], cuts[1:]))


def hysteresis(keep: np.ndarray, weak: np.ndarray, steps: int) -> np.ndarray:
    """``keep`` (inside ``weak``) grown into the fainter ink of ``weak``: every faint component it touches
    is kept whole when it does not reach the image's border (the faint part of a stroke); one that does
    (a grid line, a shadow's edge) is followed by at most ``steps`` pixels from ``keep``."""
    labels = label_components(weak)
    touched = np.setdiff1d(np.unique(labels[keep]), _ring(labels))
    keep = keep | np.isin(labels, touched)
    for _ in range(steps):
        grown = keep | (_dilate(keep) & weak)
        if np.array_equal(grown, keep):
            break
        keep = grown
    return keep


def keep_digit(ink: np.ndarray, grain: float = 0.0, name: str = "image") -> np.ndarray:
    """Step 4: keep the digit's strokes only; everything else in the ink map becomes 0.

    On a copy of at most :data:`LABEL_SIDE` px:

    - the strokes are the pixels above an adaptive threshold: Otsu's threshold of the values holding at
      least a tenth of the strongest ink (the paper left out, so that it separates the faint marks, such
      as grid lines, what is left of a shadow's edge and noise, from the strokes, whatever the
      contrast), kept between :data:`INK_THRESHOLD` and :data:`CUT_MAX` of the strongest ink;
    - they are grouped into connected components (8-neighbours, :func:`label_components`), and
      :func:`select_digit` keeps the digit's: specks, marks away from the digit, and grid lines and
      shadow edges that touch the border are dropped;
    - the kept components grow into fainter ink (at least half the threshold, :func:`hysteresis`):
      the faint part of a stroke stays whole, a grid line crossing the digit only keeps a stub of
      :data:`KEEP_GROW` of the digit's size; then they are widened by :data:`KEEP_MARGIN` of it, so
      that the soft edges of the strokes stay.

    The ink outside them is set to 0, and inside them the level of the faint marks around the digit
    (the 99th percentile of what lies below the threshold outside them, at most half the threshold;
    0 on a clean page) is subtracted, so that pieces of grid lines next to the strokes do not count
    as the digit's. The ink map is returned as is when it holds no ink.
    """
    strokes = find_strokes(ink, grain, name)
    return ink if strokes is None else keep_components(ink, strokes, select_digit(strokes.comps))


@dataclass
class Strokes:
    """What :func:`find_strokes` finds on the reduced copy of an ink map (at most :data:`LABEL_SIDE` px)."""

    small: np.ndarray  # the reduced ink map
    labels: np.ndarray  # connected components of the strokes, frames left out (:func:`label_components`)
    comps: list[dict]  # the heaviest of them (:func:`_components`)
    weak: np.ndarray  # the fainter ink, frames left out
    cut: float  # the strokes' threshold


def find_strokes(ink: np.ndarray, grain: float = 0.0, name: str = "image") -> Strokes | None:
    """The strokes of an ink map and their components (the first part of :func:`keep_digit`); None when the
    map holds no ink. Refused (:class:`BadImageError`) when the main stroke does not stand out of the paper's
    ``grain`` (:func:`ink_and_grain`) by :data:`GRAIN_OVER`: a blank page's noise, not a digit.

    A fine pen's strokes, thinner than a pixel of the reduced copy (:func:`joining_width`), break apart there: the
    pieces that the ink map widened first (a grey maximum) joins are one component (:func:`_joined`), each piece
    keeping its own pixels, ink and box: a 2-px pen on a 1000-px page broke into pieces read as colons, points and
    extra '1's (``2046`` read ``2:415``), and a one-digit page's "digits side by side" counted them."""
    strokes = _strokes_of(ink, grain, name)
    width = joining_width(ink) if strokes is not None else 0
    if width < 2:
        return strokes
    # the ink above half the strongest counts whole: a line thinner than a pixel of a page halved to WORK_SIDE is
    # as faint as it is thin there (0.5 of the joints' ink), under the strokes' threshold even when widened
    even = np.minimum(ink, 0.5 * float(ink.max()))
    widened = _strokes_of(square_filter(even, width, np.max), 0.0, name)  # the grain was checked on the ink
    return strokes if widened is None else _joined(strokes, widened.labels)


def _joined(strokes: Strokes, joining: np.ndarray) -> Strokes:
    """``strokes`` with the components that share a component of ``joining`` (labels of the same copy) made one,
    with the fainter ink (:attr:`Strokes.weak`) between their pieces that it covers: the parts of a line under the
    strokes' threshold on the copy."""
    offset = strokes.labels.size  # a piece outside every joining component keeps its own label, apart from theirs
    joins = (joining >= 0) & np.isin(joining, joining[strokes.labels >= 0])
    labels = np.where(joins & ((strokes.labels >= 0) | strokes.weak), joining,
                      np.where(strokes.labels < 0, -1, strokes.labels + offset))
    comps = _components(labels, strokes.small)
    return Strokes(strokes.small, labels, comps, strokes.weak, strokes.cut) if comps else strokes


def counted_strokes(ink: np.ndarray, strokes: Strokes | None) -> Strokes | None:
    """``strokes`` (of :func:`find_strokes`) as a number's digits are counted and read: type set a few px high
    (:func:`tiny_marks`) with the pieces of each digit joined (:func:`_bridges`): the 1-px arcs of a 0 set 8 px high lie
    under the strokes' threshold, and its two sides were two marks ("2 digits side by side", ``--number`` "11"). One
    digit's field is made of :func:`find_strokes`' own components (their pieces near enough are kept together there):
    an MNIST field is read as it was."""
    if strokes is None or not tiny_marks(ink, strokes):
        return strokes
    return _joined(strokes, _bridges(strokes))


def _bridges(strokes: Strokes) -> np.ndarray:
    """The components (labels of the strokes' copy) of the ink above :data:`TINY_BRIDGE` of the strokes' threshold
    that join pieces of tiny type into one digit (:func:`tiny_marks`): those whose pieces together are no wider than
    high (:data:`WIDE_DIGIT`) and are not two digits set close (:func:`set_close`); one that would join more (the
    faint ink where two digits of a number touch) joins nothing."""
    joining = label_components(strokes.small >= TINY_BRIDGE * strokes.cut)
    pieces = strokes.labels >= 0
    for lab in np.unique(joining[pieces]):
        mark = joining == lab
        ys, xs = np.nonzero(mark & pieces)
        if xs.max() - xs.min() > WIDE_DIGIT * (ys.max() - ys.min() + 1) - 1 or set_close(strokes, mark):
            joining[mark] = -1
    return joining


def set_close(strokes: Strokes, mark: np.ndarray) -> bool:
    """Whether the pieces of tiny type that ``mark`` (a component of :func:`_bridges`) joins are two digits set close:
    at least two of its uprights (:func:`uprights`) are :data:`FULL_UPRIGHT` of its height, and the fainter ink
    (:attr:`Strokes.weak`) around them closes no paper that the pieces alone do not (:func:`enclosed_paper`). Two 1s a
    pixel apart, their feet touching faintly, are no wider than high; a 0 whose 1-px arcs lie under the threshold is
    two such uprights too, but its arcs close its counter."""
    labels = strokes.labels
    inside = np.unique(labels[mark & (labels >= 0)])
    ys, xs = np.nonzero(np.isin(labels, inside))
    height = ys.max() - ys.min() + 1
    if sum(y1 - y0 + 1 >= FULL_UPRIGHT * height for y0, y1 in uprights(labels, inside)) < 2:
        return False
    box = (slice(max(ys.min() - 1, 0), ys.max() + 2), slice(max(xs.min() - 1, 0), xs.max() + 2))
    own = np.isin(labels[box], inside)
    return not (enclosed_paper(own | strokes.weak[box]) & ~enclosed_paper(own)).any()


def uprights(labels: np.ndarray, inside: np.ndarray) -> list[tuple[int, int]]:
    """The rows (first, last) of the uprights of the pieces labelled ``inside``: pieces whose columns overlap (one
    above the other: a stroke broken across) taken together, side by side from left to right."""
    spans = []
    for lab in inside:
        ys, xs = np.nonzero(labels == lab)
        spans.append([int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())])
    spans.sort()
    merged = [spans[0]]
    for x0, x1, y0, y1 in spans[1:]:
        last = merged[-1]
        if x0 <= last[1]:
            last[1:] = max(last[1], x1), min(last[2], y0), max(last[3], y1)
        else:
            merged.append([x0, x1, y0, y1])
    return [(y0, y1) for _, _, y0, y1 in merged]


def enclosed_paper(mask: np.ndarray) -> np.ndarray:
    """The pixels outside ``mask`` that it encloses: those the paper around it does not reach, stepping to the 4
    neighbours (an 8-connected ring closes)."""
    paper = ~np.pad(mask, 1)
    reach = np.zeros_like(paper)
    reach[0], reach[-1], reach[:, 0], reach[:, -1] = paper[0], paper[-1], paper[:, 0], paper[:, -1]
    while True:
        grown = reach.copy()
        grown[1:] |= reach[:-1]
        grown[:-1] |= reach[1:]
        grown[:, 1:] |= reach[:, :-1]
        grown[:, :-1] |= reach[:, 1:]
        grown &= paper
        if np.array_equal(grown, reach):
            return (paper & ~reach)[1:-1, 1:-1]
        reach = grown


def tiny_marks(ink: np.ndarray, strokes: Strokes) -> bool:
    """Whether every mark found is under :data:`TINY_MARKS` px high on an ink map not reduced for its strokes (a
    screenshot's type, 8-10 px high): there a stroke is a pixel or two wide and its ink is how much of the pixel it
    covers, so the thin arcs of a 0 or a 6 lie under the strokes' threshold and the strokes break apart."""
    return max(ink.shape) <= LABEL_SIDE and max(c["box"][2] - c["box"][0] + 1 for c in strokes.comps) < TINY_MARKS


def joining_width(ink: np.ndarray) -> int:
    """How wide (px) a fine pen's strokes are made before the ink map is reduced to :data:`LABEL_SIDE` for its
    strokes (:func:`find_strokes`): when the map is reduced by a factor ``f`` and its strokes are thinner than
    ``2 f`` px, the width that covers a pixel of the copy whole wherever the line falls (:func:`thin_strokes`, the
    erosion test, at most :data:`PEN_WIDTH`), ``2 ceil(f) - 1``; else 0 (wider strokes, or no reduction)."""
    factor = max(ink.shape) / LABEL_SIDE
    if factor <= 1 or not thin_strokes(ink, 2 * factor):
        return 0
    return 2 * math.ceil(factor) - 1


def _strokes_of(ink: np.ndarray, grain: float, name: str) -> Strokes | None:
    """:func:`find_strokes` on the ink map as given."""
    peak = float(ink.max()) if ink.size else 0.0
    if peak < MIN_CONTRAST:
        return None
    small = reduced(ink, LABEL_SIDE)
    # thresholds against the reduced copy's own strongest ink: a 1-px pen line on a 1000-px canvas is a quarter
    # as strong there, and a threshold set by the full image's broke it into pieces that were dropped
    peak = float(small.max())
    marks = small[small >= 0.1 * peak] / peak  # the paper left out: Otsu then splits faint marks from strokes
    cut = min(max(otsu_threshold(marks) * peak, INK_THRESHOLD * peak), CUT_MAX * peak)
    weak = small >= max(INK_THRESHOLD * peak, 0.5 * cut)  # fainter ink, where a thin frame is still whole
    lines, crossings = paper_lines(weak)  # ruled or squared paper: lines would join the digits to each other
    weak &= ~lines
    weak_labels = label_components(weak)
    weak_comps = _components(weak_labels, small)
    framed = np.isin(weak_labels, frame_labels(weak_comps, weak_labels) + rule_labels(weak_comps))  # frames, rules
    strong = (small >= cut) & ~lines
    # where a stroke crosses a line, the line's ink is the stroke's: a line printed over the strokes (lighter than
    # they are) cut a digit into bands, read as rows of their own (--lines) and as marks left out (--number)
    strong |= crossings & _between(strong & ~crossings, LINE_ROWS + 2)
    unframed = strong & ~framed
    labels = label_components(unframed if unframed.any() else strong)
    comps = _components(labels, small)
    if comps and grain > 0:
        _check_grain(labels, comps, grain, name)
    return Strokes(small, labels, comps, weak & ~framed, cut) if comps else None


def _between(mask: np.ndarray, reach: int) -> np.ndarray:
    """The pixels with ``mask`` on both sides within ``reach`` px, above and below or left and right (a pixel of
    slack across): where a line of the paper lies between the two ends of a stroke it crosses (a crossing of two
    lines of a grid has none: their pixels are the lines')."""
    wide = _dilate(mask)
    above, below, left, right = (np.zeros_like(mask) for _ in range(4))
    for k in range(1, reach + 1):
        above[k:] |= wide[:-k]
        below[:-k] |= wide[k:]
        left[:, k:] |= wide[:, :-k]
        right[:, :-k] |= wide[:, k:]
    return (above & below) | (left & right)


def closer_strokes(ink: np.ndarray, strokes: Strokes, name: str = "image") -> tuple[np.ndarray, Strokes]:
    """The ink map and its strokes (:func:`find_strokes`) as a number is read from them: when every mark found is
    under :data:`SMALL_MARKS` px high on the reduced copy and they lie in a small part of the page, the crop of the
    ink map around them (a mark's height of paper around, at least 2 px of that copy) and the strokes found on it,
    where the marks come out at least :data:`CLOSER_GAIN` times larger; else both as given. A page reduced about 4
    times for :data:`LABEL_SIDE` (38 pt type with a margin of 400 px) left the strokes under a pixel wide, broken
    into pieces that were read as '1's, points and colons. Only the crop is reduced (at most :data:`LABEL_SIDE`):
    the work is one more labelling of a copy of that size at most."""
    comps = strokes.comps
    tall = max(c["box"][2] - c["box"][0] + 1 for c in comps)
    found = None if tall >= SMALL_MARKS else _closer(ink, strokes.small.shape, _box(comps), max(tall, 2), None, name)
    return (ink, strokes) if found is None else found


def _closer(ink: np.ndarray, shape: tuple[int, int], box: tuple, pad: int, band: tuple[int, int] | None,
            name: str) -> tuple[np.ndarray, Strokes] | None:
    """The crop of the ink map around ``box`` (of a reduced copy of ``shape``), ``pad`` px of that copy around it
    (within the copy's rows ``band``, end exclusive, when given), and the strokes found on it; None when the marks
    would not come out at least :data:`CLOSER_GAIN` times larger there (:func:`closer_strokes`, :func:`_row_read`)
    or it holds no ink."""
    (h, w), (sh, sw) = ink.shape, shape
    y0, x0, y1, x1 = box
    top, bottom = (y0 - pad, y1 + 1 + pad) if band is None else (max(band[0], y0 - pad), min(band[1], y1 + 1 + pad))
    rows = (max(0, math.floor(top * h / sh)), min(h, math.ceil(bottom * h / sh)))
    cols = (max(0, math.floor((x0 - pad) * w / sw)), min(w, math.ceil((x1 + 1 + pad) * w / sw)))
    side = max(rows[1] - rows[0], cols[1] - cols[0])
    if min(1.0, LABEL_SIDE / side) < CLOSER_GAIN * min(1.0, LABEL_SIDE / max(h, w)):
        return None
    crop = ink[rows[0]:rows[1], cols[0]:cols[1]]
    closer = counted_strokes(crop, find_strokes(crop, 0.0, name))  # the grain was checked on the page's strokes
    return None if closer is None else (crop, closer)


def _check_grain(labels: np.ndarray, comps: list[dict], grain: float, name: str) -> None:
    """Refuse an image whose main stroke (:func:`_main_component`) does not stand out of the paper's ``grain`` by
    :data:`GRAIN_OVER` times (its mean ink over the grain's level)."""
    main = _main_component(comps)
    over = main["mass"] / max(np.count_nonzero(labels == main["label"]), 1) / grain
    if over < GRAIN_OVER:
        raise BadImageError(f"{name}: no ink found (its strongest marks stand {over:.1f}x out of the paper's grain, "
                            f"a digit's at least {GRAIN_OVER:g}x: the page is blank, its noise is no digit); "
                            "draw or write a digit")


def ruled_lines(mask: np.ndarray) -> np.ndarray:
    """The pixels of a mask that belong to the lines of ruled or squared paper (:func:`paper_lines`' first part)."""
    return paper_lines(mask)[0]


def paper_lines(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of a mask that belong to the lines of ruled or squared paper, and those of the lines where a stroke
    crosses them (kept out of the first: the strokes stay whole). The lines are found along the rows and along the
    columns: the bands of :func:`_line_bands`, each direction sheared first by the slant (up to
    :data:`LINE_TILT`) that lines up the most rows of ink (:func:`_line_drift`: a page photographed a degree or two
    askew). A band shows it is a line of the paper when it runs on past the strokes near it on both sides
    (:func:`_paper_line`); where one band of a direction does, the others of that direction go too, except those
    that end at a stroke. Where none does, none goes: the bars and strokes of a tightly cropped digit stay (a
    "Z"-shaped 2's bars end where its diagonal does; the strokes of a tightly cropped "11" are all there is)."""
    found, bands_only = [], np.zeros_like(mask)
    for flip in (False, True):  # lines along the rows, then along the columns
        m = mask.T if flip else mask
        if np.count_nonzero(m.sum(axis=0) >= 1) < LINE_SPAN * m.shape[1]:
            continue  # a line across would put ink in nearly every column: no lines (most images)
        drift = _line_drift(m)
        sheared = _shear(m, drift)
        bands = _line_bands(sheared)
        if bands:
            rows = np.zeros(m.shape[0], bool)
            for lo, hi in bands:
                rows[lo:hi + 1] = True
            back = _shear(sheared & rows[:, None], -drift)
            bands_only |= back.T if flip else back
            found.append((flip, drift, sheared, bands))
    out, crossings = np.zeros_like(mask), np.zeros_like(mask)
    strokes = mask & ~_dilate(bands_only)  # what is left without any band: the digits
    for flip, drift, sheared, bands in found:
        near = _shear(strokes.T if flip else strokes, drift)
        verdicts = [_paper_line(sheared[lo:hi + 1].any(axis=0), near[max(0, lo - LINE_ROWS):hi + LINE_ROWS + 1].any(axis=0))
                    for lo, hi in bands]
        if not any(verdicts):  # no band shows it is the paper's: they may all be the digit's
            continue
        lines, crossed = np.zeros_like(sheared), np.zeros_like(sheared)
        for (lo, hi), verdict in zip(bands, verdicts):
            if verdict is not False:  # the paper's, or one like them that touches no stroke
                cross = _crossing(sheared, lo, hi)[None, :]
                lines[lo:hi + 1] = sheared[lo:hi + 1] & ~cross
                crossed[lo:hi + 1] = sheared[lo:hi + 1] & cross
        for whole, part in ((out, lines), (crossings, crossed)):
            back = _shear(part, -drift)
            whole |= back.T if flip else back
    return out, crossings


def _paper_line(line: np.ndarray, near: np.ndarray) -> bool | None:
    """Whether a band (its columns holding ink, ``line``) is a line of the paper, given the columns of the strokes
    near it (``near``): it runs on past them on both sides, over at least :data:`LINE_BEYOND` columns holding ink
    for half of them. None when no stroke is near it (nothing to tell)."""
    cols = np.flatnonzero(near)
    if cols.size == 0:
        return None
    left, right = line[:cols[0]], line[cols[-1] + 1:]
    return all(part.size >= LINE_BEYOND and part.mean() >= 0.5 for part in (left, right))


def _shear(m: np.ndarray, drift: int) -> np.ndarray:
    """``m`` with column ``c`` moved up by ``drift * c / (width - 1)`` rows (rounded; what moves out is lost, what
    comes in is False): a line that falls by ``drift`` rows across the image becomes a row. ``-drift`` undoes it."""
    if drift == 0:
        return m
    h, w = m.shape
    rows = np.arange(h)[:, None] + np.round(np.arange(w) * drift / max(w - 1, 1)).astype(int)[None, :]
    inside = (rows >= 0) & (rows < h)
    out = np.zeros_like(m)
    out[inside] = m[rows[inside], np.broadcast_to(np.arange(w), (h, w))[inside]]
    return out


def _line_drift(m: np.ndarray) -> int:
    """The fall across the image (rows, within :data:`LINE_TILT`) along which the most rows of ``m`` are covered
    for :data:`LINE_SPAN` of the width; 0 unless another fall lines up more of them. Counted from the ink's
    coordinates (a histogram per fall), not by shearing the image."""
    h, w = m.shape
    most = math.ceil(math.tan(math.radians(LINE_TILT)) * w)
    ys, xs = np.nonzero(m)
    need = LINE_SPAN * w
    best, lined = 0, int(np.count_nonzero(np.bincount(ys, minlength=h) >= need))
    for drift in sorted(range(-most, most + 1), key=abs)[1:]:
        rows = ys - np.round(xs * drift / max(w - 1, 1)).astype(np.int64)
        n = int(np.count_nonzero(np.bincount(rows - rows.min(), minlength=1) >= need)) if rows.size else 0
        if n > lined:
            best, lined = drift, n
    return best


def _line_bands(m: np.ndarray) -> list[tuple[int, int]]:
    """The rows of lines along the rows of ``m``, as (first, last) with a row more on each side (the line's soft
    edges): bands of up to :data:`LINE_ROWS` rows that ``m`` covers together for at least :data:`LINE_SPAN` of the
    width (a line a row or two thick, or one that steps a row), trimmed to the rows holding at least half the
    band's best row, and at most :data:`LINE_THICK` of the height thick (a bar as thick as a digit's strokes
    usually are, a tenth of its height, is not a line)."""
    h = m.shape[0]
    if h < 2 * LINE_ROWS:  # no room for a line and something beside it
        return []
    cover = m.mean(axis=1)
    union = m[:h - LINE_ROWS + 1].copy()
    for i in range(1, LINE_ROWS):
        union |= m[i:h - LINE_ROWS + 1 + i]
    start = np.r_[union.mean(axis=1) >= LINE_SPAN, np.zeros(LINE_ROWS - 1, bool)]
    firsts = np.flatnonzero(start & ~np.r_[False, start[:-1]])
    lasts = np.flatnonzero(start & ~np.r_[start[1:], False]) + LINE_ROWS - 1
    bands = []
    for a, b in zip(firsts, lasts):
        rows = a + np.flatnonzero(cover[a:b + 1] >= 0.5 * cover[a:b + 1].max())
        if rows[-1] - rows[0] + 1 <= max(LINE_ROWS, LINE_THICK * h):
            bands.append((max(0, rows[0] - 1), min(h - 1, rows[-1] + 1)))
    return bands


def _crossing(m: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The columns where a stroke crosses the line on rows ``lo..hi`` of ``m``: ink just above and just below it
    (within a column each way); the line is not taken away there, so that the strokes it crosses stay whole."""
    if lo == 0 or hi == m.shape[0] - 1:
        return np.zeros(m.shape[1], bool)
    above, below = m[lo - 1].copy(), m[hi + 1].copy()
    for row in (above, below):
        row[1:] |= row[:-1].copy()
        row[:-1] |= row[1:].copy()
    return above & below


def keep_components(ink: np.ndarray, strokes: Strokes, kept: list[dict], columns: tuple[int, int] | None = None,
                    rows: tuple[int, int] | None = None) -> np.ndarray:
    """The ink map with only the components ``kept`` (grown into fainter ink and widened, the faint marks'
    level taken off: the second part of :func:`keep_digit`). ``columns`` and ``rows`` (of the reduced copy, end
    exclusive) bound what is kept, so that one digit of a number keeps none of its neighbours' ink, above and
    below (another line) as beside it."""
    weak, small, cut = strokes.weak, strokes.small, strokes.cut
    band = None
    if columns is not None or rows is not None:
        band = np.zeros(small.shape, bool)
        band[slice(*rows) if rows else slice(None), slice(*columns) if columns else slice(None)] = True
        weak = weak & band
    keep = np.isin(strokes.labels, [c["label"] for c in kept])
    y0, x0, y1, x1 = _box(kept)
    size = max(y1 - y0, x1 - x0) + 1
    keep = hysteresis(keep, weak, round(KEEP_GROW * size))
    margin = max(1, round(KEEP_MARGIN * size))
    keep = square_filter(keep.astype(np.float32), 2 * margin + 1, np.max)
    if band is not None:
        keep = np.where(band, keep, np.float32(0))
    faint = small[(keep == 0) & (small < cut)]  # the paper and the faint marks around the digit
    floor = min(float(np.percentile(faint, 99)), 0.5 * cut) if faint.size else 0.0
    h, w = ink.shape
    full = np.asarray(Image.fromarray(keep, mode="F").resize((w, h), Image.Resampling.BILINEAR)) > 0
    return np.where(full, np.clip((ink - floor) / (1.0 - floor), 0.0, None), 0.0).astype(np.float32)


def mnist_field(ink: np.ndarray, size: int = MNIST_FIELD, name: str = "image") -> np.ndarray:
    """Steps 5-7: crop to the ink, scale to a 20 px box, centre by mass in a 28x28 field.

    5. Crop to the bounding box of the pixels holding at least :data:`INK_THRESHOLD` of the
       strongest ink (refused when it is one dot or blob: :func:`is_blob`); strokes that would be thinner
       than MNIST's in the field are thickened (:func:`thicken`).
    6. Scale so that the longer side is 20 px (``size * 20 / 28`` for other sizes), keeping the
       aspect ratio: area averaging (box filter) when shrinking, bicubic when enlarging, as MNIST
       was anti-aliased. The result is stretched so that its strongest ink is 1.
    7. Place it in the ``size`` x ``size`` field so that its centre of mass is at the field's
       centre; the shift is sub-pixel (bilinear) and is clamped so that no ink leaves the field.

    Returns ``(size, size)`` float32 in 0..1, white ink on black like MNIST.
    """
    peak = float(ink.max()) if ink.size else 0.0
    if peak < MIN_CONTRAST:
        raise BadImageError(f"{name}: no ink found (the image is blank or has almost no contrast); draw or write a digit")
    rows = np.flatnonzero((ink >= INK_THRESHOLD * peak).any(axis=1))
    cols = np.flatnonzero((ink >= INK_THRESHOLD * peak).any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # (h, w)
    if is_blob(crop):  # a speck, a tap of the pen, a filled shape
        raise BadImageError(f"{name}: the ink is one dot or blob ({crop.shape[1]}x{crop.shape[0]} px), not a "
                            "digit's strokes; write or draw a digit")

    box = max(1, round(size * MNIST_BOX / MNIST_FIELD))
    crop = thicken(crop, box / max(crop.shape), size / MNIST_FIELD)
    h, w = crop.shape
    scale = box / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC
    small = np.asarray(Image.fromarray(crop.astype(np.float32), mode="F").resize((new_w, new_h), resample))
    small = np.clip(small, 0.0, None)
    small = small / max(float(small.max()), 1e-6)

    # centre of mass of the patch, in pixel-centre coordinates (index + 0.5)
    total = float(small.sum())
    cy = float((small.sum(axis=1) * (np.arange(new_h) + 0.5)).sum()) / total
    cx = float((small.sum(axis=0) * (np.arange(new_w) + 0.5)).sum()) / total
    # top-left offset that puts (cy, cx) at (size/2, size/2), kept inside the field
    oy = min(max(size / 2 - cy, 0.0), float(size - new_h))
    ox = min(max(size / 2 - cx, 0.0), float(size - new_w))
    iy, ix = int(math.floor(oy)), int(math.floor(ox))
    fy, fx = oy - iy, ox - ix
    pad = np.zeros((size + 1, size + 1), dtype=np.float32)  # one spare row/column for the bilinear spill
    for dy, dx, weight in ((0, 0, (1 - fy) * (1 - fx)), (1, 0, fy * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 1, fy * fx)):
        if weight > 0:
            pad[iy + dy : iy + dy + new_h, ix + dx : ix + dx + new_w] += weight * small
    return np.clip(pad[:size, :size], 0.0, 1.0)


def stroke_width(ink: np.ndarray) -> float:
    """The strokes' width in px: twice the area of the ink (at half the strongest) over its outline's length,
    which is the width of a long stroke of any length (a diagonal 1-px line reads about 0.5)."""
    mask = ink >= 0.5 * float(ink.max())
    edges = (np.count_nonzero(mask[:, 1:] != mask[:, :-1]) + np.count_nonzero(mask[1:] != mask[:-1])
             + np.count_nonzero(mask[:, [0, -1]]) + np.count_nonzero(mask[[0, -1]]))
    return 2 * float(np.count_nonzero(mask)) / max(edges, 1)


def thick_strokes(field: np.ndarray) -> float:
    """The strokes' width in a prepared field (px; :func:`stroke_width`, scaled to a 28-px field) when it is over
    :data:`THICK_NOTE`, else 0.0."""
    if not field.size or float(field.max()) <= 0:
        return 0.0
    width = stroke_width(field) * MNIST_FIELD / max(field.shape)
    return width if width > THICK_NOTE else 0.0


def is_blob(ink: np.ndarray) -> bool:
    """Whether the ink (at half its strongest) is one dot or blob, not strokes: at most :data:`SPECK` px long, or
    filling :data:`BLOB_FILL` of a box about as wide as high (:data:`BLOB_ASPECT`): a disc fills 0.79 of its box, a
    square all of it; a digit's strokes fill a quarter of theirs (median), a ring of a 0 drawn with a marker 0.7. A
    shape that fills its box so but has a digit's inner structure (:func:`crossed_twice`: a counter, a bowl's opening)
    is no blob: a heavy type's 5 or 9 (a bold face with a stroke of 8 px at 160 px) fills 0.75-0.84 of its box."""
    mask = ink >= 0.5 * float(ink.max())
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    if max(h, w) <= SPECK:
        return True
    return (max(h, w) <= BLOB_ASPECT * min(h, w) and np.count_nonzero(mask) >= BLOB_FILL * h * w
            and crossed_twice(ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]) <= BLOB_CROSSINGS)


def crossed_twice(ink: np.ndarray) -> float:
    """The larger of the shares of the rows and of the columns of ``ink`` that cross it more than once (its inner
    structure): the ink at half its strongest after a 3x3 mean, so that the pinholes of a noisy or blocky edge are no
    gap. A disc, a square, an ellipse: 0, clean, noisy (sd 25 and 50), at JPEG q10 or blurred; typed digits of 38
    fonts set bold with a stroke of 8-12 px at 160 px, the ones that fill their box: 0.10-0.90."""
    smooth = square_filter(ink.astype(np.float32), 3, np.mean)
    mask = smooth >= 0.5 * float(smooth.max())
    if mask.shape[0] < 2 or mask.shape[1] < 2:
        return 0.0
    shares = []
    for m in (mask, mask.T):
        runs = np.count_nonzero(m[:, 1:] & ~m[:, :-1], axis=1) + m[:, 0]
        shares.append(float(np.mean(runs > 1)))
    return max(shares)


def thicken(crop: np.ndarray, scale: float, field_scale: float = 1.0) -> np.ndarray:
    """The cropped ink with its strokes widened (a grey dilation, square) so that, scaled by ``scale``, they are
    about :data:`MNIST_STROKE` px wide (times ``field_scale`` for fields other than 28 px), when they would
    otherwise be thinner than :data:`THIN_STROKE`; else the crop unchanged. Grows the crop by the added width."""
    if not thin_strokes(crop, THIN_STROKE * field_scale / scale):
        return crop
    grow = int(round(MNIST_STROKE * field_scale / scale - stroke_width(crop)))
    if grow < 1:
        return crop
    even = np.minimum(crop, 0.5 * float(crop.max()))  # as in find_strokes: a halved page's line is half as strong
    return square_filter(np.pad(even, (grow + 1) // 2), grow + 1, np.max)


def thin_strokes(crop: np.ndarray, limit: float) -> bool:
    """Whether the strokes are thinner than ``limit`` px (and than :data:`PEN_WIDTH`): the ink (at half the
    strongest) eroded by a square that wide keeps less than :data:`THIN_KEPT` of itself. An erosion, not the
    average width: thin stubs of grid lines beside a digit of pen strokes vanish in it and leave the digit's
    strokes, where they pulled the average down."""
    k = min(int(math.ceil(limit)), PEN_WIDTH)
    if k < 2:  # strokes under a pixel of the crop would be thinner than a field pixel: only when scaled up
        return False
    outside = np.pad(crop < 0.5 * float(crop.max()), k, constant_values=True).astype(np.uint8)
    kept = square_filter(outside, k, np.max) == 0
    return np.count_nonzero(kept) < THIN_KEPT * np.count_nonzero(outside == 0)


def preprocess(img: Image.Image, size: int = MNIST_FIELD, name: str = "image") -> np.ndarray:
    """MNIST-style preprocessing of any image: steps 1-7 of :func:`ink_map`, :func:`keep_digit` and
    :func:`mnist_field`.

    Step 8, the dataset's normalisation ``(x - mean) / std``, is done by :meth:`Predictor.tensor`
    because mean and std belong to the run. Returns ``(size, size)`` float32 in 0..1.
    """
    return mnist_field(keep_digit(*ink_and_grain(img, name), name), size=size, name=name)


def digit_and_marks(img: Image.Image, size: int = MNIST_FIELD, name: str = "image") -> tuple[np.ndarray, int]:
    """:func:`preprocess`'s field, and how many digits :func:`select_number` sees side by side in the image (2 or
    more: the image holds a number, and the field one of its digits, or several squeezed into the box)."""
    ink, grain = ink_and_grain(img, name)
    strokes = find_strokes(ink, grain, name)
    if strokes is None:
        return mnist_field(ink, size=size, name=name), 0  # raises: no ink
    field = mnist_field(keep_components(ink, strokes, select_digit(strokes.comps)), size=size, name=name)
    counted = closer_strokes(ink, counted_strokes(ink, strokes), name)[1]  # as --number finds them
    return field, side_by_side(select_number(counted.comps))


#: Digits side by side (:func:`side_by_side`) are at most this many times higher than each other, and each shares at
#: least this fraction of the lower one's rows with its neighbour (a row slanted by 25 degrees still does).
SIDE_HEIGHT = 2.0
SIDE_OVERLAP = 0.25


def side_by_side(digits: list[list[dict]]) -> int:
    """How many of a row's ``digits`` (:func:`select_number`) stand side by side as a number's do: from the tallest
    one, left and right, each next one on its neighbour's line (sharing :data:`SIDE_OVERLAP` of its rows: a slanted
    row rises from digit to digit) and of the tallest one's size (at most :data:`SIDE_HEIGHT` times lower). The row
    itself is looser (a digit may lie anywhere in the main one's rows widened by half its height): the parts of one
    object were counted as digits (a dress's hem pieces below its body: "3 digits side by side", a note that cannot
    help)."""
    boxes = sorted((_box(d) for d in digits), key=lambda b: b[1] + b[3])
    if len(boxes) < 2:
        return len(boxes)
    tallest = max(range(len(boxes)), key=lambda i: boxes[i][2] - boxes[i][0])
    high = boxes[tallest][2] - boxes[tallest][0] + 1
    def on_line(a, b) -> bool:
        return min(a[2], b[2]) - max(a[0], b[0]) + 1 >= SIDE_OVERLAP * min(a[2] - a[0], b[2] - b[0]) + 1

    count = 1
    for step in (-1, 1):
        i = tallest
        while 0 <= i + step < len(boxes) and on_line(boxes[i], boxes[i + step]) \
                and high <= SIDE_HEIGHT * (boxes[i + step][2] - boxes[i + step][0] + 1):
            i, count = i + step, count + 1
    return count


@dataclass
class NumberFields:
    """A number's fields (:func:`number_fields`)."""

    fields: list[np.ndarray]  # one per digit found, left to right
    #: For a digit wider than :data:`WIDE_DIGIT` of its height (two digits that touch, perhaps): by its index, the
    #: fields of its two halves, cut at its thinnest column near the middle (:func:`thinnest_column`).
    splits: dict[int, list[np.ndarray]] = field(default_factory=dict)
    #: A point, a comma or a minus, by the index of the digit it comes before (:func:`number_signs`).
    signs: list[tuple[int, str]] = field(default_factory=list)
    #: Marks as heavy as a digit away from the number's row, not read (:func:`left_out`).
    left_out: int = 0
    #: Digits at least :data:`WIDE_NOTE` times wider than high, by index, with that ratio: two or more digits that
    #: touch may be read as one there (a field of the halves is read where the net is surer of them).
    wide: dict[int, float] = field(default_factory=dict)
    #: Why this row of a page could not be read (:func:`number_lines`: its one-line refusal, a digit that is one dot
    #: or blob), its fields none; "" when it was read. The page's other rows are read all the same.
    refused: str = ""

    def __repr__(self) -> str:
        """One line: how many fields, which have halves, the signs, the marks left out and the wide digits (the fields
        themselves, 28x28 arrays each, are :attr:`fields`)."""
        refused = f", refused={short_repr(self.refused)}" if self.refused else ""
        return (f"NumberFields(fields={len(self.fields)}, splits={sorted(self.splits)}, signs={self.signs!r}, "
                f"left_out={self.left_out}, wide={self.wide!r}{refused})")

    def split(self, which: set[int]) -> "NumberFields":
        """The fields with the digits ``which`` read as their two halves (the signs' places moved along; a digit
        split is noted as wide only where each half still is, taken as half as wide)."""
        fields, place = [], {}
        for i, whole in enumerate(self.fields):
            place[i] = len(fields)
            fields += self.splits[i] if i in which else [whole]
        place[len(self.fields)] = len(fields)
        halves = {place[i] + k: r / 2 for i, r in self.wide.items()
                  if i in which and r / 2 >= WIDE_NOTE for k in (0, 1)}
        return NumberFields(fields, signs=[(place[i], sign) for i, sign in self.signs], left_out=self.left_out,
                            wide={**{place[i]: r for i, r in self.wide.items() if i not in which}, **halves})


def number_fields(img: Image.Image, size: int = MNIST_FIELD, name: str = "image") -> NumberFields:
    """A number written in a row, as one field per digit, left to right (:func:`select_number`): each digit's
    ink, within the columns it owns (:func:`digit_columns`), made into a field like a single digit's; and, for a
    digit wide enough to be two that touch, the fields of its halves (whoever reads the fields decides)."""
    ink, grain = ink_and_grain(img, name)
    strokes = counted_strokes(ink, find_strokes(ink, grain, name))
    if strokes is None:
        return NumberFields([mnist_field(ink, size=size, name=name)])  # raises: no ink
    ink, strokes = closer_strokes(ink, strokes, name)
    digits, shorts = number_row(strokes.comps)
    height = float(np.median([_box(d)[2] - _box(d)[0] + 1 for d in digits])) if digits else 0.0
    return _row_read(ink, strokes, digits, shorts, size=size, name=name,
                     left=left_out(strokes.comps, digits + [g["comps"] for g in shorts], height))


def number_lines(img: Image.Image, size: int = MNIST_FIELD, name: str = "image") -> list[NumberFields]:
    """Every row of digits in the image (:func:`number_rows`), top to bottom, each read as :func:`number_fields`
    reads its one row, within the rows of the image it owns (:func:`owned_spans`: to the middle of the gap to
    the rows above and below). A single row gives what :func:`number_fields` gives, ``left_out`` 0.

    A row that cannot be read (a digit that is one dot or blob: :func:`mnist_field`) is refused alone: its
    :attr:`NumberFields.refused` names the line (``page.png line 2: ...``), and the other rows are read (one row's
    refusal refused the page). A page none of whose rows can be read raises the first row's
    :class:`BadImageError`."""
    ink, grain = ink_and_grain(img, name)
    strokes = counted_strokes(ink, find_strokes(ink, grain, name))
    if strokes is None:
        return [NumberFields([mnist_field(ink, size=size, name=name)])]  # raises: no ink
    ink, strokes = closer_strokes(ink, strokes, name)
    rows = number_rows(strokes.comps)
    bands = owned_spans([_box([c for d in digits for c in d])[::2] for digits, _ in rows], strokes.small.shape[0])
    found, refusals = [], []
    for line, ((digits, shorts), band) in enumerate(zip(rows, bands), 1):
        try:
            found.append(_row_read(ink, strokes, digits, shorts, size=size, name=f"{name} line {line}"
                                   if len(rows) > 1 else name, band=band if len(rows) > 1 else None))
        except BadImageError as err:
            refusals.append(err)
            found.append(NumberFields([], refused=str(err)))
    if len(refusals) == len(found):
        raise refusals[0]
    return found


def _row_read(ink: np.ndarray, strokes: Strokes, digits: list[list[dict]], shorts: list[dict], *, size: int,
              name: str, left: int = 0, band: tuple[int, int] | None = None) -> NumberFields:
    """One row's fields (:func:`_row_fields`), its digits and marks (``digits``, ``shorts``) found on ``strokes``,
    kept within the copy's rows ``band``. A row whose digits are under :data:`SMALL_MARKS` px high on the reduced
    copy is read as :func:`number_fields` reads a number, on a crop of its own (:func:`_closer`: a digit's height of
    paper around it, within ``band``), where they come out at least :data:`CLOSER_GAIN` times larger: the rows of a
    page 2,400 px high were found on a copy reduced 9 times, their digits 9 px high there, a third of a digit apart
    and 2 px, and read merged (``3909`` read ``0``, "digits that touch"). One more labelling per such row."""
    tall = max((_box(d)[2] - _box(d)[0] + 1 for d in digits), default=SMALL_MARKS)
    row = _box([c for d in digits for c in d] + [c for g in shorts for c in g["comps"]]) if digits else None
    found = None if tall >= SMALL_MARKS else _closer(ink, strokes.small.shape, row, max(tall, 2), band, name)
    if found is None:
        return _row_fields(ink, strokes, digits, shorts, size=size, name=name, left=left, rows=band)
    crop, closer = found
    digits, shorts = number_row(closer.comps)
    return _row_fields(crop, closer, digits, shorts, size=size, name=name, left=left)


def _row_fields(ink: np.ndarray, strokes: Strokes, digits: list[list[dict]], shorts: list[dict], *, size: int,
                name: str, left: int = 0, rows: tuple[int, int] | None = None) -> NumberFields:
    """One row's fields (:func:`number_fields`), its signs and its wide digits' halves, kept within ``rows``."""
    columns = digit_columns(digits, strokes.small.shape[1])
    out = NumberFields([mnist_field(keep_components(ink, strokes, d, cols, rows), size=size, name=name)
                        for d, cols in zip(digits, columns)], signs=number_signs(digits, shorts), left_out=left,
                       wide=wide_digits(digits))
    for i, (digit, (a, b)) in enumerate(zip(digits, columns)):
        cut = thinnest_column(strokes, digit)
        if cut is None or not a < cut < b:  # the digit reaches into a neighbour's columns past its thinnest one
            continue
        try:
            out.splits[i] = [mnist_field(keep_components(ink, strokes, digit, cols, rows), size=size, name=name)
                             for cols in ((a, cut), (cut, b))]
        except BadImageError:  # a half without ink: no second digit there
            pass
    return out


def wide_digits(digits: list[list[dict]]) -> dict[int, float]:
    """The digits (their components) at least :data:`WIDE_NOTE` times wider than high: by index, that ratio."""
    ratios = {i: (x1 - x0 + 1) / (y1 - y0 + 1) for i, (y0, x0, y1, x1) in enumerate(map(_box, digits))}
    return {i: r for i, r in ratios.items() if r >= WIDE_NOTE}


def thinnest_column(strokes: Strokes, digit: list[dict]) -> int | None:
    """For a digit (its components) wider than :data:`WIDE_DIGIT` of its height, the column of the reduced copy
    (the first of the right half) where its ink is thinnest, within :data:`CUT_ZONE` of its width around the
    middle: where two touching digits meet. None for a digit of an ordinary width."""
    y0, x0, y1, x1 = _box(digit)
    width, height = x1 - x0 + 1, y1 - y0 + 1
    if width <= WIDE_DIGIT * height:
        return None
    own = np.isin(strokes.labels[y0:y1 + 1, x0:x1 + 1], [c["label"] for c in digit])
    profile = (own * strokes.small[y0:y1 + 1, x0:x1 + 1]).sum(axis=0)
    lo, hi = round((0.5 - CUT_ZONE / 2) * width), round((0.5 + CUT_ZONE / 2) * width)
    return x0 + lo + int(np.argmin(profile[lo:hi + 1]))


#: Fashion-MNIST's items (:func:`clothes_field`): the pixels differing from the background by at least this share of
#: the strongest difference are the item's extent (its trimmed box).
CLOTHES_TRIM = 0.1


def clothes_field(img: Image.Image, size: int = MNIST_FIELD, name: str = "image") -> np.ndarray:
    """One piece of clothing as a Fashion-MNIST field, made as that dataset's images were (Xiao et al. 2017: a
    product photo trimmed to the item, its longer side resized to 28 px, the shorter one padded to 28 px centred,
    the intensities negated): grey (transparent pixels as a white background), negated when its border is light
    (an item on white becomes light on black), the background's level taken off, trimmed to the item's box
    (:data:`CLOTHES_TRIM`), padded to a square, centred, resized to ``size``. None of a digit's steps: an item is
    neither fitted into a 20-px box nor moved by its centre of mass, and its soft, filled shapes are no strokes."""
    gray, alpha = unit_gray(img, name)
    for backdrop in (1.0,) if alpha is None else (1.0, 0.0):  # a cut-out on white; a white one, flat there, on black
        item = clothes_item(gray if alpha is None else gray * alpha + backdrop * (1.0 - alpha))
        smooth = square_filter(item, max(3, max(item.shape) // 100) | 1, np.mean)  # a photo's noise is no item
        peak = float(smooth.max())
        if peak >= MIN_CONTRAST:
            break
    else:
        raise BadImageError(f"{name}: no item found (the image is one shade); give a photo of a piece of clothing")
    inside = smooth >= CLOTHES_TRIM * peak
    ys, xs = np.nonzero(inside)
    outside = item[~_dilate(inside)]  # the paper around the item: its grain is taken off the item too
    floor = min(float(np.percentile(outside, 99)), 0.5 * CLOTHES_TRIM * peak) if outside.size else 0.0
    item = np.clip((item[ys.min():ys.max() + 1, xs.min():xs.max() + 1] - floor) / (1.0 - floor), 0.0, 1.0)
    h, w = item.shape
    side = max(h, w)
    square = np.zeros((side, side), np.float32)
    square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = item
    field = Image.fromarray(square, mode="F").resize((size, size), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(field, dtype=np.float32), 0.0, 1.0)


def clothes_item(gray: np.ndarray) -> np.ndarray:
    """:func:`clothes_field`'s item, light on black (Fashion-MNIST's polarity), the background at 0: the image negated
    when the item is darker than its background, the border's median (an item on white is, an item on black is not);
    but when it departs from that level the other way, by :data:`POLARITY_RATIO` times more, as a digit's page is
    turned over (:func:`departs_the_other_way`): a white shirt on light grey studio paper, a black one on mid grey,
    were clipped to 0 ("no item found (the image is one shade)")."""
    level = float(np.median(_ring(gray)))
    negate = level > 0.5
    if departs_the_other_way(gray, level, negate):
        negate = not negate
    item, background = (1.0 - gray, 1.0 - level) if negate else (gray, level)
    return np.clip((item - background) / max(1.0 - background, 1e-6), 0.0, 1.0)


def to_uint8_image(field_01: np.ndarray) -> Image.Image:
    """The 28x28 image the net saw, as a grayscale picture (white ink on black)."""
    return Image.fromarray(np.round(field_01 * 255).astype(np.uint8), mode="L")
