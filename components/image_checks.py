"""The one check of an untrusted image's bytes, for everything that reads a user's files.

Ingestion (the image ExampleGen), `fakedetect predict`, `evaluate` and `explain` all call it, so
that a file one of them accepts, the others accept too, and it decodes inside the serving
signature. Two stages, in this order, so that a decompression bomb is refused before any pixel is
decoded:
  `check_header`   Pillow reads the header only (format, size, colour mode) and refuses what
                   TensorFlow would fail on or decode wrongly; no TensorFlow, so Beam workers run
                   it without importing TensorFlow.
  `check_decodes`  TensorFlow's own decoder, the op training and serving run (`decode_op`).
`check_image` is both, after the byte limit; `read_checked` reads a file and checks it.

A refused file raises ImageRejected: `reason` is one of REASONS (ingestion's quarantine codes),
`detail` what was found, and str() the sentence a user reads.
"""

import dataclasses
import errno
import io
import os
import re
import stat
import warnings
from typing import NamedTuple, Optional

from PIL import Image

from fakedetect.components import features
from fakedetect.components.image_example_gen import folders

# Why a file is not used (report.json's quarantine `reason`, and predict's errors).
REASONS = {
    'empty': 'zero-byte file',
    'too_large': 'larger than the byte limit (predict, evaluate, explain; serving refuses it)',
    'not_image': 'not an image, or a hidden/system file that is never read',
    'unsupported_format': 'an image format TensorFlow cannot decode (TIFF, WebP, HEIC, ...)',
    'truncated': 'the image data ends early',
    'corrupt': 'Pillow or TensorFlow could not decode the image',
    'too_many_pixels': 'the header declares more pixels than max_pixels (decompression bomb)',
    'unsupported_mode': 'a pixel layout TensorFlow would fail on or decode wrongly',
    'unreadable': 'permission, I/O error, symlink loop, not a regular file (a pipe or device)',
    'unlabelled': "outside the layout's class folders, so no label",
    'outside_data_folder': 'a manifest path or a link leading out of the data folder; not read',
}
# Why a path that is a pipe (FIFO), socket or device is not read: opening a pipe blocks.
NOT_REGULAR = folders.NOT_REGULAR
# Reasons that mean "TensorFlow would not decode these bytes as an image": one phrase for users.
_UNDECODABLE = frozenset({'not_image', 'unsupported_format', 'truncated', 'corrupt',
                          'unsupported_mode'})

# Pillow format name -> the `format` feature: the one list of the formats read, those TensorFlow
# 2.16's DecodeImage decodes (not WebP: refused here, by name, before any decode is tried).
# MPO is how Pillow names many camera JPEGs.
FORMATS = {'JPEG': 'jpeg', 'MPO': 'jpeg', 'PNG': 'png', 'GIF': 'gif', 'BMP': 'bmp'}
# Signatures of those formats: a file that has one but does not parse is broken, not "not an image".
_SIGNATURES = ((b'\xff\xd8\xff', 'jpeg'), (b'\x89PNG\r\n\x1a\n', 'png'), (b'GIF8', 'gif'))


class ImageRejected(ValueError):
  """A file that will not be used: `reason` (a REASONS code) and `detail` (what was found)."""

  def __init__(self, reason: str, detail: str):
    if reason not in REASONS:
      raise ValueError(f'unknown rejection reason {reason!r}; add it to REASONS')
    super().__init__(reason, detail)
    self.reason, self.detail = reason, detail

  def __str__(self) -> str:
    if self.reason in _UNDECODABLE:
      return f'not an image TensorFlow can decode: {self.detail}'
    if self.reason == 'unreadable':
      return f'unreadable: {self.detail}'
    return self.detail


@dataclasses.dataclass(frozen=True)
class Limits:
  """Limits on untrusted input, checked before anything is decoded."""
  max_bytes: int = features.MAX_IMAGE_BYTES  # encoded file size, as serving_default
  max_pixels: int = features.MAX_IMAGE_PIXELS  # declared width x height, as ingestion


class Header(NamedTuple):
  format: str  # a FORMATS value
  height: int
  width: int
  mode: str  # Pillow's colour mode: RGB, L, P, RGBA, CMYK, I;16, ...


def allow_pixels(max_pixels: int) -> None:
  """Pillow's own bomb guard (`Image.MAX_IMAGE_PIXELS`) is process-wide; this is the only code
  that changes it, and only raises it, so that Pillow never refuses what max_pixels allows.

  Below it our own count of the header's size decides (with the size in the message); Pillow
  refuses at open a header past twice its guard, which we report as too_many_pixels too.
  """
  if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
    Image.MAX_IMAGE_PIXELS = max_pixels


def _too_many_pixels(error: Exception, max_pixels: int) -> ImageRejected:
  declared = re.search(r'\((\d+) pixels\)', str(error))
  count = f'{int(declared.group(1)):,}' if declared else 'more than Pillow allows'
  return ImageRejected('too_many_pixels', f'too many pixels: {count} > limit {max_pixels:,}')


def check_header(data: bytes, max_pixels: int) -> Header:
  """The header Pillow reads, without decoding a pixel; ImageRejected if TensorFlow must not or
  cannot decode the bytes (empty, not an image, a bomb, a format or pixel layout it lacks)."""
  if not data:
    raise ImageRejected('empty', 'empty file')
  allow_pixels(max_pixels)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', Image.DecompressionBombWarning)
    try:
      image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
      raise _too_many_pixels(e, max_pixels) from None
    except Exception as e:  # pylint: disable=broad-except
      signed = next((f for magic, f in _SIGNATURES if data.startswith(magic)), None)
      if signed:
        raise ImageRejected('corrupt',
                            f'{signed} signature but an unreadable header: {e}') from None
      raise ImageRejected('not_image', 'no image format recognised in its content') from None
  width, height = image.size
  if width * height > max_pixels:
    raise ImageRejected('too_many_pixels', f'too many pixels: {width}x{height} = '
                        f'{width * height:,} > limit {max_pixels:,}')
  fmt = FORMATS.get(image.format)
  if fmt is None:
    raise ImageRejected('unsupported_format', f'{image.format} image; only '
                        f'{", ".join(sorted(set(FORMATS.values())))} are read')
  if fmt == 'bmp':
    problem = _bmp_problem(data, image)
    if problem:
      raise ImageRejected('unsupported_mode', problem)
  return Header(fmt, height, width, image.mode)


