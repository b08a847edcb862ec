"""The batched augmentation pipeline: seeded, shape- and layout-preserving, and ``shift`` alone is
bitwise the engine's historical ``shift_augment``."""

from __future__ import annotations

import argparse
import math
import re

import pytest
import torch
import torch.nn.functional as F

from cnnlab.augment import (_OPS, MIXING, Affine, Augment, Draws, Elastic, Erase, Flip, Shift, batch_seed, parse_augment,
                            resample)
from cnnlab.errors import CnnlabError

FILL = -0.375  # exact in float32


def historical_shift(x, seed, epoch, batch, pad=2, fill=0.0):
    """``cnnlab.engine.shift_augment`` as it was when it moved to cnnlab.augment (frozen reference)."""
    b, _, h, w = x.shape
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 100_003 + batch)
    off = torch.randint(0, 2 * pad + 1, (b, 2), generator=g).to(x.device)
    padded = F.pad(x, (pad, pad, pad, pad), value=fill)
    rows = off[:, :1] + torch.arange(h, device=x.device)
    cols = off[:, 1:] + torch.arange(w, device=x.device)
    n = torch.arange(b, device=x.device)[:, None, None]
    out = padded[n, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


def batch(b=6, c=1, h=12, w=10, seed=0, channels_last=False):
    x = torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def run(spec, x, seed=1, epoch=2, batch_=3, fill=FILL):
    return parse_augment(spec)(x, seed=seed, epoch=epoch, batch=batch_, fill=fill)


@pytest.mark.parametrize("seed,epoch,b", [(0, 0, 0), (1, 3, 7), (42, 14, 468)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_shift_alone_is_bitwise_the_historical_shift_augment(seed, epoch, b, channels_last):
    x = batch(8, 1, 28, 28, seed=b, channels_last=channels_last)
    want = historical_shift(x, seed, epoch, b, fill=FILL)
    got = parse_augment("shift")(x, seed=seed, epoch=epoch, batch=b, fill=FILL)
    assert torch.equal(got, want)
    assert got.stride() == want.stride()  # one channel: the historical layout is both formats
    got3 = parse_augment("shift:pad=3")(x, seed=seed, epoch=epoch, batch=b, fill=FILL)
    assert torch.equal(got3, historical_shift(x, seed, epoch, b, pad=3, fill=FILL))


ALL = "shift+affine:rotate=20,scale=0.2,translate=0.1,shear=0.2+elastic:alpha=2,sigma=2+flip+erase:p=1"
#: A typical spec of the ops whose defaults would check less; every other op of augment._OPS (a new one included) is
#: checked at its defaults.
TYPICAL = {"affine": "affine:rotate=20,scale=0.2,translate=0.1,shear=0.2", "erase": "erase:p=0.7"}
#: Every op, from the op table itself: a new op is in each test parametrized by it.
EVERY_OP = [TYPICAL.get(name, name) for name in _OPS]
HOW_TO_DRAW = ("draw only through the op's Draws (d.rand, d.randn, d.randint, d.uniform: made for the group's whole "
               "batch, this rank's rows kept; see cnnlab.augment.Draws)")


@pytest.mark.parametrize("spec", [*EVERY_OP, ALL])
def test_same_seed_same_output_other_batch_other_output(spec):
    x = batch()
    a, b = run(spec, x), run(spec, x)
    assert torch.equal(a, b), f"--augment {spec}: the same seed, epoch and batch gave another output: {HOW_TO_DRAW}"
    assert not torch.equal(a, run(spec, x, batch_=4)), f"--augment {spec}: the same output for another batch"
    assert not torch.equal(a, run(spec, x, epoch=3)), f"--augment {spec}: the same output in another epoch"
    assert not torch.equal(a, run(spec, x, seed=2)), f"--augment {spec}: the same output for another seed"


@pytest.mark.parametrize("spec", [*EVERY_OP, ALL])
@pytest.mark.parametrize("channels_last", [False, True])
def test_shape_dtype_and_memory_format_are_kept(spec, channels_last):
    x = batch(4, 3, 8, 8, channels_last=channels_last)
    y = run(spec, x)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt)


def test_ops_draw_from_their_own_generators():
    assert batch_seed(3, 4, 5) == (3 * 1_000_003 + 4) * 100_003 + 5
    seeds = {batch_seed(3, 4, 5, i) for i in range(4)}
    assert len(seeds) == 4
    # the second op's draws do not depend on whether the first op drew anything
    x = batch()
    flip_after_shift = run("shift:pad=0+flip", x)
    assert torch.equal(flip_after_shift, Flip()(x, Draws(torch.Generator().manual_seed(batch_seed(1, 2, 3, 1)), len(x)), FILL))


def test_uncovered_border_gets_fill():
    x = torch.full((4, 1, 10, 10), 2.0)
    y = run("shift:pad=3", x)
    assert set(y.unique().tolist()) <= {2.0, FILL}
    # a pure translation by 30% of the side always uncovers a 3-pixel band
    a = parse_augment("affine:rotate=0,scale=0,translate=0.3")
    theta = Affine(0, 0, 0.3, 0).theta(10, 10, Draws(torch.Generator().manual_seed(batch_seed(1, 2, 3)), 4))
    y = a(x, seed=1, epoch=2, batch=3, fill=FILL)
    for i in range(4):
        dx = -theta[i, 0, 2].item() * 5  # pixels the image moved right
        col = 0 if dx > 0.5 else 9
        if abs(dx) > 1.0:
            assert torch.allclose(y[i, 0, :, col], torch.tensor(FILL), atol=1e-5)
    # what stays inside is the image's own value
    assert math.isclose(y.max().item(), 2.0, abs_tol=1e-5)


def test_affine_and_elastic_with_zero_strength_are_the_identity():
    x = batch(5, 2, 28, 28)
    assert torch.allclose(run("affine:rotate=0,scale=0,translate=0,shear=0", x), x, atol=1e-5)
    assert torch.allclose(run("elastic:alpha=0", x), x, atol=1e-5)


def test_affine_draws_the_asked_transforms():
    g = torch.Generator().manual_seed(0)
    rot = Affine(rotate=30, scale=0, translate=0, shear=0).theta(28, 28, Draws(g, 64))
    m = rot[:, :, :2]
    assert torch.allclose(m @ m.transpose(1, 2), torch.eye(2, dtype=m.dtype).expand(64, 2, 2), atol=1e-12)
    assert torch.allclose(torch.linalg.det(m), torch.ones(64, dtype=m.dtype)) and rot[:, :, 2].abs().max() < 1e-12
    angles = torch.atan2(m[:, 1, 0], m[:, 0, 0]).abs() * 180 / math.pi
    assert angles.max() <= 30 + 1e-9 and angles.max() > 20
    zoom = Affine(rotate=0, scale=0.2, translate=0, shear=0).theta(28, 28, Draws(g, 64))
    d = zoom[:, 0, 0]  # reading at 1/zoom
    assert torch.allclose(zoom[:, 1, 1], d) and d.min() >= 1 / 1.2 - 1e-9 and d.max() <= 1 / 0.8 + 1e-9
    move = Affine(rotate=0, scale=0, translate=0.25, shear=0).theta(28, 28, Draws(g, 64))
    assert move[:, :, 2].abs().max() <= 0.5 + 1e-9 and move[:, :, 2].abs().max() > 0.3  # 2 * fraction


def test_affine_rotation_by_90_degrees_rotates():
    x = batch(2, 1, 8, 8)
    theta = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]]).expand(2, 2, 3)
    grid = F.affine_grid(theta, [2, 1, 8, 8], align_corners=False)
    assert torch.allclose(resample(x, grid, FILL), torch.rot90(x, k=1, dims=(2, 3)), atol=1e-5)


