"""Batch prediction with a pushed model, through the same `serving_default` TF Serving runs.

Every input file gets exactly one output row: its score, or the reason it could not be scored
(missing, empty, too large, too many pixels, not an image TensorFlow decodes, a pipe or device).
Files are checked one by one before batching, so one bad file never fails the batch it would have
been in. A file name that is not valid UTF-8 is written escaped, as ingestion and `evaluate`
list it, so every row can be written.
"""

import csv
import glob
import json
import os
import sys
from typing import IO, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from fakedetect.components import features
from fakedetect.components import image_checks
from fakedetect.components import scoring
from fakedetect.components.image_example_gen import folders

FIELDS = ('path', 'fake_probability', 'label', 'uncertain', 'error')


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


def _read(path: str, limits: image_checks.Limits) -> Tuple[Optional[bytes], Optional[str]]:
  """(bytes, None) for a scorable file, (None, why not) otherwise: `image_checks.read_checked`."""
  try:
    return image_checks.read_checked(path, limits), None
  except image_checks.ImageRejected as rejected:
    return None, str(rejected)


def predict(scorer: scoring.Scorer, paths: Sequence[Tuple[str, Optional[str]]],
            batch_size: int = 64, uncertain_band: float = 0.1,
            limits: image_checks.Limits = image_checks.Limits(),
            progress: bool = False) -> Iterator[Dict[str, object]]:
  """One row per path, in input order: FIELDS, with `error` set when a file was not scored.

  Files are read and checked a batch at a time, so memory holds one batch of images."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  with tqdm(total=len(paths), unit='img', file=sys.stderr, disable=not progress,
            desc='predict') as bar:
    for start in range(0, len(paths), batch_size):
      chunk = paths[start:start + batch_size]
      loaded = [(path, *((None, error) if error else _read(path, limits)))
                for path, error in chunk]
      good = [data for _, data, _ in loaded if data is not None]
      scores = iter(scorer.score_safely(good, batch_size))
      for path, data, error in loaded:
        scored = next(scores) if data is not None else scoring.Scored(error=error)
        yield row(path, scored, scorer.threshold, uncertain_band)
      bar.update(len(chunk))


def row(path: str, scored: scoring.Scored, threshold: float, band: float) -> Dict[str, object]:
  """FIELDS for one file: the label is the model's own is_fake; uncertain when P(fake) lies
  within `band` of the threshold. The path is printable: the bytes of a name that are not valid
  UTF-8 are escaped with backslashes, as `folders.utf8` lists them for ingestion and `evaluate`."""
  path = folders.utf8(path, None)[0]
  if scored.fake_probability is None:
    return {'path': path, 'fake_probability': None, 'label': None, 'uncertain': None,
            'error': scored.error}
  return {'path': path, 'fake_probability': scored.fake_probability,
          'label': features.LABEL_NAMES[scored.is_fake],
          'uncertain': abs(scored.fake_probability - threshold) < band, 'error': None}


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
