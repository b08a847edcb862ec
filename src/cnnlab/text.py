"""Words in messages, written once."""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 image``, ``2 images``, ``1,000 images``."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"
