"""Batched, seeded augmentation of normalised (B, C, H, W) float batches, on the batch's device.

A pipeline is named by a spec string::

    spec  := "none" | op ("+" op)*
    op    := name [":" key "=" number ("," key "=" number)*]

Ops run left to right; every key has a default, so ``affine`` alone is a valid op:

==========  ===================================================================================
``shift``   ``pad=2``: translate each image by a whole number of pixels in [-pad, pad] on each
            axis (the same as a random crop of the image padded by ``pad``). Alone, it is
            bitwise the engine's historical ``shift_augment``.
``affine``  ``rotate=15`` (degrees, uniform in [-rotate, rotate]), ``scale=0.1`` (zoom factor
            uniform in [1-scale, 1+scale]), ``translate=0.1`` (fraction of the side, uniform in
            [-translate, translate] on each axis), ``shear=0`` (shear factor, uniform in
            [-shear, shear], x += shear * y): one ``affine_grid`` + ``grid_sample`` per batch,
            bilinear, about the image centre.
``elastic`` ``alpha=2, sigma=3``: elastic distortion (Simard et al. 2003): a per-pixel random
            displacement, smoothed by a Gaussian of ``sigma`` pixels and scaled so that its
            largest displacement is about ``alpha`` pixels; one ``grid_sample``.
``flip``    ``p=0.5``: horizontal flip of each image with probability p. Never for digits.
``erase``   ``p=0.5, min=0.02, max=0.2, ratio=3``: with probability p, one rectangle of area
            fraction in [min, max] and aspect ratio in [1/ratio, ratio] (log-uniform) is set
            to the fill value (random erasing / cutout).
``mixup``   ``p=1, alpha=0.2``: with probability p, an image becomes ``lam * itself + (1 - lam) *``
            another image of the batch (a seeded permutation), lam ~ Beta(alpha, alpha), and its
            loss is mixed with the same weights (Zhang et al. 2018).
``cutmix``  ``p=0.5, alpha=1``: with probability p, a box of another image of the batch is pasted
            in (its area 1 - lam of the image, lam ~ Beta(alpha, alpha), the box clipped at the
            border), and the loss is mixed by the pasted area (Yun et al. 2019).
==========  ===================================================================================

``mixup`` and ``cutmix`` mix labels as well as images: a pipeline holds at most one of them, and the
trainer's loss reads the pairing it returns (:meth:`Augment.apply`, :class:`Mix`). The running train
accuracy of such a run counts a prediction right when it is the image's own label (a pasted box of a
"7" in a "2" still counts as a "2"), so it reads lower than without mixing.

Examples: ``shift``, ``affine:rotate=10,scale=0.1,translate=0.08``, ``shift:pad=2+flip+erase:p=0.5``.

Uncovered pixels (the border that a shift, an affine map or an elastic map uncovers, and erased
rectangles) get ``fill``, the normalised value of a black pixel, which the caller passes.

Randomness comes from CPU ``torch.Generator`` objects seeded by (seed, epoch, batch) and the op's
index in the pipeline: a resumed run draws the same augmentation without stored generator state,
and CPU and GPU runs draw the same numbers (the outputs differ by kernel numerics at most). An op is
called as ``op(x, draws, fill)`` and draws through :class:`Draws` alone, whose every draw is made for
the group's whole batch and cut to this rank's rows, so that torchrun augments as one process does.

A new op: its class (a frozen dataclass whose fields are its keys), an entry in ``_OPS``, its keys'
ranges in ``_LIMITS``, its row in the table above and its name in ``config.AUGMENT_OPS`` (the
``--augment`` help's list; docs/architecture.md, "A new augmentation").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError, short_repr

_MASK63 = (1 << 63) - 1
_GOLDEN = 0x9E3779B97F4A7C15
#: Mixed into a mixing op's seed on ranks other than 0, so that ranks pair their images differently.
_RANK_MIX = 0xD1B54A32D192ED03


def batch_seed(seed: int, epoch: int, batch: int, op_index: int = 0) -> int:
    """The generator seed of one op of one batch; op 0 uses the engine's historical formula."""
    base = (seed * 1_000_003 + epoch) * 100_003 + batch
    if op_index == 0:
        return base
    return (base ^ (op_index * _GOLDEN)) & _MASK63


