"""``folder:DIR``: an image folder with one subfolder per class, converted once to MNIST-shaped uint8 arrays.

Layout. ``DIR/<class>/<image>`` (images may sit in nested folders below a class folder, at most
:data:`MAX_FOLDER_DEPTH` levels below it, a deeper one refused; a linked one is followed, as
a linked class folder is, read once however many ways lead to it within one class; one linking into the dataset
outside its class folder, or above it, and a folder reached from two class folders, are refused). Class names
are the class folder names, sorted; a class's label is its index in that order. When ``DIR`` holds
both ``train/`` and ``test/``, those are the splits (``DIR/train/<class>/...``, ``DIR/test/<class>/...``;
the classes are those of ``train/``, and ``test/`` may lack some but not add any); ``training/`` and
``testing/`` (how MNIST is shared as PNGs) are taken as ``train/`` and ``test/``. Top-level folders named like
splits otherwise (``val/``, ``valid/``, ``validation/``, a lone ``train/`` or ``test/``), top-level folders that
each hold the same folders rather than images, and one top-level folder holding folders (the dataset one level
down) are refused, naming the layout to rename to: never a net that learns "train vs val". Otherwise a seeded,
deterministic, stratified split holds out a test set: within each class, the readable images sorted
by path are permuted by ``numpy.random.default_rng([SPLIT_SEED, class_index])`` and the first
``n // 6`` (at least one when the class has two or more images) go to test, the rest to train.

Conversion (:func:`convert_image`). Only PNG, JPEG and BMP are decoded (by content; the suffix
only selects candidates: ``.png .jpg .jpeg .bmp``, any case). Each image is decoded completely and
strictly (Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is forced off while converting, so a
truncated file is an error, never a silently grey-padded image), rotated by its EXIF orientation,
converted to 8-bit grayscale with ``Image.convert('L')`` (ITU-R 601-2 luma; alpha is dropped;
16-bit grayscale is scaled to 8 bits first) and resized to 28x28 with ``Image.Resampling.LANCZOS``
(antialiased; no cropping or padding, so a non-square image is squashed). Colours are not inverted:
MNIST-trained models expect light strokes on a dark background.

Unreadable files (corrupt, truncated, empty, not really an image; named like an image but a FIFO, a
symlink loop or a file that cannot be opened; larger than ``MAX_IMAGE_FILE_BYTES``, which is never read)
are listed in one warning through the ``log`` callable and skipped; that warning is repeated, from
the cache, on every later load. An empty class folder, a class with no readable image, or no images at all is a :class:`DataError`, and
so is a folder that cannot be listed (permission denied: named as such, never called empty), a symlink
loop where a class folder would be, a class folder that is a broken symbolic link (on a disk not mounted now: it was
a class, never a loose file to ignore), and a class folder that links back to the dataset folder. A command's
own folder (a run's, an analysis's, ``runs/``) where a load would read it as a class is refused before it is
made (:func:`check_not_read`): ``cd DIR; cnnlab train --dataset folder:.`` made ``runs/`` there, then refused it
as an empty class folder; hidden folders (``.runs/``) are never read.

Cache. The converted arrays are stored in ``$CNNLAB_HOME/datasets/folder-<key>/images.npz``
(written atomically), where ``key`` hashes the folder's absolute path, where each class folder leads (a linked
one's target), every candidate file's relative path, size, modification time, inode and change time (``st_ctime``),
and the conversion version; any change to the folder (a link retargeted, two folders renamed crosswise, a file
replaced, one rewritten in place with its old time restored: ``cp -p``, ``unzip -o``) gives a new key and one new
conversion (the earlier conversion of that folder is then deleted), an unchanged folder is never converted twice.
Since every write, ``chmod`` or ``touch`` of a file sets its change time to now, and nothing can set it back, a
``chmod``/``touch`` alone also costs one conversion more.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from cnnlab.data.safefs import entry_kind, kind_of, list_dir, open_regular, read_bounded, reason, usual_fix
from cnnlab.data.sources import write_failure
from cnnlab.dataset_names import directory_of
from cnnlab.errors import CnnlabError, DataError, DataUnreadable, printable, shell_quoted
from cnnlab.fileio import atomic_write_bytes, atomic_write_text, expand_user, is_file, resolved
from cnnlab.text import BIDI_CONTROLS, INVISIBLE, reads_as
from cnnlab.imageio import BadImageError, ResourceError, is_short_of_resources, open_image, short_of, suffixes_for

#: The Pillow formats a folder dataset decodes, and the file suffixes it takes as candidates for them
#: (fewer than ``cnnlab.imageio.IMAGE_SUFFIXES``, which predict scans for: no GIF or WebP here).
PIL_FORMATS = ("PNG", "JPEG", "BMP")
FOLDER_SUFFIXES = suffixes_for(PIL_FORMATS)
SIZE = 28
SPLIT_SEED = 0
TEST_FRACTION_DENOMINATOR = 6  # 1/6 held out, MNIST's 10,000 of 70,000 rounded
#: Bump when conversion or splitting changes, so that old caches are not reused.
CONVERT_VERSION = 1
#: At most this many unreadable files are named in the warning; the rest go to ``skipped.txt``.
WARN_LIST_MAX = 50
CACHE_FILE = "images.npz"
#: What reading a damaged images.npz raises (a flipped byte in a deflated array: zlib.error, or a bad CRC). One that
#: cannot be read now (an input/output error) is no damage: :func:`read_cache` raises :class:`DataUnreadable` for it.
DAMAGED = (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, zlib.error)
#: Larger image files are skipped as unreadable, unread: a 28x28 digit never needs this much.
MAX_IMAGE_FILE_BYTES = 64 << 20

Log = Callable[[str], None]


@dataclass
class FolderData:
    """Both splits of a converted image folder: images (N, 28, 28) uint8, labels (N,) int64."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]
    cache_dir: Path
    #: ``"relative/path: reason"`` for every file that could not be read.
    skipped: list[str] = field(default_factory=list)
    #: Whether this call converted the images (False: read from the cache).
    converted: bool = False
    #: Whether the conversion is in the cache (False: it could not be written).
    cached: bool = True


