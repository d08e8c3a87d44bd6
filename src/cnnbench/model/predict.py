"""Any image of a digit (or garment) -> a 28x28 MNIST-like input -> the model's top classes.

:func:`preprocess_image` repeats how MNIST was made (LeCun et al.): grayscale; a light
background is inverted so the ink is white on black; the ink's bounding box is scaled,
preserving its aspect ratio and with anti-aliasing, to fit a 20x20 box; the result is placed
in a 28x28 field so that its centre of mass lies at the centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnbench.errors import UsageError

if TYPE_CHECKING:  # torch is imported when a prediction runs
    from torch import nn

FIELD, BOX = 28, 20  # MNIST: digits fitted into 20x20, centred in 28x28


class ImageError(UsageError, ValueError):
    """An image that cannot be read or holds nothing to classify."""


@dataclass(frozen=True)
class Preprocessed:
    image: np.ndarray  # 28 x 28 uint8, white ink on black
    inverted: bool  # the source had a light background
    bbox: tuple[int, int, int, int]  # ink box in the source: left, top, right, bottom
    source_size: tuple[int, int]  # width, height


# Pillow refuses images over 2 x 89.5 M pixels and only warns from 89.5 M; cnnbench refuses
# from 25 M (6000 x 4000, a 24-megapixel photo): 25 MB decoded, 100 MB as float32.
MAX_PIXELS = 25_000_000


def _load_gray(path: str | Path) -> np.ndarray:
    """The image as H x W uint8 grayscale; ImageError names the image for any failure."""
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError
    _check_image_file(Path(path))
    try:
        with warnings.catch_warnings():
            # A damaged TIFF's "Tag data larger than file" would print Pillow's own lines
            # before ours; the error below says what went wrong, in one line.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                w, h = opened.size  # from the header: nothing is decoded yet
                if w * h > MAX_PIXELS:
                    raise ImageError(f"{path}: {w}x{h} = {w * h / 1e6:.0f} M pixels; predict "
                                     f"reads images of at most {MAX_PIXELS / 1e6:.0f} M pixels. "
                                     f"Scale it down first.")
                im = ImageOps.exif_transpose(opened)
                if im.mode in ("RGBA", "LA", "P"):
                    im = im.convert("RGBA")
                    white = Image.new("RGBA", im.size, (255, 255, 255, 255))
                    im = Image.alpha_composite(white, im)  # transparency reads as white paper
                return np.asarray(im.convert("L"), dtype=np.uint8)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{path}: refused as a decompression bomb ({e}).") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"{path}: {_not_an_image(Path(path))}; expected an image file "
                         f"(PNG, JPEG, GIF, BMP, TIFF or WebP).") from e
    except Exception as e:  # a damaged image makes Pillow raise nearly anything
        raise ImageError(f"{path}: cannot read as an image ({type(e).__name__}: "
                         f"{str(e)[:200]}).") from e


def _check_image_file(path: Path) -> None:
    """A missing image or a folder, said as such (not as Pillow's errno text)."""
    if path.is_dir():
        raise ImageError(f"{path}: a folder; expected an image file (PNG, JPEG, ...).")
    if not path.exists():
        raise ImageError(f"{path}: no such image file.")


def _not_an_image(path: Path) -> str:
    """What a file Pillow cannot identify holds, when it is a common mix-up."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        head = b""
    if head.startswith(b"PK\x03\x04"):
        return "not an image but a zip archive (a TorchScript .pt export?)"
    if len(head) > 8 and head[8:9] == b"{":  # safetensors: 8-byte length, then a JSON header
        return ("not an image but a safetensors file (weights go first: "
                "cnnbench predict RUN|WEIGHTS IMAGE...)")
    return "not an image Pillow can identify" if head else "an empty file, not an image"


def preprocess_array(gray: np.ndarray, where: str = "image") -> Preprocessed:
    """The MNIST preprocessing of a grayscale array (H x W, 0..255)."""
    from PIL import Image
    gray = np.asarray(gray)
    if gray.ndim != 2 or min(gray.shape) < 2:
        raise ImageError(f"{where}: expected a 2-D grayscale image, got shape {gray.shape}.")
    # One float32 working copy, changed in place: a 25 M pixel image costs 100 MB, not the
    # several float64 copies (200 MB each) that plain expressions would make.
    a = gray.astype(np.float32)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]).astype(np.float64)
    inverted = bool(np.median(border) > 127)  # paper-like background: make the ink white
    if inverted:
        np.subtract(255.0, a, out=a)
        border = 255.0 - border
    # Background to 0 and the strongest ink to 255, as in MNIST's clean black fields.
    background = float(np.median(border))
    a -= background
    np.clip(a, 0, None, out=a)
    peak = float(a.max())
    if peak < 16:
        raise ImageError(f"{where}: no ink found (the image is nearly uniform).")
    a *= 255.0 / peak
    ink = a > 64  # ignore faint specks and JPEG noise
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    del ink
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = a[top:bottom, left:right]
    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # Lanczos on floats: anti-aliased like MNIST's, no rounding before the final step.
    small = np.asarray(Image.fromarray(np.ascontiguousarray(crop), mode="F").resize(
        size, Image.Resampling.LANCZOS), dtype=np.float64).clip(0, 255)
    total = small.sum()
    ys, xs = np.indices(small.shape)
    cy, cx = (ys * small).sum() / total, (xs * small).sum() / total
    field = np.zeros((FIELD, FIELD))
    # MNIST's centres of mass sit at (14.0, 14.0) in pixel indices (mean over its train set,
    # std 0.29 from whole-pixel shifts): shift by whole pixels to put ours there.
    oy, ox = int(round(FIELD / 2 - cy)), int(round(FIELD / 2 - cx))
    # Clip the shift so the 20x20 box stays inside the field.
    oy = min(max(oy, 0), FIELD - small.shape[0])
    ox = min(max(ox, 0), FIELD - small.shape[1])
    field[oy:oy + small.shape[0], ox:ox + small.shape[1]] = small
    image = np.rint(field).astype(np.uint8)
    return Preprocessed(image, inverted, (int(left), int(top), int(right), int(bottom)),
                        (gray.shape[1], gray.shape[0]))


def preprocess_image(path: str | Path) -> Preprocessed:
    """Read a PNG/JPEG (any size, light or dark background) and make it MNIST-like."""
    return preprocess_array(_load_gray(path), str(path))


def save_preview(pre: Preprocessed, image_path: str | Path) -> Path:
    """``digit.png`` -> ``digit.cnnbench.png``: the 28x28 input the model saw, enlarged 8x."""
    import io

    from PIL import Image

    from cnnbench.atomic import atomic_write_bytes
    path = Path(image_path)
    out = path.with_name(f"{path.stem}.cnnbench.png")
    buf = io.BytesIO()
    Image.fromarray(pre.image, mode="L").resize((FIELD * 8, FIELD * 8),
                                                Image.Resampling.NEAREST).save(buf, "PNG")
    try:
        atomic_write_bytes(out, buf.getvalue())  # whole or not at all, as every cnnbench file
    except OSError as e:  # name the preview, not the temporary file beside it
        raise OSError(e.errno, e.strerror, str(out)) from e
    return out


def predict(model: nn.Module, images: np.ndarray, classes: tuple[str, ...] | list[str],
            top: int = 3) -> list[list[tuple[str, float]]]:
    """Top classes with probabilities for N x 28 x 28 uint8 images."""
    import torch

    from cnnbench.data.tensors import images_to_tensor
    from cnnbench.model.build import predict_proba
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        proba = predict_proba(model, images_to_tensor(np.asarray(images, np.uint8)))
    model.train(was_training)
    k = min(top, proba.shape[1])
    values, indices = proba.topk(k, dim=1)
    return [[(classes[i], float(p)) for p, i in zip(vs.tolist(), ix.tolist(), strict=True)]
            for vs, ix in zip(values, indices, strict=True)]
