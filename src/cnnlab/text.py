"""Words in messages, written once; and the width of text on a terminal, for tables that line up."""

from __future__ import annotations

import unicodedata


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 image``, ``2 images``, ``1,000 images``."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


#: Unicode categories that take no column: non-spacing and enclosing marks (Thai's vowel signs U+0E31 and U+0E35,
#: Devanagari's U+0947, VS16 U+FE0F, whose combining class is 0 all the same) and format characters.
_ZERO_WIDTH = ("Mn", "Me", "Cf")


def display_width(text: str) -> int:
    """How many columns ``text`` takes on a terminal: a combining mark (a decomposed ``é``'s accent, a Thai vowel
    sign) or a format character none, an East Asian wide or full-width character (``中``, most emoji) two, others
    one. ``len`` counts characters: a table padded by it shifted the rows of such names."""
    return sum(0 if unicodedata.combining(ch) or unicodedata.category(ch) in _ZERO_WIDTH
               else 2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad(text: str, width: int, right: bool = False) -> str:
    """``text`` padded with spaces to ``width`` columns on a terminal, after it (``f"{text:<{width}}"``, which counts
    characters) or, ``right``, before it (``f"{text:>{width}}"``)."""
    fill = " " * max(0, width - display_width(text))
    return fill + text if right else text + fill
