"""Batches are slices of a seeded permutation, normalised as whole batches."""

from __future__ import annotations

import torch

from cnnlab.data import BatchLoader, epoch_permutation


def loader(n=10, batch=4, **kw):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    labels = torch.arange(n)
    kw.setdefault("shuffle", True)
    return BatchLoader(images, labels, batch, mean=0.5, std=0.25, **kw)


def test_last_partial_batch_is_kept_and_epoch_covers_everything():
    ld = loader(10, 4)
    sizes = [len(y) for _, y in ld.batches(0)]
    assert sizes == [4, 4, 2] and len(ld) == 3
    seen = torch.cat([y for _, y in ld.batches(0)])
    assert sorted(seen.tolist()) == list(range(10))


def test_order_is_seeded_and_changes_per_epoch():
    a = [y.tolist() for _, y in loader(seed=3).batches(1)]
    b = [y.tolist() for _, y in loader(seed=3).batches(1)]
    c = [y.tolist() for _, y in loader(seed=3).batches(2)]
    d = [y.tolist() for _, y in loader(seed=4).batches(1)]
    assert a == b and a != c and a != d
    assert torch.equal(epoch_permutation(10, 3, 1), epoch_permutation(10, 3, 1))


def test_resume_from_batch_continues_the_same_order():
    ld = loader(10, 3)
    full = [y.tolist() for _, y in ld.batches(5)]
    assert [y.tolist() for _, y in ld.batches(5, start=2)] == full[2:]


def test_normalisation_matches_to_tensor_then_normalize():
    ld = loader(10, 10, shuffle=False)
    x, y = next(ld.batches(0))
    expected = (y.float() / 255.0 - 0.5) / 0.25
    torch.testing.assert_close(x[:, 0, 0, 0], expected)
    assert x.dtype == torch.float32


def test_shards_are_disjoint_equal_and_cover_the_epoch():
    shards = [torch.cat([y for _, y in loader(10, 2, rank=r, world_size=3).batches(7)]) for r in range(3)]
    assert all(len(s) == 4 for s in shards)  # ceil(10 / 3), padded by wrapping around
    union = torch.cat(shards)
    assert set(union.tolist()) == set(range(10))
    assert len(union) - len(set(union.tolist())) == 2  # only the 2 wrap-around pad items repeat
    other = [torch.cat([y for _, y in loader(10, 2, rank=r, world_size=3).batches(8)]) for r in range(3)]
    assert [s.tolist() for s in other] != [s.tolist() for s in shards]


def test_unshuffled_shards_count_every_item_once():
    shards = [torch.cat([y for _, y in loader(10, 3, shuffle=False, rank=r, world_size=3).batches(0)]) for r in range(3)]
    assert sorted(torch.cat(shards).tolist()) == list(range(10))
