"""Reading xBD tiles: RGB arrays, header-only sizes, and cached thumbnails."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from core.io import atomic_file
from core.errors import ImageError


def _unreadable(path: Path, detail: str = "") -> ImageError:
    extra = f" ({detail})" if detail else ""
    return ImageError(f"{path} is not a readable PNG (truncated?){extra}. Re-download or remove it.")


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except FileNotFoundError:
        raise ImageError(f"Image {path} does not exist. Re-index the data folder "
                         "or check the path.") from None
    except IsADirectoryError:
        raise ImageError(f"{path} is a folder, not an image.") from None
    except UnidentifiedImageError:
        raise _unreadable(path, "not an image format PIL knows") from None
    except OSError as err:
        raise _unreadable(path, str(err)) from None


def load_rgb(path: Path | str) -> np.ndarray:
    """The image at `path` as a uint8 (height, width, 3) RGB array.

    Grey, palette and RGBA images are converted to RGB (alpha is dropped; 16-bit grey is
    scaled to 8 bits). Raises ImageError naming the file when it is missing, not an
    image, or truncated.
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

    Raises ImageError naming the file when it is missing or not an image.
    """
    path = Path(path)
    im = _open(path)
    with im:
        return tuple(im.size)  # type: ignore[return-value]


def thumbnail(path: Path | str, cache_dir: Path | str, size: int = 256) -> Path:
    """A PNG thumbnail of `path` fitting in `size` x `size` px, under `cache_dir`.

    The file is keyed by the image's absolute path, mtime_ns, byte size and `size`, so
    it is written once and reused until the image changes. Returns the thumbnail's path.
    Raises ImageError (naming the source file) when the image cannot be read.
    """
    from PIL import Image

    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError(f"Image {path} does not exist. Re-index the data folder "
                         "or check the path.") from None
    key = f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}|{int(size)}"
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:20]
    out_dir = Path(cache_dir) / "thumbnails"
    out = out_dir / f"{path.stem[:80]}-{digest}.png"
    if out.is_file():
        return out
    rgb = load_rgb(path)
    im = Image.fromarray(rgb)
    im.thumbnail((int(size), int(size)), Image.Resampling.LANCZOS)
    with atomic_file(out, "wb") as fh:  # a reader never sees half a thumbnail
        im.save(fh, format="PNG")
    return out