def _uniform(g: torch.Generator, shape, low: float, high: float) -> torch.Tensor:
    return torch.rand(shape, generator=g, dtype=torch.float64).mul_(high - low).add_(low)


class Draws:
    """One op's random numbers for one batch: what an op draws from, and all it may draw from (its ``__call__`` is
    ``op(x, draws, fill)``).

    Under torchrun a rank holds images ``rank, rank + world_size, ...`` of the group's batch (the loader's shards):
    each method draws for all ``total`` images of the group's batch, in the same order as one process would, and
    keeps this rank's rows (``rows``), so that a group augments every image as one process does. So an op draws
    per image through these methods, ``(total, *tail)`` numbers sliced to ``(len(x), *tail)``: ``d.randn(c, h, w)``
    for noise the shape of an image, never ``torch.randn(x.shape, generator=...)`` (this rank's count only: rank 1
    would take rank 0's numbers). ``tests/test_augment.py`` checks every op in ``_OPS`` for it.

    The generator itself (:attr:`g`) is only for the ops that mix labels (:data:`MIXING`), which pair the images of
    their own rank and are given a generator of their own (:meth:`Augment.apply`)."""

    def __init__(self, g: torch.Generator, total: int, rows: slice = slice(None), *, own: bool = False):
        self._g, self.total, self.rows, self._own = g, total, rows, own

    @property
    def g(self) -> torch.Generator:
        """The generator, for an op in :data:`MIXING` (given its rank's own); any other op: a RuntimeError."""
        if not self._own:
            raise RuntimeError("Draws.g is the generator of an op that mixes labels (augment.MIXING), which pairs "
                               "its own rank's images; other ops draw through d.rand, d.randn, d.randint or d.uniform, "
                               "which draw for the group's whole batch and keep this rank's rows (see Draws)")
        return self._g

    def rand(self, *tail: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Uniform in [0, 1): ``(len(x), *tail)``."""
        return torch.rand((self.total, *tail), generator=self._g, dtype=dtype)[self.rows]

    def randn(self, *tail: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Standard normal: ``(len(x), *tail)``."""
        return torch.randn((self.total, *tail), generator=self._g, dtype=dtype)[self.rows]

    def randint(self, high: int, *tail: int) -> torch.Tensor:
        """Whole numbers in [0, high): ``(len(x), *tail)``."""
        return torch.randint(0, high, (self.total, *tail), generator=self._g)[self.rows]

    def uniform(self, low: float, high: float, *tail: int) -> torch.Tensor:
        """Uniform in [low, high), float64: ``(len(x), *tail)``."""
        return _uniform(self._g, (self.total, *tail), low, high)[self.rows]


# ----------------------------------------------------------------------------- ops


@dataclass(frozen=True)
class Shift:
    pad: int = 2

    def __call__(self, x: torch.Tensor, d: Draws, fill: float) -> torch.Tensor:
        pad = self.pad
        b, _, h, w = x.shape
        off = d.randint(2 * pad + 1, 2).to(x.device)  # (B, 2) row, col offsets
        padded = F.pad(x, (pad, pad, pad, pad), value=fill)  # (B, C, H+2p, W+2p)
        rows = off[:, :1] + torch.arange(h, device=x.device)  # (B, H)
        cols = off[:, 1:] + torch.arange(w, device=x.device)  # (B, W)
        n = torch.arange(b, device=x.device)[:, None, None]
        out = padded[n, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C): advanced dims first
        return out.permute(0, 3, 1, 2)  # (B, C, H, W), laid out channels-last in memory


def resample(x: torch.Tensor, grid: torch.Tensor, fill: float) -> torch.Tensor:
    """Bilinear ``grid_sample`` whose outside is ``fill`` (sample x - fill with zero padding)."""
    out = F.grid_sample(x - fill, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.add_(fill)


@dataclass(frozen=True)
class Affine:
    rotate: float = 15.0
    scale: float = 0.1
    translate: float = 0.1
    shear: float = 0.0

    def theta(self, h: int, w: int, d: Draws) -> torch.Tensor:
        """(B, 2, 3) float64: for each output pixel, where to read in the input (affine_grid's convention)."""
        angle = d.uniform(-self.rotate, self.rotate) * (math.pi / 180.0)
        zoom = d.uniform(1.0 - self.scale, 1.0 + self.scale)
        shear = d.uniform(-self.shear, self.shear)
        shift = d.uniform(-self.translate, self.translate, 2) * torch.tensor([w, h], dtype=torch.float64)
        b = len(angle)
        cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
        # forward map in pixels about the centre: p' = R S Sh p + t, with Sh = [[1, shear], [0, 1]]
        fwd = torch.zeros(b, 3, 3, dtype=torch.float64)
        fwd[:, 0, 0], fwd[:, 0, 1] = cos, cos * shear - sin
        fwd[:, 1, 0], fwd[:, 1, 1] = sin, sin * shear + cos
        fwd[:, :2, 2] = shift
        fwd[:, 2, 2] = 1.0
        norm = torch.diag(torch.tensor([w / 2.0, h / 2.0, 1.0], dtype=torch.float64))  # normalised -> pixels
        # fwd^-1 @ norm, norm given as a batch: a (3, 3) beside 3 matrices was read as 3 vectors (a batch of 3 died)
        inv = torch.linalg.solve(fwd, norm.expand(b, 3, 3))
        return (torch.linalg.inv(norm) @ inv)[:, :2, :]

    def __call__(self, x: torch.Tensor, d: Draws, fill: float) -> torch.Tensor:
        b, c, h, w = x.shape
        theta = self.theta(h, w, d).to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)
        return resample(x, grid, fill)


def _gaussian_matrix(n: int, sigma: float, device) -> torch.Tensor:
    """(n, n) matrix of a zero-padded 1-D Gaussian blur (truncated at 2.5 sigma, taps summing to 1)."""
    radius = max(1, int(math.ceil(2.5 * sigma)))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    taps = taps / taps.sum()
    d = torch.arange(n)[:, None] - torch.arange(n)[None, :]  # (n, n) offsets
    m = torch.where(d.abs() <= radius, taps[(d + radius).clamp(0, 2 * radius)], torch.zeros(()))
    return m.to(device)


def _gaussian_blur(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of each (H, W) map of a (B, K, H, W) field: two small matmuls."""
    h, w = field.shape[-2:]
    return _gaussian_matrix(h, sigma, field.device) @ field @ _gaussian_matrix(w, sigma, field.device).T


@dataclass(frozen=True)
class Elastic:
    alpha: float = 2.0
    sigma: float = 3.0

    def __call__(self, x: torch.Tensor, d: Draws, fill: float) -> torch.Tensor:
        b, c, h, w = x.shape
        noise = d.rand(2, h, w).mul_(2).sub_(1).to(device=x.device, dtype=torch.float32)
        disp = _gaussian_blur(noise, self.sigma)
        # scale so that a displacement field's largest value is about alpha pixels
        peak = disp.flatten(1).abs().amax(1).clamp_min(1e-12)[:, None, None, None]
        disp = disp / peak * self.alpha
        disp = disp * torch.tensor([2.0 / w, 2.0 / h], device=x.device)[None, :, None, None]  # pixels -> normalised
        eye = torch.eye(2, 3, device=x.device, dtype=torch.float32).expand(b, 2, 3)
        grid = F.affine_grid(eye, [b, c, h, w], align_corners=False) + disp.permute(0, 2, 3, 1)
        return resample(x, grid, fill)


@dataclass(frozen=True)
class Flip:
    p: float = 0.5

    def __call__(self, x: torch.Tensor, d: Draws, fill: float) -> torch.Tensor:
        mask = (d.rand() < self.p).to(x.device)
        return torch.where(mask[:, None, None, None], x.flip(3), x)


@dataclass(frozen=True)
class Erase:
    p: float = 0.5
    min: float = 0.02
    max: float = 0.2
    ratio: float = 3.0

    def __call__(self, x: torch.Tensor, d: Draws, fill: float) -> torch.Tensor:
        _, _, h, w = x.shape
        apply = d.rand() < self.p
        area = d.uniform(self.min, self.max) * (h * w)
        log_r = math.log(self.ratio)
        aspect = torch.exp(d.uniform(-log_r, log_r))
        eh = torch.sqrt(area * aspect).round().clamp(1, h).long()
        ew = torch.sqrt(area / aspect).round().clamp(1, w).long()
        top = (d.rand(dtype=torch.float64) * (h - eh + 1)).long()
        left = (d.rand(dtype=torch.float64) * (w - ew + 1)).long()
        mask = (_boxes(top, top + eh, left, left + ew, h, w) & apply[:, None, None]).to(x.device)  # (B, H, W)
        return x.masked_fill(mask[:, None], fill)


def _boxes(top: torch.Tensor, bottom: torch.Tensor, left: torch.Tensor, right: torch.Tensor, h: int,
           w: int) -> torch.Tensor:
    """(B, H, W) bool: for each image, the rectangle of rows [top, bottom) and columns [left, right)."""
    rows, cols = torch.arange(h)[None, :], torch.arange(w)[None, :]
    in_r = (rows >= top[:, None]) & (rows < bottom[:, None])  # (B, H)
    in_c = (cols >= left[:, None]) & (cols < right[:, None])  # (B, W)
    return in_r[:, :, None] & in_c[:, None, :]


@dataclass(frozen=True)
class Mix:
    """How a batch was mixed: image i holds ``lam[i]`` of itself and ``1 - lam[i]`` of image ``perm[i]``."""

    perm: torch.Tensor  # (B,) long, on the batch's device
    lam: torch.Tensor  # (B,) float32, on the batch's device; 1 where an image was left alone

    def loss(self, logits: torch.Tensor, y: torch.Tensor, label_smoothing: float) -> torch.Tensor:
        """The mixed batch's cross-entropy: each image's two labels weighted as its pixels were."""
        own = F.cross_entropy(logits, y, label_smoothing=label_smoothing, reduction="none")
        other = F.cross_entropy(logits, y[self.perm], label_smoothing=label_smoothing, reduction="none")
        return (self.lam * own + (1 - self.lam) * other).mean()


def _pairing(b: int, g: torch.Generator, p: float, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(perm, lam) on the CPU: a seeded permutation of the batch, and lam ~ Beta(alpha, alpha) for the images
    drawn (probability p), 1 for the others. Beta comes from numpy, seeded from ``g`` (torch samples Beta
    without a generator)."""
    perm = torch.randperm(b, generator=g)
    chosen = torch.rand(b, generator=g) < p
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=g)))
    lam = torch.from_numpy(rng.beta(alpha, alpha, size=b)).float()
    return perm, torch.where(chosen, lam, torch.ones(b))


