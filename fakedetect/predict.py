"""Batch prediction with a pushed model, through the same `serving_default` TF Serving runs.

Every input file gets exactly one output row: its score, or the reason it could not be scored
(missing, empty, too large, too many pixels, not an image TensorFlow decodes). Files are checked
one by one before batching, so one bad file never fails the batch it would have been in.
"""

import csv
import dataclasses
import glob
import io
import json
import os
import re
import sys
import warnings
from typing import IO, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from fakedetect.components import features

# Limits on untrusted input, checked before anything is decoded.
DEFAULT_MAX_BYTES = features.MAX_IMAGE_BYTES  # encoded file size, as serving_default
DEFAULT_MAX_PIXELS = features.MAX_IMAGE_PIXELS  # declared width x height, as ingestion
FIELDS = ('path', 'fake_probability', 'label', 'uncertain', 'error')


@dataclasses.dataclass(frozen=True)
class Limits:
  max_bytes: int = DEFAULT_MAX_BYTES
  max_pixels: int = DEFAULT_MAX_PIXELS


def expand_paths(args: Sequence[str]) -> List[Tuple[str, Optional[str]]]:
  """Files, folders (recursive, hidden entries skipped) and globs -> [(path, error or None)].

  An argument that names nothing becomes a row with an error rather than stopping the run.
  """
  found: List[Tuple[str, Optional[str]]] = []
  for arg in args:
    if os.path.isdir(arg):
      for root, dirs, files in os.walk(arg):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        found += [(os.path.join(root, f), None) for f in sorted(files) if not f.startswith('.')]
    elif os.path.exists(arg):
      found.append((arg, None))
    elif glob.has_magic(arg):
      matches = sorted(p for p in glob.glob(arg, recursive=True) if os.path.isfile(p))
      found += [(p, None) for p in matches] or [(arg, 'no file matches this pattern')]
    else:
      found.append((arg, 'no such file or folder'))
  return found


def check_image(data: bytes, limits: Limits) -> Optional[str]:
  """Why these bytes cannot be scored, or None. Header first: a bomb is refused undecoded.

  The decode is TensorFlow's, with the arguments `features.decode_and_resize` uses, so a file
  that passes here decodes inside the serving signature too.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if not data:
    return 'empty file'
  if len(data) > limits.max_bytes:
    return f'file too large: {len(data):,} bytes > limit {limits.max_bytes:,}'
  # Other code in the process (ingestion) may have lowered Pillow's global bomb guard; only the
  # header is read here, so our own limit decides, whatever that global says.
  saved_guard = Image.MAX_IMAGE_PIXELS
  Image.MAX_IMAGE_PIXELS = max(saved_guard or 0, limits.max_pixels)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', Image.DecompressionBombWarning)
    try:
      width, height = Image.open(io.BytesIO(data)).size  # reads the header only
    except Image.DecompressionBombError as e:  # Pillow's own guard, far past any sane limit
      declared = re.search(r'\((\d+) pixels\)', str(e))
      count = f'{int(declared.group(1)):,}' if declared else 'more than Pillow allows'
      return f'too many pixels: {count} > limit {limits.max_pixels:,}'
    except Exception:  # pylint: disable=broad-except  (TensorFlow has the last word below)
      width = height = 0
    finally:
      Image.MAX_IMAGE_PIXELS = saved_guard
  if width * height > limits.max_pixels:
    return (f'too many pixels: {width}x{height} = {width * height:,} > limit '
            f'{limits.max_pixels:,}')
  try:
    shape = tf.io.decode_image(data, channels=features.CHANNELS, expand_animations=False).shape
  except (tf.errors.OpError, ValueError) as e:
    return 'not an image TensorFlow can decode: ' + error_message(e)
  if shape[0] * shape[1] > limits.max_pixels:
    return f'too many pixels: {shape[1]}x{shape[0]} > limit {limits.max_pixels:,}'
  return None


def error_message(error: Exception) -> str:
  """The first line of a TensorFlow error, without its op and device decorations."""
  text = re.sub(r'\{\{.*?\}\}\s*|\s*\[Op:\w+\].*', '', str(getattr(error, 'message', error)))
  lines = text.strip().splitlines()
  return lines[0] if lines else type(error).__name__


def read_checked(path: str, limits: Limits) -> Tuple[Optional[bytes], Optional[str]]:
  """(bytes, None) for a scorable file, (None, reason) otherwise; never raises."""
  try:
    size = os.path.getsize(path)
    if size > limits.max_bytes:  # never read a huge file into memory
      return None, f'file too large: {size:,} bytes > limit {limits.max_bytes:,}'
    with open(path, 'rb') as f:
      data = f.read(limits.max_bytes + 1)
  except OSError as e:
    return None, f'unreadable: {e.strerror or e}'
  error = check_image(data, limits)
  return (None, error) if error else (data, None)


class Predictor:
  """A pushed SavedModel, loaded once; its threshold and image size come from the model itself."""

  def __init__(self, model_dir: str):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from fakedetect.components import export  # pylint: disable=g-import-not-at-top
    self.model_dir = model_dir
    self.loaded = tf.saved_model.load(model_dir)
    self._serve = self.loaded.signatures[export.SERVING_SIGNATURE]
    self._probability_key = export.PROBABILITY_KEY
    metadata = self.loaded.signatures[export.METADATA_SIGNATURE]()
    self.threshold = float(metadata['threshold'])
    self.image_size = int(metadata['image_size'])

  def score(self, images: List[bytes]) -> np.ndarray:
    """fake_probability per encoded image, through serving_default (one call per batch)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    out = self._serve(image_bytes=tf.constant(images, dtype=tf.string))
    return out[self._probability_key].numpy()

  def score_safely(self, images: List[bytes]) -> List[Tuple[Optional[float], Optional[str]]]:
    """As score, but a batch the signature refuses is retried image by image."""
    try:
      return [(float(p), None) for p in self.score(images)]
    except Exception as e:  # pylint: disable=broad-except
      if len(images) == 1:
        return [(None, 'the model refused it: ' + error_message(e))]
      return [result for image in images for result in self.score_safely([image])]


