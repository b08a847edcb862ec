"""``cnnlab data fetch`` and ``cnnlab data info``: get datasets, and see where they live."""

# cnnlab.data imports torch (~1.3 s): it is imported inside the command functions, so that parsing,
# --help and argument errors answer without it.

from __future__ import annotations

import sys

from cnnlab.cli.common import add_dataset_name, add_json, path_arg, plural
from cnnlab.errors import CnnlabError, printable
from cnnlab.output import json_text


def register(sub) -> None:
    p = sub.add_parser("data", help="fetch datasets and show where they live")
    p.set_defaults(func=None, help_of=p)
    dsub = p.add_subparsers(dest="data_cmd", metavar="COMMAND", title="commands")
    f = dsub.add_parser("fetch", help="fetch, verify (MD5, now) and cache a dataset")
    add_dataset_name(f)
    f.add_argument("--data-dir", default=None, type=path_arg,
                   help="directory holding the dataset's files; tried before the cache and downloads, and "
                        "cached when they verify (default: none)")
    f.set_defaults(func=cmd_data_fetch)
    i = dsub.add_parser("info", help="where each dataset lives, sizes and checksum status")
    i.add_argument("--verify", action="store_true",
                   help="check every cached file's MD5 now, instead of trusting a fast copy whose manifest, file "
                        "sizes, modification times and CRC-32s match (default: off)")
    add_json(i, "the table")
    i.set_defaults(func=cmd_data_info)


def cmd_data_fetch(args) -> int:
    from cnnlab.data import load_dataset

    d = load_dataset(args.name, data_dir=args.data_dir, full_check=True, cache_data_dir=True, log=_note)
    checked = "verified by MD5" if ":" not in d.name else "read (no official checksums for local data)"
    print(printable(f"{d.name}: {len(d.train_labels):,} train and {plural(len(d.test_labels), 'test image')}, "
                    f"{checked}, from {d.source}"))  # a folder's name escaped (CNNLAB_HOME, --data-dir): one line
    # idx:/folder: data are used where they are (a converted folder's cache warns on its own); a catalog dataset,
    # from --data-dir too, must now be in the cache, what 'fetch' is for (a later command finds it offline)
    if ":" not in d.name:
        _require_cached(d.name)
    return 0


def _note(msg: str) -> None:
    """A line of the data's loading (``verified 4 files from data dir DIR; cached in DIR``), its names escaped; a
    message of several lines (a ``folder:`` dataset's unreadable files, one a line) keeps its line breaks, as
    ``train`` prints it, each line escaped (the whole message escaped printed its breaks as ``\\n``, one line)."""
    print("\n".join(printable(line) for line in str(msg).split("\n")), file=sys.stderr, flush=True)


def _require_cached(name: str) -> None:
    """The one-line error when a catalog dataset could not be cached: the data was good, but the next
    command will fetch it again."""
    from cnnlab.data.status import dataset_status

    row = next(r for r in dataset_status() if r["name"] == name)
    if not row["cached"]:
        raise CnnlabError(f"{name} is verified but could not be cached in {row['location']} (the warning above "
                          "says why); fix that (a writable folder with room for it, a file-size limit that lets the "
                          "files be written: ulimit -f, or CNNLAB_HOME set to another folder), and fetch again")


def cmd_data_info(args) -> int:
    from cnnlab.data.status import dataset_status

    rows = dataset_status(full_check=args.verify)
    if args.json:
        print(json_text(rows, indent=2))
        return 0
    for r in rows:
        print(printable(f"{r['name']}: {r['status']}  ({r['location']})"))  # the cache's folder escaped: one line
        if r.get("checked") and r["checked"] != "nothing cached":
            print(printable(f"  checked: {r['checked']}"))
        for f in r["files"]:
            print(printable(f"  {f['file']:<28} {f['bytes']:>12,} bytes  {f['status']}"))
    return 0