@dataclass
class _Layout:
    classes: tuple[str, ...]
    #: (relative posix path, class index, split or None when the split is to be drawn)
    entries: list[tuple[str, int, str | None]]
    ignored: int
    #: (size, mtime_ns, inode, ctime_ns) of each entry's file, by relative path, from the scan
    stats: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    #: ``"relative/path: reason"`` for candidates that are no regular file or cannot be looked at
    unreadable: list[str] = field(default_factory=list)
    #: folders beside train/ and test/ (a val/), which are not read
    unread: list[str] = field(default_factory=list)
    #: every folder the scan walked, by identity (device, inode): the class folder it was read into and its path as
    #: the walk first reached it, both relative to the dataset folder (:func:`_first_visit`)
    seen: dict[tuple[int, int], tuple[str, str]] = field(default_factory=dict)
    #: where each class folder leads (its real path: a linked one's target), by relative path
    leads: dict[str, str] = field(default_factory=dict)


def _walk_error(root: Path, where: str):
    """os.walk's ``onerror``: a folder that cannot be listed is an error naming it, never a silent gap."""
    def onerror(err: OSError) -> None:
        rel = Path(err.filename).relative_to(root).as_posix() if err.filename else "a folder"
        raise DataError(f"{where}: folder {rel} cannot be read ({reason(err)}); {usual_fix(err)}, "
                        "or move it out of the dataset folder")
    return onerror


def _image_files(root: Path, directory: Path, layout: _Layout) -> int:
    """Candidate images under ``directory`` (recursively, sorted, hidden entries skipped, linked sub-folders followed
    as linked class folders are: :func:`_walk_class`), as paths relative to ``root``; those that are no regular file
    go to ``layout.unreadable``, the others' (size, mtime, inode, ctime) to ``layout.stats``. Returns how many candidates
    there were and adds other files to ``ignored``; a sub-folder that is a broken symbolic link is refused, as a class
    folder is."""
    count = 0
    where = f"folder:{root}"
    layout.leads[directory.relative_to(root).as_posix()] = os.path.realpath(directory)
    for current, files in _walk_class(root, directory, layout.seen):
        for name in sorted(files):
            if name.startswith("."):
                continue
            if not name.lower().endswith(FOLDER_SUFFIXES):
                if (broken := _broken_link(current / name)) is not None:
                    rel = (current / name).relative_to(root).as_posix()
                    raise DataError(f"{where}: folder {rel} is a broken symbolic link (to {printable(broken)}), so its "
                                    "images would be left out without a word; mount or fix its target, or remove the "
                                    "link")
                layout.ignored += 1
                continue
            path = current / name
            rel = path.relative_to(root).as_posix()
            count += 1
            try:
                st = os.stat(path)
            except OSError as err:  # a symlink loop, a dangling link, a file gone since the listing
                layout.unreadable.append(f"{rel}: cannot be read ({reason(err)})")
                continue
            if not stat.S_ISREG(st.st_mode):
                layout.unreadable.append(f"{rel}: is {kind_of(st.st_mode)}, not an image file")
                continue
            layout.stats[rel] = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
            layout.entries.append((rel, -1, None))  # class and split are filled in by scan()
    return count


def _walk_class(root: Path, class_dir: Path, seen: dict) -> Iterator[tuple[Path, list[str]]]:
    """The folders a load reads of the class folder ``class_dir`` (itself, then those below it, linked ones followed:
    :func:`_walks`), each with the names of its files. ``seen``: every folder the scan of the whole dataset has
    walked (:func:`_first_visit`), so that no folder is read into two classes."""
    for current, _, files in _walks(root, class_dir, seen):
        yield current, files


def _walks(root: Path, class_dir: Path, seen: dict) -> Iterator[tuple[Path, Path, list[str]]]:
    """:func:`_walk_class`'s folders, each with its real path: in ``os.walk``'s order (top-down, depth first, the
    sub-folders of each as :func:`_subfolders` keeps them), on a stack of its own rather than ``os.walk``'s recursion,
    which Python 3.11's is (a sub-folder 1,000 levels deep was a ``RecursionError`` traceback), and at most
    :data:`MAX_FOLDER_DEPTH` folders below the class folder (:func:`_too_deep`). A folder's real path is its parent's
    joined with its name unless it is a link: ``os.path.realpath`` of each looked at every folder above it, a cost
    that grew with the square of the depth (42 s at 1,000 levels)."""
    onerror = _walk_error(root, f"folder:{root}")
    _first_visit(root, class_dir.relative_to(root).as_posix(), class_dir, seen)
    stack = [(class_dir, Path(os.path.realpath(class_dir)), 0)]
    while stack:
        current, real, depth = stack.pop()
        listed = _listing(current, onerror)
        if listed is None:
            continue
        names, files, links = listed
        dirs = _subfolders(root, class_dir, current, names, seen, links)
        if dirs and depth >= MAX_FOLDER_DEPTH:
            raise _too_deep(root, class_dir, current / dirs[0])
        yield current, real, files
        for name in reversed(dirs):  # popped in sorted order
            where = Path(os.path.realpath(current / name)) if name in links else real / name
            stack.append((current / name, where, depth + 1))


def _listing(folder: Path, onerror: Callable[[OSError], None]) -> tuple[list[str], list[str], set[str]] | None:
    """The names of ``folder``'s sub-folders (links to folders included) and of its other entries, as ``os.walk``
    splits them, and those of the sub-folders that are links (from the listing: no path looked up again); None,
    after ``onerror``, when it cannot be listed."""
    dirs, files, links = [], [], set()
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    is_dir = entry.is_dir()
                except OSError:  # a link that cannot be followed: as os.walk, not a folder
                    is_dir = False
                (dirs if is_dir else files).append(entry.name)
                if is_dir and entry.is_symlink():
                    links.add(entry.name)
    except OSError as err:
        onerror(err)
        return None
    return dirs, files, links


#: How many folders below its class folder a load walks: deeper is refused (:func:`_too_deep`), never read for
#: minutes or ended in a traceback. No layout of images needs it; a generated tree or a backup of itself may.
MAX_FOLDER_DEPTH = 100


def _too_deep(root: Path, class_dir: Path, path: Path) -> DataError:
    """The refusal of ``path``, a folder :data:`MAX_FOLDER_DEPTH` + 1 levels below the class folder ``class_dir``,
    naming its first levels and its last one (its whole path is hundreds of characters)."""
    parts = path.relative_to(root).parts
    klass = len(class_dir.relative_to(root).parts)
    shown = "/".join((*parts[:klass + 3], "...", parts[-1]))
    return DataError(f"folder:{root}: folder {shown} is more than {MAX_FOLDER_DEPTH} folders deep below its class "
                     f"folder {'/'.join(parts[:klass])}, which no image needs; move its images up, or move it out "
                     "of the dataset folder")