def test_flip_flips():
    x = batch(64)
    y = run("flip:p=1", x)
    assert torch.equal(y, x.flip(3))
    assert torch.equal(run("flip:p=0", x), x)
    half = run("flip", x)
    flipped = [torch.equal(half[i], x[i].flip(2)) for i in range(64)]
    assert 10 < sum(flipped) < 54


def test_erase_erases_one_rectangle_to_fill():
    x = torch.full((16, 1, 20, 20), 3.0)
    y = run("erase:p=1,min=0.1,max=0.2", x)
    for img in y[:, 0]:
        erased = img == FILL
        assert erased.any() and set(img.unique().tolist()) <= {3.0, FILL}
        r = erased.any(1).nonzero().flatten()
        c = erased.any(0).nonzero().flatten()
        assert erased[r.min():r.max() + 1, c.min():c.max() + 1].all()  # a full rectangle
        assert 0.05 <= erased.float().mean() <= 0.3
    assert torch.equal(run("erase:p=0", x), x)


def test_spec_round_trip_and_defaults():
    assert parse_augment("none") is None and parse_augment("") is None and parse_augment(None) is None
    aug = parse_augment(" affine : rotate=10 , shear=0.1 + erase ")
    assert [type(op) for op in aug.ops] == [Affine, Erase]
    assert aug.ops[0] == Affine(rotate=10, scale=0.1, translate=0.1, shear=0.1)
    assert parse_augment(aug.spec).ops == aug.ops
    assert parse_augment("shift").ops == [Shift(pad=2)]
    assert isinstance(parse_augment("elastic").ops[0], Elastic) and isinstance(Augment([Flip()]), Augment)


