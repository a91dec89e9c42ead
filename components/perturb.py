"""The one place that defines the image perturbations robustness is measured under.

Each perturbation maps an encoded image (any format TensorFlow decodes: JPEG, PNG 8/16 bit, GIF,
BMP) to a new encoded image, as a user's file would look after a platform re-encoded, blurred or
resized it:

  none           the original bytes, untouched (the clean reference)
  jpeg_q95/75/50 re-encoded as JPEG at that quality (4:2:0 chroma, as most platforms do)
  gaussian_blur  Gaussian blur, radius 1 px, written as lossless PNG
  rescale_0.5    down-scaled to half size then up-scaled back (bilinear), lossless PNG

Decoding uses TensorFlow's own kernel, as training and serving do, so every file the model accepts
can be perturbed. Used by the robustness gate (components/robustness.py), the model card and any
check that needs "the same image after a JPEG q75 round trip" (`perturb(data, 'jpeg_q75')`).
"""

import io
from typing import Callable, Dict, List, Sequence

import numpy as np

NONE = 'none'
BLUR_RADIUS = 1.0
RESCALE_FACTOR = 0.5


def decode_rgb(data: bytes) -> np.ndarray:
  """Encoded bytes -> uint8 [h, w, 3], decoded as training decodes (first frame of a GIF)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
  return image.numpy()


def _encode(array: np.ndarray, fmt: str, **options) -> bytes:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format=fmt, **options)
  return buffer.getvalue()


def _jpeg(quality: int) -> Callable[[bytes], bytes]:
  def apply(data: bytes) -> bytes:
    return _encode(decode_rgb(data), 'JPEG', quality=quality)
  apply.__doc__ = f'Re-encoded as JPEG at quality {quality}.'
  return apply


def _blur(data: bytes) -> bytes:
  from PIL import Image, ImageFilter  # pylint: disable=g-import-not-at-top
  image = Image.fromarray(decode_rgb(data)).filter(ImageFilter.GaussianBlur(BLUR_RADIUS))
  return _encode(np.asarray(image), 'PNG')


def _rescale(data: bytes) -> bytes:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = Image.fromarray(decode_rgb(data))
  width, height = image.size
  small = image.resize((max(1, round(width * RESCALE_FACTOR)),
                       max(1, round(height * RESCALE_FACTOR))),
                       Image.BILINEAR)
  return _encode(np.asarray(small.resize((width, height), Image.BILINEAR)), 'PNG')


PERTURBATIONS: Dict[str, Callable[[bytes], bytes]] = {
    NONE: lambda data: data,
    'jpeg_q95': _jpeg(95),
    'jpeg_q75': _jpeg(75),
    'jpeg_q50': _jpeg(50),
    'gaussian_blur': _blur,
    'rescale_0.5': _rescale,
}

DESCRIPTIONS = {
    NONE: 'the original file',
    'jpeg_q95': 'JPEG re-encode, quality 95',
    'jpeg_q75': 'JPEG re-encode, quality 75',
    'jpeg_q50': 'JPEG re-encode, quality 50',
    'gaussian_blur': f'Gaussian blur, radius {BLUR_RADIUS:g} px',
    'rescale_0.5': f'down-scale to {RESCALE_FACTOR:g}x then up-scale back (bilinear)',
}


def names(selected: Sequence[str] = ()) -> List[str]:
  """The perturbations to run, `none` first; an unknown name raises ValueError."""
  chosen = list(selected) or list(PERTURBATIONS)
  unknown = [n for n in chosen if n not in PERTURBATIONS]
  if unknown:
    raise ValueError(f'Unknown perturbation(s) {unknown}; known: {", ".join(PERTURBATIONS)}.')
  return [NONE] + [n for n in chosen if n != NONE]


def perturb(data: bytes, name: str) -> bytes:
  """The encoded image after perturbation `name` (see PERTURBATIONS)."""
  if name not in PERTURBATIONS:
    raise ValueError(f'Unknown perturbation {name!r}; known: {", ".join(PERTURBATIONS)}.')
  return PERTURBATIONS[name](data)
