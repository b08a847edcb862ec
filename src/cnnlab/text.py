"""Words in messages, written once; and the width of text on a terminal, for tables that line up."""

from __future__ import annotations

import unicodedata


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 image``, ``2 images``, ``1,000 images``."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def either(names, word: str = "or") -> str:
    """``a``, ``a or b``, ``a, b or c`` (``word``: "and" for all of them)."""
    names = [str(n) for n in names]
    return f"{', '.join(names[:-1])} {word} {names[-1]}" if len(names) > 1 else "".join(names)


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


#: Characters that show as nothing, or only move the others, so that a name holding one looks like another name:
#: Unicode's default-ignorable characters less those that are parts of words and emoji (ZWNJ U+200C and ZWJ U+200D
#: in Persian, Indic scripts and emoji families, variation selectors as in ❤️, the tags of 🏴 flags, the combining
#: grapheme joiner, Mongolian's variation selectors and the conjoining Hangul fillers).
INVISIBLE = frozenset([0x00AD, 0x061C, 0x17B4, 0x17B5, 0x180E, 0x200B, 0x200E, 0x200F, *range(0x202A, 0x202F),
                       *range(0x2060, 0x2065), *range(0x2066, 0x2070), 0x3164, 0xFEFF, 0xFFA0,
                       *range(0x1BCA0, 0x1BCA4), *range(0x1D173, 0x1D17B), 0xE0001])
#: Of :data:`INVISIBLE`, the bidirectional controls: they change the order in which the characters around them show.
BIDI_CONTROLS = frozenset([0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)])


def reads_as(text: str, skip: tuple[str, ...] = ()) -> str:
    """What ``text`` reads as on a screen: Unicode-normalised (NFC: a decomposed 'é' as the composed one; step
    "form"), every space as ' ' (a no-break space looks like one; step "spaces"), without :data:`INVISIBLE`
    characters and without the white space around it (step "ends"). ``skip``: steps left out, to say which of them
    made two names one."""
    text = text if "form" in skip else unicodedata.normalize("NFC", text)
    if "spaces" not in skip:
        text = "".join(" " if unicodedata.category(ch) == "Zs" else ch for ch in text)
    text = "".join(ch for ch in text if ord(ch) not in INVISIBLE)
    return text if "ends" in skip else text.strip()
