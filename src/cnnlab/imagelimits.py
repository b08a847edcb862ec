"""Limits on untrusted images, importable without Pillow or numpy: the command line's parser shows them; and the
process's own limit on open files, which bounds how many images (and connections) it can hold.

The rest (enforcing them) is :mod:`cnnlab.imageio`.
"""

try:  # the open-file limit (Unix only)
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None

#: Default cap on an image's pixels, width x height as its header declares them (``--max-pixels`` of
#: ``cnnlab predict`` and ``cnnlab serve``): 4096x4096, a 12 MP phone photo with room to spare. It is checked
#: before anything is decoded. Decoding then peaks at up to 16 bytes a pixel (measured at the cap: a lossless
#: RGBA WebP ~263 MB, as libwebp and Pillow each hold a copy; RGBA PNG ~133 MB, progressive JPEG ~101 MB,
#: 8-bit gray or palette ~20-35 MB).
DEFAULT_MAX_PIXELS = 4096 * 4096
#: The smallest ``--max-pixels``: one 28x28 field.
MIN_MAX_PIXELS = 28 * 28
#: Room for metadata (EXIF, ICC profiles, text) on top of the pixels when a file's size is bounded.
METADATA_BYTES = 16 * 1024 * 1024
#: The most bytes a pixel takes in any accepted format, uncompressed (16-bit RGBA PNG): with
#: :data:`METADATA_BYTES` this bounds the size of a file that holds an image within the pixel cap.
MAX_BYTES_PER_PIXEL = 8


def max_file_bytes(max_pixels: int) -> int:
    """The largest file that can hold an image of at most ``max_pixels`` pixels (uncompressed 16-bit RGBA
    plus :data:`METADATA_BYTES`): a larger file is refused before it is read."""
    return MAX_BYTES_PER_PIXEL * max_pixels + METADATA_BYTES


def open_file_limit() -> int | None:
    """How many files this process may have open at once (``ulimit -n``), when the system says (None: no limit,
    or no way to read it)."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0] if resource else None
    except (OSError, ValueError):
        return None
    return soft if soft and soft > 0 and soft != resource.RLIM_INFINITY else None