def _bmp_problem(data: bytes, image) -> Optional[str]:
  """TF's BMP decoder reads channels = bits/8 and ignores palettes and compression."""
  header_size = int.from_bytes(data[14:18], 'little')
  bits = int.from_bytes(data[24:26] if header_size == 12 else data[28:30], 'little')
  compression = image.info.get('compression', 0)
  if compression not in (0, 3):
    return f'compressed (RLE) BMP, compression {compression}: TensorFlow reads only raw BMP'
  if bits in (24, 32) or (bits == 8 and image.mode == 'L'):
    return None
  return (f'{bits}-bit {image.mode} BMP: TensorFlow decodes 24/32-bit colour and 8-bit grey '
          'BMP only (a palette would be read as grey levels)')


def decode_op(contents):
  """TensorFlow's decoder with the arguments training uses (`views.decode_and_resize`): the
  DecodeImage op itself, without tf.io.decode_image's Python dispatch."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.raw_ops.DecodeImage(contents=contents, channels=features.CHANNELS,
                                expand_animations=False)


def check_decodes(data: bytes, fmt: str) -> None:
  """TensorFlow's decode of the bytes, the one check every image passes; ImageRejected if not."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    decode_op(tf.constant(data))  # a tensor takes the op's fast path; bytes convert slower
  except Exception as e:  # pylint: disable=broad-except
    raise decode_rejection(e, data, fmt) from None


def decode_rejection(error: Exception, data: bytes, fmt: str) -> ImageRejected:
  """Why an image whose header Pillow accepted failed TensorFlow's decode: truncated or corrupt
  in Pillow's words when Pillow fails too, else TensorFlow's own message."""
  message = error_message(error)
  if 'Unknown image file format' in str(error):
    return ImageRejected('unsupported_format',
                         f'{fmt}: TensorFlow could not decode it ({message})')
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', Image.DecompressionBombWarning)
    try:
      Image.open(io.BytesIO(data)).load()
    except Exception as e:  # pylint: disable=broad-except
      if 'truncated' in str(e).lower() or isinstance(e, EOFError):
        return ImageRejected('truncated', f'Pillow: {type(e).__name__}: {e}')
      return ImageRejected('corrupt', f'Pillow could not decode it: {type(e).__name__}: {e}')
  return ImageRejected('corrupt', f'Pillow reads it but TensorFlow could not decode it: {message}')


def error_message(error: Exception) -> str:
  """The first line of a TensorFlow error, without its op and device decorations."""
  text = re.sub(r'\{\{.*?\}\}\s*|\s*\[Op:\w+\].*', '', str(getattr(error, 'message', error)))
  lines = text.strip().splitlines()
  return lines[0] if lines else type(error).__name__


def check_image(data: bytes, limits: Limits = Limits()) -> Header:
  """Every check, TensorFlow's decode included: what predict, evaluate and explain score."""
  _refuse_over(len(data), limits.max_bytes)
  header = check_header(data, limits.max_pixels)
  check_decodes(data, header.format)
  return header


def read_file(path: str, max_bytes: Optional[int] = None) -> bytes:
  """The file's bytes (a local path or a gs://... URI); ImageRejected('unreadable') on an I/O
  error or a path that is not a regular file, ('too_large') before reading a file over max_bytes
  into memory.

  A local path is opened without blocking and checked on the open descriptor, so a pipe (FIFO)
  with no writer is refused at once instead of blocking the caller forever, and nothing can
  swap the file between the check and the read.
  """
  try:
    if folders.is_remote(path):
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      if max_bytes is not None:
        _refuse_over(tf.io.gfile.stat(path).length, max_bytes)
      with tf.io.gfile.GFile(path, 'rb') as f:
        return f.read()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
      os.close(fd)
      raise ImageRejected('unreadable', 'a folder, not a file' if stat.S_ISDIR(info.st_mode)
                          else NOT_REGULAR)
    os.set_blocking(fd, True)
    with os.fdopen(fd, 'rb') as f:
      if max_bytes is None:
        return f.read()
      _refuse_over(info.st_size, max_bytes)
      return f.read(max_bytes + 1)  # a file growing meanwhile still fails check_image's limit
  except ImageRejected:
    raise
  except OSError as e:
    if e.errno == errno.ELOOP:
      raise ImageRejected('unreadable', 'symlink loop') from None
    raise ImageRejected('unreadable', f'{type(e).__name__}: {e.strerror or e}') from None
  except Exception as e:  # pylint: disable=broad-except  (TensorFlow's file system errors)
    raise ImageRejected('unreadable', f'{type(e).__name__}: {error_message(e)}') from None


def _refuse_over(size: int, max_bytes: int) -> None:
  if size > max_bytes:
    raise ImageRejected('too_large', f'file too large: {size:,} bytes > limit {max_bytes:,}')


def read_checked(path: str, limits: Limits = Limits()) -> bytes:
  """A file's bytes once every check passed (`check_image`); ImageRejected otherwise."""
  data = read_file(path, limits.max_bytes)
  check_image(data, limits)
  return data
