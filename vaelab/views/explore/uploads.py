"""An uploaded image, checked and turned into the model's input ``[1, C, H, W]`` in [0, 1].

Uploads come from a browser, so nothing about them is trusted: the bytes must be an image Pillow
decodes (its content decides, not the file name or the declared type), within a byte limit, and of
sane dimensions, checked from the header *before* the pixels are decoded so that a small file
declaring a huge image (a decompression bomb) is refused without allocating it. EPS is excluded
because Pillow hands it to Ghostscript, an external interpreter.
"""

from __future__ import annotations

import io

import torch
from PIL import Image, ImageOps

from vaelab.views.explore.errors import RequestError

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_SIDE = 4096  # pixels per side: larger is surely not meant for an 8x8..64x64 model
MIN_SIDE = 4  # pixels per side: smaller carries no picture worth encoding
_UNSAFE_FORMATS = {"EPS"}


def _formats() -> list[str]:
    Image.init()
    return [name for name in Image.OPEN if name not in _UNSAFE_FORMATS]


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
    try:
        image = Image.open(io.BytesIO(data), formats=_formats())
    except Exception:  # Pillow raises many types for undecodable input; all mean the same here
        raise RequestError("not an image Pillow can read (PNG, JPEG, GIF, BMP, TIFF, WebP, ...)") from None
    width, height = image.size
    source_format = image.format
    if max(width, height) > MAX_SIDE:
        raise RequestError(f"image is {width}x{height} pixels; at most {MAX_SIDE} per side", 413)
    if min(width, height) < MIN_SIDE:
        raise RequestError(f"image is {width}x{height} pixels; at least {MIN_SIDE} per side")
    channels, rows, cols = shape
    try:
        image = ImageOps.exif_transpose(image)
        rgba = image.convert("RGBA")
    except Exception:
        raise RequestError(f"the {source_format} image is damaged or truncated") from None
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