def _folder_id(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _first_visit(root: Path, klass: str, path: Path, seen: dict) -> bool:
    """Whether the walk of class folder ``klass`` (relative to ``root``) is the first to reach the folder ``path``
    (by its identity, however it is reached: a link, a loop, a second link to it), which ``seen`` then records; a
    folder ``seen`` has from another class (or the other split) is refused in one line naming both paths: its images
    would be read into both (``DATA/a/batch`` and ``DATA/b/batch`` links to one folder; ``DATA/c`` a link to
    ``DATA/a``)."""
    try:
        folder = _folder_id(path)
    except OSError:  # gone since the listing: the walk's own error names what cannot be listed
        return False
    rel = path.relative_to(root).as_posix()
    if folder not in seen:
        seen[folder] = (klass, rel)
        return True
    first_class, first = seen[folder]
    if first_class == klass:
        return False
    links = [link for link in (_link_on_way(root, first), _link_on_way(root, rel)) if link]
    fix = f"remove the link {' or '.join(links)}" if links else "remove one of them"
    raise DataError(f"folder:{root}: folders {first} and {rel} are one folder ({os.path.realpath(path)}), so its "
                    f"images would be read twice, into {first_class}/ and into {klass}/; {fix}")


def _link_on_way(root: Path, rel: str) -> str | None:
    """The first symbolic link on the way from ``root`` to its folder ``rel`` (relative), or None."""
    parts = Path(rel).parts
    return next(("/".join(parts[:i]) for i in range(1, len(parts) + 1) if os.path.islink(root.joinpath(*parts[:i]))),
                None)


def _subfolders(root: Path, class_dir: Path, current: Path, names: list[str], seen: dict, links: set[str]) -> list[str]:
    """The sub-folders of ``current`` (below ``class_dir``) to walk into, sorted, hidden ones left out. A linked one is
    followed, as a linked class folder is (its images were left out without a word), unless the walk of this class
    has been there (``seen``: a loop, or a second way into one folder, read once; one another class's walk has been
    in is refused, :func:`_first_visit`); one that leads to the dataset folder, a folder above it, or one of its
    folders outside this class folder is refused: its images would be counted twice, in two classes or in both
    splits. ``links``: the names that are links (:func:`_listing`)."""
    keep, klass = [], class_dir.relative_to(root).as_posix()
    for name in sorted(n for n in names if not n.startswith(".")):
        path = current / name
        if name in links:
            real, top = Path(os.path.realpath(path)), Path(os.path.realpath(root))
            if top.is_relative_to(real) or (real.is_relative_to(top)
                                            and not real.is_relative_to(os.path.realpath(class_dir))):
                raise DataError(f"folder:{root}: folder {path.relative_to(root).as_posix()} is a link to "
                                f"{'the dataset folder or a folder above it' if top.is_relative_to(real) else real}, "
                                "so its images would be counted twice; remove the link")
        if _first_visit(root, klass, path, seen):
            keep.append(name)
    return keep


def _class_dirs(directory: Path, where: str, classes: bool = True) -> tuple[list[Path], int]:
    """Class folders of ``directory`` (sorted by name), and how many loose files were ignored. Where its folders are
    classes (``classes``; not beside train/ and test/), a broken symbolic link among them is refused
    (:func:`_broken_link`): it was a class (on a disk not mounted now), never a loose file to ignore."""
    subdirs, loose = [], 0
    for entry in list_dir(directory):
        if entry.name.startswith("."):
            continue
        path = directory / entry.name
        try:
            is_dir = entry.is_dir()
        except OSError as err:  # a symlink loop where a class folder might be
            raise DataError(f"{where}: {path} cannot be read ({reason(err)}); {usual_fix(err)}") from None
        if not is_dir and classes and (broken := _broken_link(path)) is not None:
            raise DataError(f"{where}: class folder {entry.name} is a broken symbolic link (to {printable(broken)}), "
                            "so its images would be left out without a word; mount or fix its target, or remove the "
                            "link")
        if not is_dir:
            loose += 1
        elif (problem := name_problem(entry.name)) is not None:
            raise DataError(f"{where}: class folder {problem}")
        elif Path(os.path.realpath(directory)).is_relative_to(os.path.realpath(path)):
            raise DataError(f"{where}: class folder {entry.name} is a link to the dataset folder itself or a folder "
                            "above it, so its images would be counted twice; remove the link")
        else:
            subdirs.append(path)
    _refuse_lookalikes([d.name for d in subdirs], where)
    return subdirs, loose


def _broken_link(path: Path) -> str | None:
    """Where ``path``, a symbolic link that leads nowhere (its target missing: a disk not mounted, a folder moved),
    leads; None for anything else, and for a link named like an image (a file, skipped and named as unreadable images
    are, or a loose one, ignored as those are)."""
    if path.name.lower().endswith(FOLDER_SUFFIXES) or not os.path.islink(path):
        return None
    try:
        os.stat(path)
    except FileNotFoundError:
        try:
            return os.readlink(path)
        except OSError:  # gone since: as a missing target
            return "a target that is gone"
    except OSError:  # a loop, or no permission: the caller's is_dir() says those
        return None
    return None


def name_problem(name: str) -> str | None:
    """Why a folder's ``name`` cannot be a class name, as the words after "class folder" up to the fix; None when it
    can. Refused: a control character or a line break (a message quoting it breaks), a name that is not UTF-8 (its
    bytes read as surrogates, which JSON keeps only as unpaired-surrogate escapes) and an invisible character
    (:data:`cnnlab.text.INVISIBLE`: the name would look like another). Accepted: the rest, ZWNJ and ZWJ (Persian
    words, emoji families), variation selectors, other spaces (a look-alike of another folder's name is refused by
    :func:`_refuse_lookalikes`), private-use characters and those newer than Python's Unicode tables."""
    for ch in name:
        category, code = unicodedata.category(ch), ord(ch)
        if category in ("Cc", "Zl", "Zp"):
            what = ascii(ch)[1:-1] if category == "Cc" else f"U+{code:04X} ({unicodedata.name(ch)})"
            return (f"{name!r} has a {'control character' if category == 'Cc' else 'line break'}, {what}, in its "
                    "name, and class names end up in messages, plots and run records; rename it")
        if category == "Cs":
            return (f"{shell_quoted(name)} is not UTF-8 ({_first_bad_byte(name)}): run records and exported nets "
                    f"could keep it only as {ascii(name)}, with an unpaired surrogate that other programs refuse or "
                    "show as '\ufffd'; rename it in UTF-8")
        if code in INVISIBLE:
            does = (", a bidirectional control: in every message, table and plot the characters around it could show "
                    "in another order than they have" if code in BIDI_CONTROLS else
                    f": it would look like {reads_as(name, skip=('ends',))!r} in every message, table and plot")
            what = f"U+{code:04X} ({unicodedata.name(ch, 'no name')})"
            return f"{name!r} has an invisible {what} in its name{does}; rename it"
    return None


def _first_bad_byte(name: str) -> str:
    """Where a folder's name read from disk (its undecodable bytes as surrogates) stops being UTF-8, and what it
    reads as in Latin-1 (the usual other encoding) where that is printable."""
    try:
        raw = os.fsencode(name)
        raw.decode("utf-8")
    except UnicodeEncodeError:  # a surrogate that is not a byte (not from the file system)
        return "it holds a lone surrogate"
    except UnicodeDecodeError as err:
        latin = raw.decode("latin-1")
        hint = f"; in Latin-1 it reads {latin!r}" if latin.isprintable() else ""
        return f"byte 0x{raw[err.start]:02X} at offset {err.start} of its name{hint}"
    return "the file system's encoding is not UTF-8"


def same_name(name: str) -> str:
    """What a class folder's name reads as (:func:`cnnlab.text.reads_as`): Unicode-normalised (NFC), every space as
    ' ', without the white space around it. Two folders of one such name (an 'é' copied from macOS, written
    decomposed, NFD, beside a Linux one; 'x' and 'x '; 'a b' and 'a<no-break space>b') would be two classes that
    look the same in every message, table and plot."""
    return reads_as(name)


def _shown(name: str) -> str:
    """A class folder's name quoted, with its code points spelled out where repr shows a character as it is (two that
    look the same)."""
    return repr(name) if repr(name) == ascii(name) else f"{name!r} ({ascii(name)})"


def _odd_space(text: str) -> str:
    """The first space in ``text`` that is not ' ', as its code point and name."""
    ch = next((c for c in text if unicodedata.category(c) == "Zs" and c != " "), " ")
    return f"U+{ord(ch):04X} ({unicodedata.name(ch)})"


def _refuse_lookalikes(names: list[str], where: str) -> None:
    """Class folders whose names are one name once read as :func:`same_name` does are refused in one line naming both
    (they became two classes without a word: evaluate printed two 'é' rows, predict 'é 33.0% é 16.8%')."""
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(same_name(name), name)
        if other == name:
            continue
        # each way of reading that, left out, keeps them two names, is a way they differ
        ways = {"form": "their Unicode form (one is decomposed, NFD, as macOS writes names)",
                "spaces": f"the kind of space in them ({_odd_space(name + other)} for ' ')",
                "ends": "the white space around one"}
        how = [words for step, words in ways.items() if reads_as(name, (step,)) != reads_as(other, (step,))]
        raise DataError(f"{where}: class folders {_shown(other)} and {_shown(name)} read as one name, differing only "
                        f"in {' and in '.join(how)}: they would be two classes that look the same in every message, "
                        "table and plot; rename one of them")


#: The split folders a folder dataset reads (the first name of each is the usual one; ``training``/``testing``
#: is how MNIST is shared as PNGs), and other top-level names that are splits, never classes.
SPLIT_FOLDERS = {"train": ("train", "training"), "test": ("test", "testing")}
SPLIT_LIKE = ("train", "training", "test", "testing", "val", "valid", "validation")
#: The layouts a folder dataset reads, as its refusals name them.
LAYOUTS = ("cnnlab reads DIR/train/CLASS/<image> + DIR/test/CLASS/<image> (training/ and testing/ are taken as "
           "train/ and test/), or DIR/CLASS/<image> with an automatic split")


def _split_roots(root: Path, where: str) -> list[tuple[str | None, Path]]:
    """(split, folder) to read: train/ and test/ (or training/ and testing/), or the folder itself."""
    found = {}
    for split, names in SPLIT_FOLDERS.items():
        present = [n for n in names if entry_kind(root / n) == "a directory"]
        if len(present) > 1:
            raise DataError(f"{where}: both {present[0]}/ and {present[1]}/ are there, two {split} splits; {LAYOUTS}: "
                            f"merge them into one {split}/ folder")
        found[split] = present[0] if present else None
    if found["train"] and found["test"]:
        return [(split, root / found[split]) for split in SPLIT_FOLDERS]
    return [(None, root)]


def split_is_drawn(directory: str | Path) -> bool:
    """Whether the folder's test split is drawn (no train/ and test/ folders): adding or removing images then draws
    it again, and another version's test images may be an earlier version's training images."""
    root = expand_user(directory)
    try:
        return _split_roots(root, f"folder:{root}")[0][0] is None
    except DataError:
        return True


def class_folder_of(directory: str | Path, path: str | Path) -> str | None:
    """The class folder (relative to ``directory``) that a load of ``folder:DIRECTORY`` would take the files written
    under ``path`` for: ``runs`` for ``DIR/runs/r1`` (an empty class while that folder holds no image, a class of its
    figures after), ``train/runs`` in the train/ + test/ layout, ``c`` for ``DIR/c/rep`` where ``DIR/c`` is a linked
    class folder, also for its target's real path, ``train/rep`` for ``BIG/train/rep`` where ``DIR/train`` links to
    ``BIG/train``, ``b`` for ``DIR/.inputs`` where that hidden name links to ``DIR/b``: the path as given
    (:func:`_given_parts`), else its real path (:func:`_real_parts`). None where a load reads nothing of ``path``:
    outside ``directory`` and every folder it reads, ``directory`` itself or a split folder (loose files are
    ignored), under a hidden folder that leads to no folder a load reads, beside train/ and test/ (not read, as the
    load says), or where ``directory`` is no folder (the load says what it is)."""
    root = expand_user(directory)
    try:
        if entry_kind(root) != "a directory":
            return None
        root = resolved(root)
        splits = {folder.name for split, folder in _split_roots(root, f"folder:{root}") if split is not None}
        given = _class_of(_given_parts(root, expand_user(path)), splits)
        return given if given is not None else _class_of(_real_parts(root, expand_user(path)), splits)
    except CnnlabError:  # a loop of links, two train splits: the load refuses the folder, whatever is written where
        return None


def _class_of(parts: tuple[str, ...] | None, splits: set[str]) -> str | None:
    """The class folder that a path of these ``parts`` below the dataset folder is in (:func:`class_folder_of`)."""
    if parts is None or any(part.startswith(".") for part in parts):
        return None
    if splits:
        return "/".join(parts[:2]) if len(parts) > 1 and parts[0] in splits else None
    return parts[0] if parts else None


def _given_parts(root: Path, path: Path) -> tuple[str, ...] | None:
    """The parts of ``path`` as given below its longest prefix that is the dataset folder ``root`` (resolved), as its
    loads reach them through the links they follow (``DATA/c/rep`` where ``DATA/c`` links to ``ELSE/c``:
    ``c/rep``); None where no prefix is ``root``, or a ``..`` after it (it may leave a link: the real path says
    where)."""
    given = Path(path).absolute().parts
    below = next((given[i:] for i in range(len(given), 0, -1) if resolved(Path(*given[:i])) == root), None)
    return below if below is not None and ".." not in below else None


def _real_parts(root: Path, path: Path) -> tuple[str, ...] | None:
    """The parts of ``path``'s real path below the dataset folder ``root`` as its loads reach them: below the
    deepest folder a load reads (:func:`_read_folders`) that it lies in, by real paths, links followed both ways
    (``ELSE/c/rep`` where ``DATA/c`` links to ``ELSE/c``: ``c/rep``; ``DATA/.inputs/rep`` where ``.inputs`` links
    to ``b``: ``b/rep``; ``BIG/train/a`` where ``DATA/train`` links to ``BIG/train``: ``train/a``). A dataset whose
    walk is refused (two classes reading one folder) is taken as it lies below ``root``. None where no load reads
    it."""
    target = resolved(path)
    try:
        folders = _read_folders(root)
    except CnnlabError:  # the load refuses the dataset: its folder as it lies
        folders = {root: ()}
    folder = next((f for f in (target, *target.parents) if f in folders), None)
    return None if folder is None else folders[folder] + target.relative_to(folder).parts


def _read_folders(root: Path) -> dict[Path, tuple[str, ...]]:
    """Every folder a load of the dataset folder ``root`` reads, by its real path (links followed), with its parts
    below ``root`` as the load reaches it: ``root`` itself (``()``), train/ and test/ where they are the splits, each
    class folder and every folder walked below it (:func:`_walks`, as the load walks them)."""
    where, folders, seen = f"folder:{root}", {root: ()}, {}
    for split, split_root in _split_roots(root, where):
        if split is not None:
            folders[resolved(split_root)] = (split_root.name,)
        for class_dir in _class_dirs(split_root, where, classes=True)[0]:
            for current, real, _ in _walks(root, class_dir, seen):
                folders.setdefault(real, current.relative_to(root).parts)
    return folders


def read_as_class(dataset: str | None, folder: str | Path) -> tuple[str, str] | None:
    """``(DIR, CLASS)`` where a load of the ``folder:DIR`` dataset ``dataset`` would read the files written into
    ``folder`` as images of its class folder ``CLASS`` (:func:`class_folder_of`); None for any other dataset, or a
    folder no load reads (outside ``DIR``, a hidden one)."""
    got = directory_of(dataset) if isinstance(dataset, str) else None
    if got is None or got[0] != "folder" or (inside := class_folder_of(got[1], folder)) is None:
        return None
    return got[1], inside


def check_not_read(dataset: str | None, folder: str | Path, named: str) -> None:
    """Refuse (one line) to write a command's results into ``folder`` (``named``: how the line names it, ``--out r1``)
    where the ``folder:`` dataset it reads would read them (:func:`class_folder_of`): ``cd DATA; cnnlab train --dataset
    folder:.`` made runs/ there, then refused it as an empty class folder, every time; and the figures a run writes
    there would be a class of the next load. Other datasets, and folders it never reads, pass."""
    if (read := read_as_class(dataset, folder)) is None:
        return
    root, inside = resolved(expand_user(read[0])), read[1]
    raise DataError(f"{named} is inside folder:{root}, whose loads would take {inside}/ for a class folder (empty at "
                    f"first, then holding the figures written there); give --out a folder outside {root}, or a hidden "
                    "one (--out .runs/NAME), which a folder: dataset never reads")


def is_split_name(name: str) -> bool:
    """Whether a folder's name says it is a split: one of its words (``mnist_train``, ``Training``, ``val-set``,
    ``mnistTest``) is in :data:`SPLIT_LIKE`; ``oval``, ``trainers`` or ``protest`` are no such word."""
    words = re.split(r"[^a-z0-9]+", re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).lower())
    return any(w in SPLIT_LIKE for w in words)