@pytest.mark.parametrize("spec,words", [
    ("rotate", "unknown op 'rotate'"),
    ("affine:spin=3", "keys rotate, scale, translate, shear"),
    ("affine:rotate", "key=value"),
    ("affine:rotate=ten", "must be a number"),
    ("shift:pad=1.5", "whole number"),
    ("affine:rotate=400", "out of range"),
    ("flip:p=2", "out of range"),
    ("erase:min=0.5,max=0.1", "min <= max"),
    ("shift++flip", "empty op"),
    ("none+shift", "cannot be combined"),
    ("affine:rotate=1,rotate=2", "given twice"),
    ("mixup+cutmix", "at most one of them"),
    ("cutmix:alpha=0", "out of range"),
])
def test_bad_specs_are_one_line_errors(spec, words):
    with pytest.raises(CnnlabError) as err:
        parse_augment(spec)
    msg = str(err.value)
    assert words in msg and "\n" not in msg and spec in msg


def test_mixup_mixes_images_and_their_loss_alike():
    """mixup: image i is lam_i of itself and 1 - lam_i of image perm_i, and its loss is the cross-entropy against
    the same mixture of the two labels (label smoothing included): a soft-target cross-entropy."""
    x = batch(b=8)
    out, mix = parse_augment("mixup:alpha=0.4").apply(x, seed=1, epoch=2, batch=3, fill=FILL)
    lam = mix.lam[:, None, None, None]
    torch.testing.assert_close(out, lam * x + (1 - lam) * x[mix.perm])
    assert ((mix.lam > 0) & (mix.lam < 1)).all() and not torch.equal(mix.perm, torch.arange(8))
    logits, y = torch.randn(8, 10, generator=torch.Generator().manual_seed(5)), torch.arange(8) % 10
    soft = mix.lam[:, None] * F.one_hot(y, 10) + (1 - mix.lam[:, None]) * F.one_hot(y[mix.perm], 10)
    torch.testing.assert_close(mix.loss(logits, y, 0.1), F.cross_entropy(logits, soft, label_smoothing=0.1))
    again, mix2 = parse_augment("mixup:alpha=0.4").apply(x, seed=1, epoch=2, batch=3, fill=FILL)
    assert torch.equal(again, out) and torch.equal(mix2.lam, mix.lam)  # seeded by (seed, epoch, batch)
    assert not torch.equal(parse_augment("mixup:alpha=0.4")(x, seed=1, epoch=2, batch=4, fill=FILL), out)


def test_cutmix_pastes_one_box_and_weighs_the_loss_by_its_area():
    x = batch(b=16, h=12, w=10)
    out, mix = parse_augment("cutmix:p=1").apply(x, seed=0, epoch=0, batch=0, fill=FILL)
    pasted = out == x[mix.perm]
    kept = out == x
    for i in range(16):
        if mix.perm[i] == i:
            continue
        box = pasted[i, 0] & ~kept[i, 0]  # random pixels are never equal by chance
        rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
        if len(rows):  # one rectangle, and everything else the image itself
            assert box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
        assert (box | kept[i, 0]).all()
        assert mix.lam[i].item() == pytest.approx(1 - box.sum().item() / 120)
    assert (mix.lam < 1).sum() > 8  # most images got a box
    untouched, none = parse_augment("cutmix:p=0").apply(x, seed=0, epoch=0, batch=0, fill=FILL)
    assert torch.equal(untouched, x) and (none.lam == 1).all()


def test_a_flip_of_digits_is_warned_about():
    """Mirroring keeps a shirt a shirt but not a 2 a 2: --augment or --tta with a flip on MNIST warns (one line);
    on Fashion-MNIST and on datasets cnnlab does not know (idx:, folder:) it does not."""
    from cnnlab.data.catalog import flip_warning
    from cnnlab.tta import parse_tta

    assert parse_augment("shift+flip").flips and not parse_augment("shift+erase").flips
    assert parse_tta("shift+flip").flips and not parse_tta("shift").flips
    warning = flip_warning("mnist", "--augment shift+flip")
    assert warning.startswith("warning: --augment shift+flip mirrors images left to right, and a mirrored mnist "
                              "image is not of its class") and "\n" not in warning
    assert flip_warning("fashion-mnist", "--tta flip") is None and flip_warning("idx:/data", "--tta flip") is None