def predict(predictor: Predictor, paths: Sequence[Tuple[str, Optional[str]]],
            batch_size: int = 64, uncertain_band: float = 0.1, limits: Limits = Limits(),
            progress: bool = False) -> Iterator[Dict[str, object]]:
  """One row per path, in input order: FIELDS, with `error` set when a file was not scored."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  with tqdm(total=len(paths), unit='img', file=sys.stderr, disable=not progress,
            desc='predict') as bar:
    for start in range(0, len(paths), batch_size):
      chunk = paths[start:start + batch_size]
      loaded = [(path, *((None, error) if error else read_checked(path, limits)))
                for path, error in chunk]
      good = [data for _, data, _ in loaded if data is not None]
      scores = iter(predictor.score_safely(good) if good else [])
      for path, data, error in loaded:
        probability = None
        if data is not None:
          probability, error = next(scores)
        yield row(path, probability, error, predictor.threshold, uncertain_band)
      bar.update(len(chunk))


def row(path: str, probability: Optional[float], error: Optional[str], threshold: float,
        band: float) -> Dict[str, object]:
  if probability is None:
    return {'path': path, 'fake_probability': None, 'label': None, 'uncertain': None,
            'error': error}
  label = features.LABEL_NAMES[features.FAKE if probability >= threshold else features.REAL]
  return {'path': path, 'fake_probability': probability, 'label': label,
          'uncertain': abs(probability - threshold) < band, 'error': None}


def write_rows(rows: Iterable[Dict[str, object]], out: IO[str], fmt: str) -> Dict[str, int]:
  """Writes CSV (header first) or JSON lines as rows come; returns counts for a closing line."""
  counts = {'scored': 0, 'fake': 0, 'uncertain': 0, 'errors': 0}
  writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator='\n') if fmt == 'csv' else None
  if writer:
    writer.writeheader()
  for item in rows:
    if item['error']:
      counts['errors'] += 1
    else:
      counts['scored'] += 1
      counts['fake'] += item['label'] == 'fake'
      counts['uncertain'] += bool(item['uncertain'])
    if writer:
      writer.writerow({k: _csv_value(v) for k, v in item.items()})
    else:
      out.write(json.dumps(item) + '\n')
    out.flush()
  return counts


def _csv_value(value: object) -> str:
  if value is None:
    return ''
  if isinstance(value, bool):
    return str(value).lower()  # as in the JSON lines
  return f'{value:.6f}' if isinstance(value, float) else str(value)