def _inside(layout: _Layout) -> dict[str, set[str]]:
    """For each top-level folder, the names of the folders right inside it that hold its images ("" for images of
    its own)."""
    inside: dict[str, set[str]] = {c: set() for c in layout.classes}
    for rel, _, _ in layout.entries:
        parts = rel.split("/")
        inside[parts[0]].add(parts[1] if len(parts) > 2 else "")
    return inside


def _refuse_splits_as_classes(where: str, layout: _Layout) -> None:
    """Top-level folders named as splits are not classes (a net that learns "train vs val", 76.92%) where they are
    splits: a split-named folder holding class folders rather than images (a lone train/, val/ beside train/), or
    every top-level folder split-named (mnist_train/ + mnist_test/ holding images). A class of images that happens
    to be named so beside others (bus/, car/, train/) is a class."""
    inside = _inside(layout)
    splits = [c for c in layout.classes if is_split_name(c)]
    of_folders = [c for c in splits if "" not in inside[c]]
    if not splits or not (of_folders or len(splits) == len(layout.classes)):
        return
    trains = [n for n in splits if re.search("train", n, re.I)]
    tests = [n for n in splits if re.search("test", n, re.I)]
    if not of_folders:
        fix = ("they hold images, not class folders: make DIR/train/CLASS/ and DIR/test/CLASS/ (a folder per class in "
               "each), or put class folders directly in DIR for an automatic split")
    elif trains and not tests:
        fix = (f"rename {', '.join(n + '/' for n in splits if n not in trains)} to test/" if len(splits) > 1
               else f"add a test/ folder of class folders beside it, or pass folder:DIR/{splits[0]} for an automatic "
               "split")
    elif tests and not trains:
        fix = f"rename {', '.join(n + '/' for n in splits if n not in tests)} to train/" if len(splits) > 1 \
            else "add a train/ folder of class folders beside it"
    else:
        fix = "rename the folders to train/ and test/ (lower case), and move any other split (val/) out or into them"
    raise DataError(f"{where}: top-level folder(s) {', '.join(n + '/' for n in splits)} are splits, not classes; "
                    f"{LAYOUTS}: {fix}")


