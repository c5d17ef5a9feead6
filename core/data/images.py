"""Reading xBD tiles: RGB arrays, header-only sizes, full checks, and cached thumbnails.

Images with more pixels than PIL's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`)
are refused with an ImageError naming the file and its size, before anything is decoded.
"""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path

import numpy as np

from core.io import atomic_file
from core.errors import ImageError, SaveError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _unreadable(path: Path, detail: str = "") -> ImageError:
    extra = f" ({detail})" if detail else ""
    return ImageError(f"{path} is not a readable PNG (truncated?){extra}. Re-download or remove it.")


def _too_large(path: Path, size: tuple[int, int] | None, pixels: int | None = None) -> ImageError:
    from PIL import Image

    what = f"{size[0]}×{size[1]} px" if size else f"{pixels} px"
    return ImageError(f"{path} is {what}, larger than the {Image.MAX_IMAGE_PIXELS} px this app opens; "
                      "crop or downscale it (e.g. into 1024 px tiles).")


def _png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None when `path` is not a readable PNG
    (then PIL's own reading says what is wrong)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def _check_pixels(path: Path, size: tuple[int, int] | None) -> None:
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    if size is not None and limit and size[0] * size[1] > limit:
        raise _too_large(path, size)


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    size = _png_size(path)
    _check_pixels(path, size)  # PNGs: before PIL warns about (or refuses) a decompression bomb
    try:
        im = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:  # other formats
        found = re.search(r"\((\d+) pixels\)", str(err))
        raise _too_large(path, size, int(found.group(1)) if found else None) from None
    except FileNotFoundError:
        raise ImageError(f"Image {path} does not exist. Re-index the data folder "
                         "or check the path.") from None
    except IsADirectoryError:
        raise ImageError(f"{path} is a folder, not an image.") from None
    except UnidentifiedImageError:
        raise _unreadable(path, "not an image format PIL knows") from None
    except OSError as err:
        raise _unreadable(path, str(err)) from None
    try:
        _check_pixels(path, im.size)  # other formats past the limit (PIL only warned)
    except ImageError:
        im.close()
        raise
    return im


def load_rgb(path: Path | str) -> np.ndarray:
    """The image at `path` as a uint8 (height, width, 3) RGB array.

    Grey, palette and RGBA images are converted to RGB (alpha is dropped; 16-bit grey is
    scaled to 8 bits). Raises ImageError naming the file when it is missing, not an
    image, truncated, or larger than PIL's decompression-bomb limit.
    """
    path = Path(path)
    im = _open(path)
    try:
        with im:
            im.load()
            if im.mode == "RGB":
                arr = np.asarray(im)
            elif im.mode in ("I;16", "I;16B", "I;16L", "I"):
                grey = np.asarray(im).astype(np.float64)
                top = 65535.0 if im.mode.startswith("I;16") else max(float(grey.max()), 1.0)
                grey = np.clip(np.round(grey / top * 255.0), 0, 255).astype(np.uint8)
                arr = np.repeat(grey[:, :, None], 3, axis=2)
            else:
                arr = np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as err:
        raise _unreadable(path, str(err)) from None
    return np.ascontiguousarray(arr, dtype=np.uint8)


def image_size(path: Path | str) -> tuple[int, int]:
    """(width, height) of the image at `path`, read from its header only (no decode).

    Raises ImageError naming the file when it is missing, not an image or too large.
    """
    path = Path(path)
    im = _open(path)
    with im:
        return tuple(im.size)  # type: ignore[return-value]


def verify_image(path: Path | str) -> tuple[int, int]:
    """Decode the whole image at `path` (what `load_rgb` would do, without keeping the
    pixels) and return its (width, height). Raises ImageError naming the file when it is
    missing, not an image, truncated or too large; thread-safe (PIL decodes without
    holding the GIL, so a thread pool checks files in parallel)."""
    path = Path(path)
    im = _open(path)
    try:
        with im:
            im.load()
            return tuple(im.size)  # type: ignore[return-value]
    except (OSError, SyntaxError, ValueError) as err:
        raise _unreadable(path, str(err)) from None


def _thumbnail_file(path: Path, cache_dir: Path | str, size: int) -> Path:
    """Where the thumbnail of `path` at `size` lives under `cache_dir` (keyed by the image's
    absolute path, mtime_ns, byte size and `size`)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError(f"Image {path} does not exist. Re-index the data folder "
                         "or check the path.") from None
    key = f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}|{int(size)}"
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:20]
    return Path(cache_dir) / "thumbnails" / f"{path.stem[:80]}-{digest}.png"


def cached_thumbnail(path: Path | str, cache_dir: Path | str, size: int = 256) -> Path | None:
    """The thumbnail `thumbnail` would return, if it is already made; else None (never
    reads the image, so a page can show what is cached at once)."""
    try:
        out = _thumbnail_file(Path(path), cache_dir, size)
    except ImageError:
        return None
    return out if out.is_file() else None


def thumbnail(path: Path | str, cache_dir: Path | str, size: int = 256) -> Path:
    """A PNG thumbnail of `path` fitting in `size` x `size` px, under `cache_dir`.

    The file is keyed by the image's absolute path, mtime_ns, byte size and `size`, so
    it is written once and reused until the image changes. Returns the thumbnail's path.
    Raises ImageError (naming the source file) when the image cannot be read, SaveError
    when the thumbnail cannot be written (a full disk, a read-only work folder).
    """
    from PIL import Image

    path = Path(path)
    out = _thumbnail_file(path, cache_dir, size)
    out_dir = out.parent
    if out.is_file():
        return out
    rgb = load_rgb(path)
    im = Image.fromarray(rgb)
    im.thumbnail((int(size), int(size)), Image.Resampling.LANCZOS)
    try:
        with atomic_file(out, "wb") as fh:  # a reader never sees half a thumbnail
            im.save(fh, format="PNG")
    except OSError as err:  # a full disk, a read-only work folder
        raise SaveError.from_os(err, "a thumbnail", out_dir, "--work") from err
    return out
