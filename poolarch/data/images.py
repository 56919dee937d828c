"""Reading one image file with a clear error when it is not a readable image."""
from __future__ import annotations

from pathlib import Path

__all__ = ["read_image"]


def read_image(path: str | Path, mode: str | None = "RGB"):
    """The image at ``path`` as a loaded ``PIL.Image`` (converted to ``mode`` unless ``None``).

    Raises ``ValueError`` naming the file when it is missing, truncated or not an image, so a
    corrupt file in a dataset tree stops a run with one clear line instead of a PIL traceback."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode) if mode is not None else img.copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"image {str(path)!r} cannot be read ({reason}); remove or replace the file") from None