def _refuse_wrapper(where: str, layout: _Layout) -> None:
    """One top-level folder that holds folders, not images: the dataset one level down or more (DIR/mnist_png/
    {training,testing}, DIR/w1/w2/{a,b}): named by the path to pass, not "one class folder"."""
    if len(layout.classes) != 1 or "" in _inside(layout)[layout.classes[0]]:
        return
    folders = [rel.split("/")[:-1] for rel, _, _ in layout.entries]
    prefix = []
    for level in zip(*folders):
        if len(set(level)) > 1:
            break
        prefix.append(level[0])
    prefix = prefix[:max(1, min(len(f) for f in folders) - 1)]  # the folder above the class folders
    raise DataError(f"{where}: the one top-level folder {layout.classes[0]}/ holds folders, not images; {LAYOUTS}: "
                    f"pass folder:{where.removeprefix('folder:')}/{'/'.join(prefix)}")


def _unread_beside_splits(root: Path, where: str, split_roots: list) -> list[str]:
    """Folders beside train/ and test/ (a val/): not read, which the loader says."""
    if split_roots[0][0] is None:
        return []
    used = {p.name for _, p in split_roots}
    return [d.name for d in _class_dirs(root, where, classes=False)[0] if d.name not in used]


def scan(root: Path) -> _Layout:
    """What ``root`` holds: classes and candidate images, with their split when the folder fixes it."""
    where = f"folder:{root}"
    split_roots = _split_roots(root, where)
    layout = _Layout((), [], 0)
    for split, split_root in split_roots:
        dirs, loose = _class_dirs(split_root, where)
        layout.ignored += loose
        names = tuple(d.name for d in dirs)
        if split in (None, "train"):
            if not dirs:
                raise DataError(
                    f"{where}: no class subfolders in {split_root}; lay images out as "
                    f"{split_root}/<class>/<image>.png (PNG, JPEG or BMP)"
                )
            layout.classes = names
        else:
            extra = sorted(set(names) - set(layout.classes))
            if extra:
                known = {same_name(c): c for c in layout.classes}
                alike = [f"{_shown(n)} is {_shown(known[same_name(n)])} written another way" for n in extra
                         if same_name(n) in known]
                raise DataError(
                    f"{where}: {split_root.name}/ has class folders that {split_roots[0][1].name}/ lacks ({', '.join(extra)}"
                    f"{'; ' + ', '.join(alike) if alike else ''}); give train/ and test/ the same class folders"
                )
        for class_dir in dirs:
            first = len(layout.entries)
            if not _image_files(root, class_dir, layout):
                raise DataError(
                    f"{where}: class folder {class_dir.relative_to(root).as_posix()} has no PNG, JPEG or BMP "
                    "images; add images or remove the folder"
                )
            label = layout.classes.index(class_dir.name)
            layout.entries[first:] = [(rel, label, split) for rel, _, _ in layout.entries[first:]]
    if split_roots[0][0] is None:
        _refuse_splits_as_classes(where, layout)
        _refuse_wrapper(where, layout)
    layout.unread = _unread_beside_splits(root, where, split_roots)
    if len(layout.classes) == 1:  # trained, it scores 100% by saying the one name it knows
        raise DataError(f"{where}: one class folder ({layout.classes[0]}); a classifier needs at least two: add a "
                        "folder of images for each other class")
    return layout