@dataclass(frozen=True)
class MixUp:
    p: float = 1.0
    alpha: float = 0.2

    def __call__(self, x: torch.Tensor, d: Draws, fill: float) -> tuple[torch.Tensor, Mix]:
        perm, lam = _pairing(x.shape[0], d.g, self.p, self.alpha)
        perm, lam = perm.to(x.device), lam.to(x.device)
        w = lam.to(x.dtype)[:, None, None, None]
        return x * w + x[perm] * (1 - w), Mix(perm, lam)


@dataclass(frozen=True)
class CutMix:
    p: float = 0.5
    alpha: float = 1.0

    def __call__(self, x: torch.Tensor, d: Draws, fill: float) -> tuple[torch.Tensor, Mix]:
        b, _, h, w = x.shape
        g = d.g  # a pairing within this rank's images: its generator is the rank's own (Augment.apply)
        perm, lam = _pairing(b, g, self.p, self.alpha)
        side = torch.sqrt(1 - lam.double())  # the box's sides as fractions of the image's
        bh, bw = (side * h).round().long(), (side * w).round().long()
        cy = (torch.rand(b, generator=g, dtype=torch.float64) * h).long()
        cx = (torch.rand(b, generator=g, dtype=torch.float64) * w).long()
        top, bottom = (cy - bh // 2).clamp(0, h), (cy - bh // 2 + bh).clamp(0, h)
        left, right = (cx - bw // 2).clamp(0, w), (cx - bw // 2 + bw).clamp(0, w)
        box = _boxes(top, bottom, left, right, h, w)  # (B, H, W)
        lam = 1 - box.sum((1, 2)).float() / (h * w)  # the area actually kept, after clipping
        box, perm = box.to(x.device), perm.to(x.device)
        return torch.where(box[:, None], x[perm], x), Mix(perm, lam.to(x.device))


_OPS = {"shift": Shift, "affine": Affine, "elastic": Elastic, "flip": Flip, "erase": Erase, "mixup": MixUp,
        "cutmix": CutMix}
#: The ops that mix labels too (at most one a pipeline).
MIXING = (MixUp, CutMix)


# ----------------------------------------------------------------------------- the pipeline


class Augment:
    """A pipeline of ops; ``aug(x, seed=, epoch=, batch=, fill=)`` returns the augmented batch."""

    def __init__(self, ops: list):
        self.ops = list(ops)

    @property
    def spec(self) -> str:
        """The canonical spec string (every key written out)."""
        parts = []
        for op in self.ops:
            name = next(k for k, v in _OPS.items() if isinstance(op, v))
            args = ",".join(f"{f.name}={getattr(op, f.name):g}" for f in fields(op))
            parts.append(f"{name}:{args}")
        return "+".join(parts)

    def __repr__(self) -> str:
        return f"Augment({self.spec!r})"

    @property
    def flips(self) -> bool:
        """Whether the pipeline mirrors images (a ``flip`` op)."""
        return any(isinstance(op, Flip) for op in self.ops)

    def __call__(self, x: torch.Tensor, *, seed: int, epoch: int, batch: int, fill: float) -> torch.Tensor:
        """The augmented batch (a mixing op's pairing dropped: :meth:`apply` keeps it for the loss)."""
        return self.apply(x, seed=seed, epoch=epoch, batch=batch, fill=fill)[0]

    def apply(self, x: torch.Tensor, *, seed: int, epoch: int, batch: int, fill: float, rank: int = 0,
              world_size: int = 1) -> tuple[torch.Tensor, Mix | None]:
        """The augmented batch, and how it was mixed (None without ``mixup`` or ``cutmix``). ``rank`` of
        ``world_size``: ``x`` is images ``rank::world_size`` of the group's batch, augmented as one process augments
        them in the whole batch (:class:`Draws`); ``mixup`` and ``cutmix`` pair images within ``x`` only (another
        rank's images are not here), each rank by its own generator."""
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        mix = None
        for i, op in enumerate(self.ops):
            op_seed = batch_seed(seed, epoch, batch, i)
            if isinstance(op, MIXING):
                own = (op_seed ^ (rank * _RANK_MIX)) & _MASK63 if rank else op_seed
                x, mix = op(x, Draws(torch.Generator().manual_seed(own), len(x), own=True), fill)
            else:
                draws = Draws(torch.Generator().manual_seed(op_seed), len(x) * world_size, slice(rank, None, world_size))
                x = op(x, draws, fill)
        return x.contiguous(memory_format=fmt), mix  # a no-op when the last op kept the layout


_LIMITS = {
    ("shift", "pad"): (0, 64, True),
    ("affine", "rotate"): (0, 180, False),
    ("affine", "scale"): (0, 0.99, False),
    ("affine", "translate"): (0, 1, False),
    ("affine", "shear"): (0, 2, False),
    ("elastic", "alpha"): (0, 64, False),
    ("elastic", "sigma"): (0.1, 64, False),
    ("flip", "p"): (0, 1, False),
    ("erase", "p"): (0, 1, False),
    ("erase", "min"): (0.0001, 1, False),
    ("erase", "max"): (0.0001, 1, False),
    ("erase", "ratio"): (1, 100, False),
    ("mixup", "p"): (0, 1, False),
    ("mixup", "alpha"): (0.01, 100, False),
    ("cutmix", "p"): (0, 1, False),
    ("cutmix", "alpha"): (0.01, 100, False),
}


def parse_number(raw: str, where: str, low: float, high: float, whole: bool) -> float | int:
    """A spec's setting as a number in [low, high]; ``where`` (flag, spec and key) starts the error."""
    raw = raw.strip()
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        raise CnnlabError(f"{where} must be {'a whole number' if whole else 'a number'}, got {raw!r}") from None
    if not low <= value <= high:
        raise CnnlabError(f"{where}={raw} is out of range; use {low:g} to {high:g}")
    return value


def _parse_op(text: str, spec: str):
    name, _, args = text.partition(":")
    name = name.strip()
    if name not in _OPS:
        raise CnnlabError(f"--augment {spec!r}: unknown op {name!r}; use ops from {', '.join(_OPS)} joined by '+', "
                          f"e.g. 'affine:rotate=10+erase'")
    cls = _OPS[name]
    keys = [f.name for f in fields(cls)]
    values = {}
    for item in (a.strip() for a in args.split(",") if a.strip()):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or key not in keys:
            raise CnnlabError(f"--augment {spec!r}: {name} takes key=value with keys {', '.join(keys)}, got {item!r}")
        if key in values:
            raise CnnlabError(f"--augment {spec!r}: {name}.{key} is given twice; give it once")
        values[key] = parse_number(raw, f"--augment {spec!r}: {name}.{key}", *_LIMITS[(name, key)])
    op = cls(**values)
    if isinstance(op, Erase) and op.min > op.max:
        raise CnnlabError(f"--augment {spec!r}: erase.min={op.min:g} is above erase.max={op.max:g}; make min <= max")
    return op


#: A number written with a '+' (an exponent's sign, or a leading plus) in a spec, where '+' joins the ops.
_SIGNED_NUMBER = re.compile(r"[0-9.][eE]\+[0-9]*|=\s*\+[0-9.]*")


def split_spec(spec: str | None, flag: str, word: str, example: str) -> list[str] | None:
    """The '+'-joined parts of a spec string (``--augment``, ``--tta``), stripped; None for ``none`` or empty."""
    if spec is not None and not isinstance(spec, str):  # the API's tta=1 or tta=True: an AttributeError from strip()
        raise CnnlabError(f"{flag} must be a string such as '{example}' (or None for none), got {short_repr(spec)}")
    text = (spec or "").strip()
    if text in ("", "none"):
        return None
    signed = _SIGNED_NUMBER.search(text)
    if signed:  # '1e+1' was cut at its '+' into '1e' and '1': "must be a number, got '1e'"
        raise CnnlabError(f"{flag} {spec!r}: a '+' inside a number ({signed.group(0)!r}): '+' joins {word}s; write "
                          "the number without it (1e1, not 1e+1; 2, not +2)")
    parts = [p.strip() for p in text.split("+")]
    if any(not p for p in parts):
        raise CnnlabError(f"{flag} {spec!r}: empty {word} between '+'; write {word}s like '{example}'")
    if "none" in parts:
        raise CnnlabError(f"{flag} {spec!r}: 'none' cannot be combined with other {word}s; use it alone")
    return parts


def parse_augment(spec: str | None) -> Augment | None:
    """The pipeline that ``spec`` names, or None for ``none`` (or an empty spec)."""
    parts = split_spec(spec, "--augment", "op", "shift+flip")
    if parts is None:
        return None
    ops = [_parse_op(p, spec) for p in parts]
    if sum(isinstance(op, MIXING) for op in ops) > 1:
        raise CnnlabError(f"--augment {spec!r}: mixup and cutmix each mix the labels; give at most one of them")
    return Augment(ops)