@pytest.mark.parametrize("spec, said", [
    ("affine:rotate=1e+1", "'1e+1'"),  # was "affine.rotate must be a number, got '1e'"
    ("mixup:alpha=2E+0", "'2E+0'"),
    ("shift:pad=+2", "'=+2'"),  # was "shift.pad must be a whole number, got ''"
])
def test_a_plus_inside_a_number_is_named_as_such(spec, said):
    with pytest.raises(CnnlabError, match=rf"a '\+' inside a number \({re.escape(said)}\): '\+' joins ops; write "
                                          r"the number without it \(1e1, not 1e\+1"):
        parse_augment(spec)
    assert parse_augment("affine:rotate=1e-2+erase:p=0.5") is not None  # a '-' exponent and '+' between ops


@pytest.mark.parametrize("spec", ["", " "])
def test_an_empty_augment_is_refused_not_taken_for_none(spec, tiny_idx, capsys):
    """An unset "$AUG": `--recipe best --augment ""` trained without the recipe's augmentation, recorded as ""."""
    from cnnlab.cli import main

    code = main(["train", "--model", "resnet", "--dataset", f"idx:{tiny_idx}", "--recipe", "best", "--augment", spec,
                 "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--augment is empty (an unset variable?); give none" in err


def test_a_rank_augments_its_images_as_one_process_augments_them_in_the_whole_batch():
    """Under torchrun rank r holds images r, r + N, ... of the group's batch: drawn for the whole batch and sliced,
    its augmentation is what one process gives those images (mixing ops excepted: they pair within a rank)."""
    x = torch.randn(12, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    exact = "shift+flip+erase:p=0.7"
    for spec, close in ((exact, False), ("affine:rotate=20,shear=0.2+elastic", True)):
        aug = parse_augment(spec)
        whole = aug(x, seed=4, epoch=1, batch=2, fill=FILL)
        for rank in range(3):
            part = aug.apply(x[rank::3], seed=4, epoch=1, batch=2, fill=FILL, rank=rank, world_size=3)[0]
            if close:
                torch.testing.assert_close(part, whole[rank::3], rtol=1e-5, atol=1e-5)
            else:
                assert torch.equal(part, whole[rank::3])
    mix = parse_augment("mixup")
    a = mix.apply(x[0::2], seed=4, epoch=1, batch=2, fill=FILL, rank=0, world_size=2)[1]
    b = mix.apply(x[1::2], seed=4, epoch=1, batch=2, fill=FILL, rank=1, world_size=2)[1]
    assert not torch.equal(a.lam, b.lam)  # each rank pairs its own images by its own draws


@pytest.mark.parametrize("spec", EVERY_OP)
def test_every_op_augments_a_ranks_images_as_one_process_augments_them(spec):
    """(nwcE.) An op written as docs/architecture.md said (`torch.randn(x.shape, generator=...)`) drew for this rank's
    images only: under torchrun rank 1 took rank 0's numbers, and no test saw it (they named their ops by hand)."""
    x = torch.randn(12, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    aug, name = parse_augment(spec), spec.partition(":")[0]
    parts = [aug.apply(x[rank::3], seed=4, epoch=1, batch=2, fill=FILL, rank=rank, world_size=3) for rank in range(3)]
    if isinstance(aug.ops[0], MIXING):  # pairs the images of its own rank, by the rank's own generator
        again = aug.apply(x[1::3], seed=4, epoch=1, batch=2, fill=FILL, rank=1, world_size=3)
        assert torch.equal(again[0], parts[1][0]) and torch.equal(again[1].lam, parts[1][1].lam)
        assert not torch.equal(parts[0][1].lam, parts[1][1].lam), f"{name}: ranks 0 and 1 mixed by the same draws"
        return
    whole = aug(x, seed=4, epoch=1, batch=2, fill=FILL)
    for rank, (part, _) in enumerate(parts):
        assert torch.allclose(part, whole[rank::3], rtol=1e-5, atol=1e-5), (
            f"--augment {spec}: rank {rank} of 3 augments its images otherwise than one process does: {HOW_TO_DRAW}")


def test_draws_generator_is_the_mixing_ops_alone():
    """`d.g` (what the mixing ops pair with, by their rank's own generator) is no way to draw for another op."""
    d = Draws(torch.Generator().manual_seed(0), 6, slice(1, None, 3))
    with pytest.raises(RuntimeError, match=r"^Draws.g is the generator of an op that mixes labels .* other ops draw "
                                           r"through d.rand, d.randn, d.randint or d.uniform"):
        torch.randn((2, 1, 4, 4), generator=d.g)
    whole = torch.randn((6, 2, 3), generator=torch.Generator().manual_seed(0))
    assert torch.equal(d.randn(2, 3), whole[1::3])  # the group's batch drawn, this rank's rows kept


@pytest.mark.parametrize("name", list(_OPS))
def test_every_op_is_in_the_augment_help_and_the_modules_table(name):
    """(nwcE.) A new op was left out of `cnnlab train --help` (its list of ops was written by hand; the refusal of an
    unknown op, made from _OPS, named it) and of cnnlab.augment's table of ops."""
    import cnnlab.augment as augment
    from cnnlab.cli import build_parser
    from cnnlab.config import AUGMENT_OPS, LABEL_MIXING_OPS

    assert name in AUGMENT_OPS, (f"op {name!r} of augment._OPS is not in config.AUGMENT_OPS, the ops --augment's help "
                                 "lists (the help answers without importing torch, so not from _OPS): add it there")
    mixes = issubclass(_OPS[name], MIXING)
    assert (name in LABEL_MIXING_OPS) == mixes, (f"op {name!r} {'mixes' if mixes else 'does not mix'} labels "
                                                 "(augment.MIXING): config.LABEL_MIXING_OPS must say so too")
    train = dict(next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices)["train"]
    text = " ".join(next(a for a in train._actions if a.dest == "augment").help.split())
    assert re.search(rf"\b{name}\b", text.split(" such as ")[0]), f"--augment's help leaves out {name!r}: {text}"
    table = augment.__doc__.split("==========  ====")[1]  # the rows between the table's first two rules
    rows = re.findall(r"^``(\w+)``", table, re.M)
    assert name in rows, f"op {name!r} has no row in cnnlab/augment.py's docstring table (its keys and what it does)"


@pytest.mark.parametrize("name", list(_OPS))
def test_every_key_of_every_op_has_its_range(name):
    """A key without an entry in augment._LIMITS was a KeyError (a traceback) the first time a spec gave it."""
    from dataclasses import fields

    from cnnlab.augment import _LIMITS

    for f in fields(_OPS[name]):
        assert (name, f.name) in _LIMITS, f"{name}.{f.name} has no range in augment._LIMITS: add ({name!r}, {f.name!r})"
        low, high, _ = _LIMITS[(name, f.name)]
        assert low <= f.default <= high, f"{name}.{f.name}'s default {f.default} is outside its range [{low}, {high}]"
        assert parse_augment(f"{name}:{f.name}={f.default:g}").ops[0] == _OPS[name]()


def test_the_augment_help_names_no_op_the_op_table_lacks():
    from cnnlab.config import AUGMENT_OPS

    assert tuple(_OPS) == AUGMENT_OPS, f"config.AUGMENT_OPS {AUGMENT_OPS} is not augment._OPS's {tuple(_OPS)}"


def test_a_checkpoint_saved_before_group_wide_draws_resumes_on_its_own_path():
    """Checkpoints saved when each rank drew from seed + rank lack augment_by_rank: they resume on that path."""
    from cnnlab.checkpoint import TrainState

    new = TrainState()
    assert new.augment_by_rank is False and TrainState.from_dict(new.to_dict()).augment_by_rank is False
    old = {k: v for k, v in new.to_dict().items() if k != "augment_by_rank"}
    assert TrainState.from_dict(old).augment_by_rank is True


@pytest.mark.parametrize("spec", [*EVERY_OP, ALL])
def test_every_op_takes_a_batch_of_any_size_and_a_ranks_share_of_any_size(spec):
    """(atkM.) affine died on a batch of 3 images (``torch.linalg.solve`` read its (3, 3) right-hand side as 3 vectors
    beside 3 matrices): a run whose last batch held 3 images, or a torchrun rank's share of 3, ended in a traceback."""
    aug = parse_augment(spec)
    for b in range(1, 10):
        x = torch.randn(b, 1, 16, 16, generator=torch.Generator().manual_seed(b))
        out = aug(x, seed=4, epoch=1, batch=2, fill=FILL)
        assert (out[0] if isinstance(out, tuple) else out).shape == x.shape, (spec, b)
    x = torch.randn(6, 1, 16, 16, generator=torch.Generator().manual_seed(6))
    for rank in range(2):  # a global batch of 6 on 2 ranks: 3 images each
        part = aug.apply(x[rank::2], seed=4, epoch=1, batch=2, fill=FILL, rank=rank, world_size=2)[0]
        assert part.shape == (3, 1, 16, 16), (spec, rank)