def cache_key(root: Path, layout: _Layout) -> str:
    """SHA-256 of the folder's path, where each class folder leads (its real path: a linked one's target), each
    candidate file's relative path, size, mtime, inode and ctime, and the conversion version: what decides whether a
    cached conversion is still this folder's. Where the folders lead and the inodes tell two class folders whose
    contents swapped (links retargeted, folders renamed crosswise) from the folders as they were, when the files'
    names, sizes and times are equal (BMPs unpacked from one archive): the cache kept the old labels. The ctime tells
    a file rewritten in place with its mtime restored (``cp -p``, ``unzip -o``: same inode, size and mtime) from the
    file as it was: every write or ``utime`` sets it, and no tool sets it back."""
    h = hashlib.sha256()
    h.update(json.dumps({"version": CONVERT_VERSION, "root": str(root), "size": SIZE, "split_seed": SPLIT_SEED,
                         "classes": layout.classes, "leads": layout.leads}).encode())
    for rel, label, split in layout.entries:
        size, mtime_ns, inode, ctime_ns = layout.stats[rel]
        h.update(json.dumps([rel, label, split, size, mtime_ns, inode, ctime_ns]).encode())
        h.update(b"\n")
    if layout.unreadable:  # only then, so that the keys of folders without such entries stay as they were
        h.update(json.dumps(layout.unreadable).encode())
    return h.hexdigest()


def convert_image(path: Path) -> np.ndarray:
    """One image file -> (28, 28) uint8 grayscale (see the module docstring for how); raises on a bad file."""
    try:  # a regular file of a bounded size only: never a FIFO, never gigabytes read into memory
        fh, st = open_regular(path, "an image file")
        with fh:
            if st.st_size > MAX_IMAGE_FILE_BYTES:
                raise ValueError(f"{st.st_size:,} bytes, larger than an image of a digit-sized dataset can be "
                                 f"(at most {MAX_IMAGE_FILE_BYTES:,}); shrink it")
            data = read_bounded(fh, MAX_IMAGE_FILE_BYTES, str(path))
    except DataError as err:
        if isinstance(err, DataUnreadable) and is_short_of_resources(err.cause):  # its open or a read: as below
            raise short_of(str(path), err.cause) from None
        raise ValueError(str(err).removeprefix(f"{path}: ")) from None
    except OSError as err:
        if is_short_of_resources(err):  # the machine ran short, not this file: no dataset built short of it
            raise short_of(str(path), err) from None
        raise ValueError(f"cannot be read ({reason(err)})") from None
    try:  # the same guarded opener as cnnlab predict: decoded in full, truncation and bombs refused
        opened = open_image(data, path.name, formats=PIL_FORMATS)
    except BadImageError as err:
        raise ValueError(err.reason or str(err)) from None
    with opened as im:
        out = gray_square(im)
    if out.shape != (SIZE, SIZE):
        raise ValueError(f"converted to shape {out.shape}, expected ({SIZE}, {SIZE})")
    return out


