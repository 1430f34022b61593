"""Image bytes: decoding (PIL, DCT-scaled for training views, the fast-decode extra's numpy
path) and encoding, for every reader and the pipeline."""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image, ImageFile

try:  # the fast-decode extra: libjpeg-turbo's TurboJPEG API straight into numpy arrays
    import simplejpeg
except ImportError:
    simplejpeg = None

class ImageDecodeError(ValueError):
    """Bytes that are not a complete image PIL can decode (corrupt, truncated, empty)."""


def decode_image(image_bytes: bytes, *, record_id: str | None = None) -> np.ndarray:
    """Decodes JPEG/PNG/... bytes into a writable uint8 ``(H, W, 3)`` RGB array.

    Truncated images are errors, never partial images: this resets PIL's process-wide
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` to False (geojax never wants it on) and forces
    the full decode with ``Image.load()``. No EXIF rotation is applied (as the published
    pipelines of these datasets did).

    Raises:
      ImageDecodeError: the bytes are empty, not an image, truncated or corrupt; the
        message names ``record_id`` and PIL's reason.
    """
    return np.array(decode_pil(image_bytes, record_id=record_id)[0], dtype=np.uint8)


DCT_FACTORS = (8, 4, 2, 1)  # the JPEG downscaling factors PIL's draft mode asks libjpeg for


def decode_pil(image_bytes: bytes, *, record_id: str | None = None,
               reduce: Callable[[int, int], int] | None = None) -> tuple[Image.Image, int]:
    """Decodes bytes into an RGB PIL image, optionally downscaled while decoding.

    ``reduce(width, height)``, called once with the full size read from the header before
    any pixel is decoded, returns the factor ``f`` in :data:`DCT_FACTORS` by which the image
    may come out smaller: a JPEG is then decoded by libjpeg's DCT scaling (PIL's
    ``Image.draft``) into ``(ceil(width / f), ceil(height / f))`` pixels, several times faster
    than the full decode, each output pixel close to the mean of the ``f x f`` block it
    covers. Other formats, and ``f = 1``, are decoded in full, with exactly the pixels of
    :func:`decode_image`. Errors as :func:`decode_image`.

    Returns:
      The image (mode RGB) and the factor actually applied (1 or ``f``): original pixel
      coordinates ``x`` are ``x / factor`` in the returned image.
    """
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    what = f"image {record_id!r}" if record_id is not None else "image"
    if not image_bytes:
        raise ImageDecodeError(f"{what}: no bytes (empty file or record).")
    errors = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
    try:
        img = Image.open(io.BytesIO(image_bytes))  # reads the header only
    except errors as e:
        raise ImageDecodeError(f"{what} ({len(image_bytes)} bytes) cannot be decoded: {e}") from e
    wanted = 1 if reduce is None else int(reduce(*img.size))
    if wanted not in DCT_FACTORS:
        raise ValueError(f"reduce returned {wanted}; the factor must be one of {DCT_FACTORS}.")
    factor = 1
    try:
        if wanted > 1 and img.format == "JPEG":
            width, height = img.size
            drafted = img.draft("RGB", (width // wanted, height // wanted))
            if drafted is not None:  # (mode, (0, 0, width / scale, height / scale))
                factor = round(width / drafted[1][2])
        img.load()
        rgb = img if img.mode == "RGB" else img.convert("RGB")
    except errors as e:
        raise ImageDecodeError(f"{what} ({len(image_bytes)} bytes) cannot be decoded: {e}") from e
    return rgb, factor


def _draft_scale(width: int, height: int, wanted: int) -> int:
    """The DCT scale PIL's JPEG ``draft`` picks when asked for ``(width // wanted, height //
    wanted)`` pixels: the largest of :data:`DCT_FACTORS` not above the whole ratio."""
    if wanted == 1:
        return 1
    ratio = min(width // max(1, width // wanted), height // max(1, height // wanted))
    return next(f for f in DCT_FACTORS if ratio >= f)


def decode_jpeg_array(image_bytes: bytes, *, reduce: Callable[[int, int], int] | None = None
                      ) -> tuple[np.ndarray, int] | None:
    """:func:`decode_pil` for JPEGs into a uint8 ``(H, W, 3)`` array, with the ``fast-decode``
    extra (simplejpeg: libjpeg-turbo's TurboJPEG API): the same pixels and the same factor
    as ``decode_pil(image_bytes, reduce=reduce)`` (libjpeg's accurate DCT and smooth chroma
    upsampling on both sides, the same DCT scale; ``tests/test_sources_decode.py``), without
    PIL's copy into its 4-byte pixel layout.

    Returns ``None`` where it does not apply: simplejpeg not installed, not a JPEG, or a JPEG
    that simplejpeg declines (CMYK, a libjpeg warning, corrupt data). The caller then decodes
    with :func:`decode_pil`, which reads what PIL can and names what is broken. ``reduce`` is
    called at most once here, with the size from the header; callers that fall back call it
    again with the same size.
    """
    if simplejpeg is None or not image_bytes or not simplejpeg.is_jpeg(image_bytes):
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(image_bytes)
    except ValueError:
        return None
    if colorspace not in ("RGB", "YCbCr", "Gray"):
        return None  # CMYK / YCCK: TurboJPEG converts them to RGB, but not as PIL does
    wanted = 1 if reduce is None else int(reduce(width, height))
    if wanted not in DCT_FACTORS:
        raise ValueError(f"reduce returned {wanted}; the factor must be one of {DCT_FACTORS}.")
    factor = _draft_scale(width, height, wanted)
    try:
        if factor == 1:
            return simplejpeg.decode_jpeg(image_bytes, colorspace="RGB"), 1
        # the smallest TurboJPEG scale whose output is at least these sizes: 1 / factor
        return simplejpeg.decode_jpeg(image_bytes, colorspace="RGB",
                                      min_height=-(-height // factor),
                                      min_width=-(-width // factor)), factor
    except ValueError:
        return None


def encode_image(image: np.ndarray, image_format: str = "png") -> bytes:
    """Encodes a uint8 ``(H, W, 3)`` (or ``(H, W)``) array as PNG (lossless) or JPEG quality 95."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}.")
    buf = io.BytesIO()
    if image_format == "png":
        Image.fromarray(image).save(buf, format="PNG")
    elif image_format == "jpeg":
        Image.fromarray(image).save(buf, format="JPEG", quality=95)
    else:
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}.")
    return buf.getvalue()
