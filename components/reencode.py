"""Encodes new pixels exactly as another file was encoded: same format, and for JPEG the same
quantization tables and chroma subsampling.

A simulated fake (components/artifact_simulator.py) must differ from its real source in how its
pixels were made and in nothing else: a fake saved at another JPEG quality, as PNG next to JPEG
reals, or in another colour mode would hand the detector a container shortcut that no generator
in the wild shares.
"""

import io

import numpy as np
from PIL import Image
from PIL import JpegImagePlugin

# PIL's format names for the formats the ExampleGen admits (components/image_checks.py).
_PIL_FORMATS = {'jpeg': 'JPEG', 'png': 'PNG', 'gif': 'GIF', 'bmp': 'BMP', 'webp': 'WEBP'}


def like(source: bytes, pixels: np.ndarray) -> bytes:
  """uint8 [h, w, 3] pixels encoded as `source` is: JPEG with its quantization tables and
  subsampling (libjpeg's quality is those tables), a lossless format losslessly, in the source's
  colour mode (grey stays grey; an alpha channel is carried over from the source). WebP, whose
  files do not record their quality, is written lossless if the source was, else at quality 90."""
  original = Image.open(io.BytesIO(source))
  fmt = (original.format or '').upper()
  image = Image.fromarray(pixels, 'RGB')
  if original.mode in ('L', 'LA', 'RGBA', 'P', 'I;16', 'I'):
    if original.mode in ('L', 'I;16', 'I'):
      image = image.convert('L')
    elif original.mode == 'LA':
      image = image.convert('L')
      image.putalpha(original.getchannel('A'))
    elif original.mode == 'RGBA':
      image.putalpha(original.getchannel('A'))
    elif original.mode == 'P':
      image = image.quantize(256)
  options = {}
  if fmt == 'JPEG':
    options['qtables'] = original.quantization
    sampling = JpegImagePlugin.get_sampling(original)
    if sampling != -1:
      options['subsampling'] = sampling
    if original.info.get('progressive'):
      options['progressive'] = True
  elif fmt == 'WEBP':
    lossless = original.info.get('lossless', False) or _webp_lossless(source)
    options = {'lossless': True} if lossless else {'quality': 90}
  elif fmt not in _PIL_FORMATS.values():
    raise ValueError(f'cannot re-encode a {fmt or "unknown"} file')
  buffer = io.BytesIO()
  image.save(buffer, format=fmt, **options)
  return buffer.getvalue()


def _webp_lossless(source: bytes) -> bool:
  """A WebP file's first chunk is VP8L when lossless (the container's RIFF layout)."""
  return source[12:16] == b'VP8L'
