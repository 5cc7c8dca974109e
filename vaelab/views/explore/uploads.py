"""An uploaded image, checked and turned into the model's input ``[1, C, H, W]`` in [0, 1].

Uploads come from a browser, so nothing about them is trusted: the bytes must be an image Pillow
decodes (its content decides, not the file name or the declared type), within a byte limit, and of
sane dimensions, checked from the header *before* the pixels are decoded so that a small file
declaring a huge image (a decompression bomb) is refused without allocating it. EPS is excluded
because Pillow hands it to Ghostscript, an external interpreter.
"""

from __future__ import annotations

import io
import threading
import warnings

import torch
from PIL import Image, ImageFile, ImageOps

from vaelab.views.explore.errors import RequestError

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_SIDE = 4096  # pixels per side: larger is surely not meant for an 8x8..64x64 model
MIN_SIDE = 4  # pixels per side: smaller carries no picture worth encoding
_UNSAFE_FORMATS = {"EPS"}
# One upload decoded at a time: bounds the memory concurrent uploads can take, and keeps the
# warnings filter that read_image installs (process-wide in Python) from interleaving between threads.
_DECODE_LOCK = threading.Lock()


def _formats() -> list[str]:
    Image.init()
    return [name for name in Image.OPEN if name not in _UNSAFE_FORMATS]


def _open_header(data: bytes) -> ImageFile.ImageFile:
    """The image in ``data`` with only its header read: ``Image.open`` without Pillow's pixel-count check.

    ``Image.open`` tries each format's opener on the first bytes, as here, but then refuses an image
    of over ~179 M pixels with an error that gives only the pixel count; skipping that check lets
    :func:`_check_size` refuse it with its width and height, against our much lower limit.
    """
    prefix = data[:16]
    for name in _formats():
        factory, accept = Image.OPEN[name]
        try:
            claimed = accept is None or accept(prefix)
            if claimed and not isinstance(claimed, str):  # a str is Pillow's "maybe, but unsupported"
                return factory(io.BytesIO(data), "")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise  # an opener that checks frame sizes itself (GIF, MPO): not "not this format"
        except Exception:  # Pillow raises many types for bytes that are not its format
            continue
    raise RequestError("not an image Pillow can read (PNG, JPEG, GIF, BMP, TIFF, WebP, ...)")


def _check_size(width: int, height: int) -> None:
    if max(width, height) > MAX_SIDE:
        raise RequestError(f"image is {width}x{height} pixels; at most {MAX_SIDE} per side", 413)
    if min(width, height) < MIN_SIDE:
        raise RequestError(f"image is {width}x{height} pixels; at least {MIN_SIDE} per side")


def _pixels(image: Image.Image) -> Image.Image:
    """The decoded pixels of ``image``, upright (EXIF orientation) and RGBA."""
    try:
        return ImageOps.exif_transpose(image).convert("RGBA")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise
    except Exception:  # Pillow raises many types for damaged pixel data; all mean the same here
        raise RequestError(f"the {image.format} image is damaged or truncated") from None


def _decode(data: bytes) -> tuple[Image.Image, str, tuple[int, int]]:
    """The upload's pixels as RGBA, its format and its header's size, checked before any pixel is decoded.

    Some formats learn a frame's true size only while decoding (an ICO entry holding a larger PNG, a
    GIF frame): Pillow checks those against its own limit, with a ``DecompressionBombWarning`` (made
    an error here) above ~89 M pixels, and the decoded size is checked against ours again.
    """
    with _DECODE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = _open_header(data)
            _check_size(*image.size)
            rgba = _pixels(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise RequestError(f"image holds a frame too large to decode (a decompression bomb?); "
                               f"at most {MAX_SIDE} per side", 413) from None
    _check_size(*rgba.size)
    return rgba, image.format, image.size


def read_image(data: bytes, shape: tuple[int, int, int], invert: bool = False) -> tuple[torch.Tensor, str]:
    """``data`` as a ``[1, C, H, W]`` float tensor for a model of input ``shape = (C, H, W)``, and a note.

    Transparent pixels become white, the image is converted to gray (C = 1) or RGB (C = 3) and
    resized to H x W (Lanczos, which averages when shrinking); ``invert`` flips intensities, for
    dark-on-light pictures shown to a model trained on light-on-dark digits. The note says what
    was done, for the page to show.
    """
    if not data:
        raise RequestError("empty upload: choose an image file")
    if len(data) > MAX_UPLOAD_BYTES:
        raise RequestError(f"upload is {len(data) / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB", 413)
    rgba, source_format, (width, height) = _decode(data)
    channels, rows, cols = shape
    flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    flat.alpha_composite(rgba)
    picture = flat.convert("L" if channels == 1 else "RGB")
    if picture.size != (cols, rows):
        picture = picture.resize((cols, rows), Image.Resampling.LANCZOS)
    if invert:
        picture = ImageOps.invert(picture)
    pixels = torch.frombuffer(bytearray(picture.tobytes()), dtype=torch.uint8).float() / 255
    x = pixels.view(rows, cols, channels).permute(2, 0, 1).unsqueeze(0)  # [1, C, H, W]
    kind = "gray" if channels == 1 else "RGB"
    resized = f"resized from {width}x{height} to {cols}x{rows}" if (width, height) != (cols, rows) else f"{cols}x{rows}"
    note = f"{source_format} {resized}, {kind}" + (", inverted" if invert else "")
    return x, note
