"""Decoding one image file into 8-bit RGB, the way every job reads images (training, checks, predict, init-config).

PIL decodes; what it leaves to the caller is done here once: a pixel budget checked on the header before any pixel
is decoded (a 20000 x 20000 PNG is 1.2 GB of RGB, and PIL's own decompression-bomb limit raises an error type no
caller expects), EXIF orientation, transparency composited onto white (what a viewer shows), and 16-bit and 32-bit
modes scaled to 8 bits. PIL's ``convert("RGB")`` clips an ``I;16`` pixel at 255 instead of scaling it, so a 16-bit
grayscale PNG would come out almost all white.
"""

from __future__ import annotations

import contextlib
import warnings

from saccader.errors import UserError

__all__ = ["MAX_PIXELS", "ImageError", "open_checked", "open_image", "to_rgb"]

# 8000 x 8000: four times a 24-megapixel photo, 192 MB as RGB; larger is a scan or a mistake, not a photo to classify
MAX_PIXELS = 64_000_000


class ImageError(UserError):
    """An image file that cannot be decoded (or is over the pixel budget); the message names the file."""


def _over_budget(path, pixels: str, max_pixels: int) -> ImageError:
    return ImageError(f"image {path} is {pixels}, over the budget of {max_pixels:,} pixels",
                      "downscale it (e.g. to 4000 px on its longer side)")


@contextlib.contextmanager
def open_checked(path, max_pixels: int = MAX_PIXELS):
    """``PIL.Image.open(path)`` once its header shows 1 to ``max_pixels`` pixels (nothing decoded yet), else
    ``ImageError``; PIL's own decompression-bomb limit is answered the same way."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own budget decides
            img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise _over_budget(path, str(exc).split("(", 1)[-1].split(")", 1)[0], max_pixels) from None
    with img:
        width, height = img.size
        if width < 1 or height < 1:
            raise ImageError(f"image {path} has no pixels ({width} x {height})", "remove or replace the file")
        if width * height > max_pixels:
            raise _over_budget(path, f"{width} x {height} = {width * height:,} pixels", max_pixels)
        yield img


def to_rgb(img):
    """``img`` (any PIL mode) as 8-bit RGB: high bit depths scaled, not clipped; alpha composited onto white."""
    from PIL import Image

    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        import numpy as np

        pixels = np.asarray(img, dtype=np.float64)
        # I;16 is 16 bits; a 16-bit file that opens as I (32 bits) is told by values above 255; a float image in
        # [0, 1] (TIFF) is scaled by 255; anything else is taken as 8-bit already.
        peak = pixels.max(initial=0)
        top = 65535.0 if img.mode.startswith("I;16") or (img.mode == "I" and peak > 255) else \
            1.0 if img.mode == "F" and peak <= 1.0 else 255.0
        img = Image.fromarray(np.clip(np.rint(pixels * (255.0 / top)), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img.convert("RGBA"))
    return img.convert("RGB")


def open_image(path, max_pixels: int = MAX_PIXELS):
    """The image file ``path`` as an upright 8-bit RGB PIL image; ``ImageError`` (one line naming the file) for a
    file PIL cannot decode, a truncated one, or one of more than ``max_pixels`` pixels."""
    from PIL import ImageOps

    try:
        with open_checked(path, max_pixels) as img:
            img = ImageOps.exif_transpose(img)
            img.load()
        return to_rgb(img)
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 -- PIL raises many types for a bad file; each means "unreadable"
        problem = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ImageError(f"cannot read image {path} ({type(exc).__name__}: {problem})",
                         "remove or replace the file (it is truncated, corrupt or not an image)") from None