def gray_square(im: Image.Image) -> np.ndarray:
    """A decoded image as the dataset holds it: (28, 28) uint8 grayscale (16-bit scaled to 8 bits, luma, alpha
    dropped, LANCZOS-resized, not inverted). ``cnnlab predict`` prepares images this way for a run trained on
    an image folder, so that the net sees what it was trained on."""
    if im.mode.startswith("I"):  # 16/32-bit grayscale (e.g. 16-bit PNG): scale to 8 bits
        im = Image.fromarray(_eight_bits(im), mode="L")
    gray = im.convert("L")
    if gray.size != (SIZE, SIZE):
        gray = gray.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    return np.asarray(gray, dtype=np.uint8)


#: Pixels of a 16/32-bit image scaled to 8 bits at a time (:func:`_eight_bits`): a few MB of integers, never a copy
#: of the whole image as float64 (a 157 KB 9000x9000 16-bit scan took 2.3 GB, 26 bytes a pixel).
STRIP_PIXELS = 1 << 20


def _eight_bits(im: Image.Image) -> np.ndarray:
    """A 16/32-bit grayscale image (mode ``I;16*`` or ``I``) as uint8: ``round(v * 255 / top)`` clipped to 0..255,
    where ``top`` is 65535 for a 16-bit image or one whose largest value is over 255, else 255 (the values taken as
    8-bit already). In integers, a strip of rows at a time: the bits of ``np.rint(v * (255 / 65535))`` in float64, which
    it was (``v / 257`` is never halfway between two integers, so rounding it cannot go either way), in the memory of
    the 8-bit result and one strip, not four float64 copies of the image."""
    width, height = im.size
    top = 65535 if im.mode.startswith("I;16") or im.getextrema()[1] > 255 else 255
    out = np.empty((height, width), dtype=np.uint8)
    rows = max(1, STRIP_PIXELS // max(width, 1))
    for y in range(0, height, rows):
        v = np.asarray(im.crop((0, y, width, min(y + rows, height)))).astype(np.int64)
        if top == 65535:  # round(v / 257) = round(v * 255 / 65535), as floor((2v + 257) / 514), in place
            v *= 2
            v += 257
            v //= 514
        out[y:y + rows] = np.clip(v, 0, 255, out=v)
    return out


def _split_auto(paths_by_class: list[list[int]]) -> tuple[list[int], list[int]]:
    """Indices (into the readable images) for train and test, drawn per class (module docstring)."""
    train, test = [], []
    for label, idx in enumerate(paths_by_class):
        n = len(idx)
        n_test = max(n // TEST_FRACTION_DENOMINATOR, 1) if n >= 2 else 0
        order = np.random.default_rng([SPLIT_SEED, label]).permutation(n)
        held = set(order[:n_test].tolist())
        for j, i in enumerate(idx):
            (test if j in held else train).append(i)
    return sorted(train), sorted(test)


def _convert(root: Path, layout: _Layout, log: Log) -> tuple[dict[str, np.ndarray], list[str]]:
    where = f"folder:{root}"
    log(printable(f"{where}: converting {len(layout.entries):,} images to {SIZE}x{SIZE} grayscale (once; cached "
                  "after)"))
    # one array for every candidate, filled in place: memory is the images' once, not a list and its stack
    stack = np.empty((len(layout.entries), SIZE, SIZE), dtype=np.uint8)  # (N, 28, 28)
    labels, splits, skipped = [], [], list(layout.unreadable)
    for rel, label, split in layout.entries:
        try:
            stack[len(labels)] = convert_image(root / rel)
        except ResourceError:  # out of open files or memory: the dataset stops, not built without these images
            raise
        except Exception as err:  # any decoder failure: the file is reported, never used
            message = str(err).strip().splitlines()
            why = message[0] if message else type(err).__name__
            if type(err) is not ValueError:  # ours are plain ValueErrors with a full reason
                why = f"{type(err).__name__}: {why}"
            skipped.append(f"{rel}: {why}")
            continue
        labels.append(label)
        splits.append(split)
    readable = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(layout.classes))
    empty = [layout.classes[c] for c in range(len(layout.classes)) if readable[c] == 0]
    if empty:
        _warn_skipped(root, skipped, None, log)
        raise DataError(f"{where}: no readable image in class folder(s) {', '.join(empty)}; "
                        "replace the unreadable files or remove the folder(s)")
    if layout.entries and layout.entries[0][2] is None:
        by_class: list[list[int]] = [[] for _ in layout.classes]
        for i, label in enumerate(labels):
            by_class[label].append(i)
        train_idx, test_idx = _split_auto(by_class)
    else:
        train_idx = [i for i, s in enumerate(splits) if s == "train"]
        test_idx = [i for i, s in enumerate(splits) if s == "test"]
    if not test_idx or not train_idx:
        _warn_skipped(root, skipped, None, log)
        which = "test" if not test_idx else "train"
        raise DataError(f"{where}: the {which} split has no readable images; add images "
                        f"(at least two per class when the folder has no train/ and test/ subfolders)")
    stack = stack[:len(labels)]
    y = np.asarray(labels, dtype=np.int64)
    arrays = {
        "train_images": stack[train_idx], "train_labels": y[train_idx],
        "test_images": stack[test_idx], "test_labels": y[test_idx],
    }
    return arrays, skipped


def _warn_skipped(root: Path, skipped: list[str], cache: Path | None, log: Log) -> None:
    """The one warning that names every unreadable file (or the first ones and where the rest are)."""
    if not skipped:
        return
    shown = [printable(name) for name in skipped[:WARN_LIST_MAX]]  # a newline in a file's name: still one line each
    more = len(skipped) - len(shown)
    tail = f"\n  ... and {more} more (all listed in {printable(str(cache / 'skipped.txt'))})" if more and cache else (
        f"\n  ... and {more} more" if more else "")
    log(f"warning: folder:{printable(str(root))}: skipped {len(skipped)} unreadable image file(s), not used for "
        "training or testing; fix or delete them:\n  " + "\n  ".join(shown) + tail)


def _save(cache: Path, key: str, root: Path, classes: tuple[str, ...], arrays: dict, skipped: list[str]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(
        buf, key=np.array(key), root=np.array(str(root)), classes=np.array(classes, dtype=str),
        skipped=np.array(skipped, dtype=str), **arrays,
    )
    if skipped:
        atomic_write_text(cache / "skipped.txt", "\n".join(skipped) + "\n")
    atomic_write_bytes(cache / CACHE_FILE, buf.getvalue())


def read_cache(path: Path) -> bytes | None:
    """The bytes of the converted cache ``path``, read whole; None when no file is there. An OS error of its open or
    of a read (an input/output error, memory short) is a :class:`DataUnreadable` naming it: the cache may be whole,
    so it is neither called damaged nor converted again over. (Read by ``np.load`` itself, a read error became
    zipfile's "File is not a zip file", and the first read's "damaged ([Errno 5] ...)".)"""
    try:
        stream, st = open_regular(path, "the converted cache")
    except DataUnreadable:
        raise
    except DataError:  # nothing there (or no regular file): no cache, converted (and written) anew
        return None
    with stream:
        try:
            return read_bounded(stream, st.st_size, str(path))
        except DataUnreadable:
            raise
        except DataError as err:  # grew while read: not the file a conversion writes whole
            raise ValueError(str(err)) from None


def _load_cached(path: Path, key: str) -> FolderData | None:
    """The cached conversion, or None when it is absent or for other files; one of :data:`DAMAGED` when it is damaged,
    a :class:`DataUnreadable` when it cannot be read now (:func:`read_cache`)."""
    data = read_cache(path)
    if data is None:
        return None
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        if str(z["key"]) != key:
            return None
        arrays = {k: z[k] for k in ("train_images", "train_labels", "test_images", "test_labels")}
        classes = tuple(str(c) for c in z["classes"])
        skipped = [str(s) for s in z["skipped"]]
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if (x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (SIZE, SIZE) or y.dtype != np.int64
                or y.shape != (x.shape[0],) or (len(y) and (y.min() < 0 or y.max() >= len(classes)))):
            raise ValueError(f"{split} arrays have unexpected shapes or values")
    return FolderData(**arrays, classes=classes, cache_dir=path.parent, skipped=skipped)


def _remove_stale(root: Path, keep: Path, log: Log) -> None:
    """Delete earlier conversions of the same folder (it changed since): one cache per folder, not one per edit."""
    for other in keep.parent.glob("folder-*"):
        if other == keep or not is_file(other / CACHE_FILE, if_unknown=False):  # one not to be looked at: left alone
            continue
        try:
            with np.load(other / CACHE_FILE, allow_pickle=False) as z:
                same = str(z["root"]) == str(root)
        except DAMAGED:
            continue  # not ours to judge: leave it
        if same:
            shutil.rmtree(other, ignore_errors=True)
            log(printable(f"folder:{root}: removed the cache of its earlier contents ({other})"))


def _unmake(made: list[Path]) -> None:
    """Remove the cache folders this conversion made (``made``: outermost first) when its cache could not be
    written (a full disk): no empty ``folder-<key>/`` left behind; a folder something else wrote into stays."""
    if made:
        shutil.rmtree(made[-1], ignore_errors=True)  # the cache folder: only this conversion's files
    for path in reversed(made[:-1]):
        try:
            path.rmdir()
        except OSError:
            pass  # not empty, or gone: not ours alone to remove


def folder_cache_dir(key: str, home: Path) -> Path:
    return home / "datasets" / f"folder-{key[:16]}"


def load_image_folder(directory: str | Path, home: Path, log: Log) -> FolderData:
    """Converted, cached splits of the image folder ``directory`` (see the module docstring)."""
    root = expand_user(directory)
    try:
        kind = entry_kind(root)
    except DataError as err:
        raise DataError(f"folder:{err}") from None
    if kind != "a directory":
        what = "no such directory" if kind is None else f"is {'a file' if kind == 'file' else kind}, not a directory"
        raise DataError(f"folder:{root}: {what}; pass folder:DIR with one subfolder per class")
    root = resolved(root)
    layout = scan(root)
    if layout.ignored:
        log(printable(f"folder:{root}: ignored {layout.ignored} file(s) that are not PNG, JPEG or BMP or not in a "
                      "class folder"))
    if layout.unread:
        log(printable(f"folder:{root}: {', '.join(n + '/' for n in layout.unread)} beside train/ and test/ not read "
                      "(a folder dataset has those two splits; --val-split holds out validation images from train/)"))
    key = cache_key(root, layout)
    cache = folder_cache_dir(key, home)
    try:
        cached = _load_cached(cache / CACHE_FILE, key)
    except DataUnreadable as err:  # the cache may be whole: never converted again over it
        raise DataUnreadable(f"folder:{root}: converted cache {err}; or set CNNLAB_HOME to another directory (the "
                             "cache is left as it is)", err.path, err.cause) from None
    except DAMAGED as err:
        log(printable(f"folder:{root}: converted cache {cache / CACHE_FILE} is damaged ({err}); converting again"))
        cached = None
    if cached is not None:
        _warn_skipped(root, cached.skipped, cache, log)
        return cached
    arrays, skipped = _convert(root, layout, log)
    _warn_skipped(root, skipped, cache, log)
    saved = True
    made = [path for path in (cache.parent, cache) if not os.path.lexists(path)]
    try:
        _save(cache, key, root, layout.classes, arrays, skipped)
    except OSError as err:
        saved = False
        _unmake(made)
        what, fix = write_failure(err, cache, (CACHE_FILE, "skipped.txt"), retry="")
        log(printable(f"warning: folder:{root}: could not cache the converted images in {cache} ({what}); they will "
                      f"be converted again next time: {fix}"))
    else:
        _remove_stale(root, cache, log)
    return FolderData(**arrays, classes=layout.classes, cache_dir=cache, skipped=skipped, converted=True,
                      cached=saved)
