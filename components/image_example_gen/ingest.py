"""The per-file work of the image ExampleGen and its Beam graph. No TFX or TensorFlow import here.

The Beam workers import this module (and layouts, features) and neither TFX nor, on the direct
runner, TensorFlow: a worker then starts in ~2 s of CPU instead of ~5 and holds ~200 MB instead
of ~600; executor.py is the TFX side. Work travels in chunks of files, not one element per file:
a worker reads, hashes, checks the header and encodes a chunk, writes the examples to its own
TFRecord shard per split (one compressed write per chunk), and folds the report's tallies into
one accumulator per bundle. Beam's per-element cost is then paid per chunk, and memory stays
bounded: examples go straight to disk, tallies are counts, and only the duplicate index (hash,
path) is shuffled, by hash prefix. The launcher, which has TensorFlow loaded, decodes every
written image in batches (`ShardVerifier`, `verify_examples`): as soon as the workers have
written the last shard, while Beam still groups the duplicate index, else after the pipeline;
then it writes the report (`finish`).
"""
import bisect
import csv
import errno
import functools
import hashlib
import io
import json
import os
import pickle
import re
import threading
import uuid
import warnings
import zlib
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from absl import logging
import apache_beam as beam
from apache_beam.io import tfrecordio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import window
from apache_beam.utils import windowed_value
import numpy as np
from PIL import Image

from fakedetect.components import features
from fakedetect.components.image_example_gen import layouts

DEFAULT_SPLIT_RATIOS = {'train': 70, 'eval': 15, 'test': 15}
DEFAULT_MAX_PIXELS = 50_000_000
REPORT_FILE = 'report.json'
QUARANTINE_FILE = 'quarantine.csv'

# What to do with byte-identical files that a layout's own splits put in different splits.
SAME_SPLIT = 'same_split'  # default: the whole group goes to its most held-out split
KEEP_LAYOUT = 'keep_layout'  # honour the layout's splits; the leak is only reported
DUPLICATE_POLICIES = (SAME_SPLIT, KEEP_LAYOUT)
# Which split a duplicate group crossing the layout's splits is kept in: the most held-out one.
_HELD_OUT_ORDER = ('test', 'eval', 'train')
# Share difference (total variation) between the classes that triggers a bias warning.
BIAS_THRESHOLD = 0.2

# Quarantine reason codes (report.json's `reason`).
REASONS = {
    'empty': 'zero-byte file',
    'not_image': 'not an image, or a hidden/system file that is never read',
    'unsupported_format': 'an image format TensorFlow cannot decode (e.g. TIFF, or WebP in TF 2.16)',
    'truncated': 'the image data ends early',
    'corrupt': 'Pillow or TensorFlow could not decode the image',
    'too_many_pixels': 'the header declares more pixels than max_pixels (decompression bomb)',
    'unsupported_mode': 'a pixel layout TensorFlow would fail on or decode wrongly',
    'unreadable': 'permission, I/O error, symlink loop',
    'unlabelled': "outside the layout's class folders, so no label",
}

# Pillow format name -> the `format` feature. MPO is how Pillow names many camera JPEGs.
_FORMATS = {'JPEG': 'jpeg', 'MPO': 'jpeg', 'PNG': 'png', 'GIF': 'gif', 'BMP': 'bmp',
            'WEBP': 'webp'}
# Signatures of those formats: a file that has one but does not parse is broken, not "not an image".
_SIGNATURES = ((b'\xff\xd8\xff', 'jpeg'), (b'\x89PNG\r\n\x1a\n', 'png'), (b'GIF8', 'gif'))
_SPLIT_NAME = re.compile(r'^[A-Za-z0-9_-]+$')
_QUARANTINE = 'quarantine'
_EXAMPLES = 'examples'
_PROFILE = 'profile'
_HASHES = 'hashes'
TF_RECORD_FILE_NAME = 'data_tfrecord'  # TFX's write_split.DEFAULT_TF_RECORD_FILE_NAME
_TMP_FOLDER = '.shards-tmp'
_RESULTS_FILE = 'results.pickle'
_SHARDS_FILE = 'shards.pickle'  # the list of shards, once all are written (ShardVerifier)
_CHUNK_FILES = 64  # files per Beam element
_VERIFY_BATCH = 256  # examples per decode call of verify_examples
_HASH_PREFIX = 2  # hex digits: duplicate index shuffled in 256 groups
_LOG_EVERY = 1000


def parse_split_ratios(value: Union[None, str, Mapping[str, int]]) -> Dict[str, int]:
  """{split: positive int weight}, in order; weights are percent when they sum to 100."""
  ratios = json.loads(value) if isinstance(value, str) else dict(value or DEFAULT_SPLIT_RATIOS)
  if not isinstance(ratios, dict) or not ratios:
    raise ValueError(f'split_ratios must be a non-empty JSON object, got {value!r}.')
  for name, weight in ratios.items():
    if not _SPLIT_NAME.match(str(name)):
      raise ValueError(f'split name {name!r} must be letters, digits, - or _.')
    if not isinstance(weight, int) or isinstance(weight, bool) or weight <= 0:
      raise ValueError(f'split_ratios[{name!r}] must be a positive integer, got {weight!r}.')
  return ratios


# Candidate (split, weight) pairs for a file, keyed by the layout's own split (None: no split).
SplitPlan = Dict[Optional[str], List[Tuple[str, int]]]


def plan_splits(ratios: Dict[str, int],
                layout_splits: Tuple[str, ...]) -> Tuple[List[str], SplitPlan]:
  """Output split names and, per layout split, where its files may go.

  A layout without splits is split by content hash with `ratios`. A layout with splits keeps them;
  the ratio splits it lacks (e.g. eval for CIFAKE, test for GenImage) are carved out of its train
  split (or out of its only split) by content hash, with the weights in `ratios`.
  """
  if not layout_splits:
    return list(ratios), {None: list(ratios.items())}
  plan: SplitPlan = {s: [(s, 1)] for s in layout_splits}
  missing = [s for s in ratios if s not in layout_splits]
  # Carved out of the layout's train, or out of its only split (e.g. a test-only download).
  source = 'train' if 'train' in layout_splits else (
      layout_splits[0] if len(layout_splits) == 1 else None)
  if missing and source:
    if source not in ratios:
      raise ValueError(f'split_ratios {ratios} must weigh {source} to carve {missing} out of it.')
    plan[source] = [(source, ratios[source])] + [(s, ratios[s]) for s in missing]
  carved = {name for candidates in plan.values() for name, _ in candidates}
  names = [s for s in ratios if s in carved] + [s for s in layout_splits if s not in ratios]
  return names, plan


def describe_plan(names: List[str], plan: SplitPlan) -> Dict[str, str]:
  """{split: where its files come from}, in words, for the report."""
  out = {}
  for layout_split, candidates in plan.items():
    total = sum(weight for _, weight in candidates)
    for name, weight in candidates:
      if layout_split is None:
        out[name] = f'{weight}/{total} of all files, by content hash'
      elif len(candidates) == 1:
        out[name] = f"the layout's own {layout_split} split"
      elif name == layout_split:
        out[name] = (f"the layout's own {layout_split} split, less what was carved out of it "
                     f'({weight}/{total} kept, by content hash)')
      else:
        out[name] = (f"carved out of the layout's {layout_split} split by content hash "
                     f'({weight}/{total} of it): the layout has no {name} split')
  return {name: out[name] for name in names if name in out}


def assign_split(content_hash: str, candidates: List[Tuple[str, int]]) -> str:
  """Deterministic by content, so byte-identical files always share a split."""
  if len(candidates) == 1:
    return candidates[0][0]
  bounds, total = [], 0
  for _, weight in candidates:
    total += weight
    bounds.append(total)
  return candidates[bisect.bisect(bounds, int(content_hash, 16) % total)][0]


class _Reject(Exception):
  """A file that will not be ingested: becomes one quarantine record."""

  def __init__(self, reason: str, detail: str):
    super().__init__(detail)
    assert reason in REASONS, reason
    self.reason, self.detail = reason, detail


_BYTE = [bytes((i,)) for i in range(128)]  # varints below 128 are one byte
# Tags of length-delimited fields 1, 2 and 3: (number << 3) | 2.
_FIELD_1, _FIELD_2, _FIELD_3 = b'\x0a', b'\x12', b'\x1a'


def _varint(value: int) -> bytes:
  if 0 <= value < 128:
    return _BYTE[value]
  value &= (1 << 64) - 1  # int64 two's complement, as protobuf encodes a negative
  out = bytearray()
  while value > 0x7f:
    out.append(value & 0x7f | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
  return tag + _varint(len(payload)) + payload


@functools.lru_cache(maxsize=None)
def _key_field(key: str) -> bytes:
  return _field(_FIELD_1, key.encode('utf-8'))


def serialize_example(values: Mapping[str, Union[bytes, str, int]]) -> bytes:
  """The serialized tf.train.Example of {key: bytes, str or int}, written without TensorFlow.

  Example{features = 1: Features{feature = 1: map<string, Feature>}}, Feature{bytes_list = 1 |
  int64_list = 3}, BytesList{value = 1}, Int64List{packed value = 1}. The Beam workers build
  examples with this so that they never import TensorFlow (3 to 8 s of CPU and ~400 MB each);
  it is also 3x faster than building the proto message.
  """
  entries = []
  for key, value in values.items():
    if isinstance(value, int):
      feature = _field(_FIELD_3, _field(_FIELD_1, _varint(value)))
    else:
      data = value.encode('utf-8') if isinstance(value, str) else value
      feature = _field(_FIELD_1, _field(_FIELD_1, data))
    entries.append(_field(_FIELD_1, _key_field(key) + _field(_FIELD_2, feature)))
  return _field(_FIELD_1, b''.join(entries))


def _tf():
  """TensorFlow, imported on first use: workers that only inspect files never load it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf


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


class ImageReader:
  """Reads, validates and encodes one file: the work of the ExampleGen, without Beam.

  `inspect` does all of it but decode the pixels, without TensorFlow: label, bytes, content hash,
  Pillow's header checks, the example. `read` adds TensorFlow's decode (`check_decodes`), one
  file at a time: the plain-loop benchmark calls it, and so do Beam workers on a distributed
  runner. On the direct runner the workers only inspect, and the launcher decodes what they wrote
  in one batched pass (`verify_examples`): the same check on the same bytes.
  """

  def __init__(self, data_dir: str, layout: layouts.Layout, plan: SplitPlan, max_pixels: int):
    self._data_dir = data_dir
    self._layout = layout
    self._plan = plan
    self._max_pixels = max_pixels

  def setup(self, single_threaded: bool = False) -> None:
    # Pillow's own bomb guard is process-wide; make it agree with ours (it raises past 2x).
    Image.MAX_IMAGE_PIXELS = self._max_pixels
    if single_threaded:  # a Beam worker: parallelism comes from the workers, not TF's pools
      tf = _tf()
      try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
      except RuntimeError:  # TensorFlow already ran an op in this process
        pass

  def read(self, entry: layouts.Entry, held_out: Optional[Mapping[str, str]] = None):
    """(split, serialized tf.Example, meta) of an image TensorFlow decodes, else _Reject.

    held_out: {content hash: layout split} for duplicate groups kept in one split.
    """
    split, data, meta = self._checked_header(entry, held_out)
    check_decodes(data, meta['format'])
    return split, _example(data, meta), meta

  def inspect(self, entry: layouts.Entry, held_out: Optional[Mapping[str, str]] = None):
    """`read` without the pixel decode, and without TensorFlow."""
    split, data, meta = self._checked_header(entry, held_out)
    return split, _example(data, meta), meta

  def _checked_header(self, entry: layouts.Entry, held_out: Optional[Mapping[str, str]]):
    rel_path, problem = entry
    if problem:
      raise _Reject(*layouts.problem_reason(problem))
    if layouts.is_system_file(rel_path):
      raise _Reject('not_image', 'hidden or system file, not read')
    labelled = self._layout.parse(rel_path)
    if labelled is None:
      raise _Reject('unlabelled', f'not inside the class folders of the {self._layout.name} '
                    'layout, so it has no label')
    data = self.read_bytes(rel_path)
    if not data:
      raise _Reject('empty', 'the file has zero bytes')
    content_hash = hashlib.sha256(data).hexdigest()
    fmt, height, width, mode = self._validate_header(data)
    layout_split = (held_out or {}).get(content_hash, labelled.split)
    split = assign_split(content_hash, self._plan[layout_split])
    meta = {'path': rel_path, 'hash': content_hash, 'split': split,
            'layout_split': labelled.split, 'class': features.LABEL_NAMES[labelled.label],
            'label': labelled.label, 'source': labelled.source, 'format': fmt, 'mode': mode,
            'height': height, 'width': width}
    return split, data, meta

  def hash_and_split(self, entry: layouts.Entry) -> Iterator[Tuple[str, str]]:
    """(content hash, layout split) of a labelled readable file; nothing for the others."""
    rel_path, problem = entry
    labelled = None if problem or layouts.is_system_file(rel_path) else self._layout.parse(
        rel_path)
    if labelled is None or labelled.split is None:
      return
    try:
      data = self.read_bytes(rel_path)
    except _Reject:
      return
    if data:
      yield hashlib.sha256(data).hexdigest(), labelled.split

  def read_bytes(self, rel_path: str) -> bytes:
    path = layouts.join(self._data_dir, rel_path)
    try:
      if layouts.is_remote(self._data_dir):
        with _tf().io.gfile.GFile(path, 'rb') as f:
          return f.read()
      with open(path, 'rb') as f:
        return f.read()
    except OSError as e:
      if e.errno == errno.ELOOP:
        raise _Reject('unreadable', 'symlink loop') from None
      raise _Reject('unreadable', f'{type(e).__name__}: {e.strerror or e}') from None
    except Exception as e:  # pylint: disable=broad-except
      raise _Reject('unreadable', f'{type(e).__name__}: {e}') from None

  def _validate_header(self, data: bytes) -> Tuple[str, int, int, str]:
    """(format, height, width, mode) from Pillow's reading of the header, else _Reject.

    Only the header is read (size, format, mode), so a bomb is refused before any pixel is
    decoded; the pixels are decoded once, later, by TensorFlow's own decoder (`check_decodes`),
    the one training uses (stricter than Pillow on some files, e.g. PNG CRCs). The resize of
    `features.decode_and_resize` is not run: it cannot fail on a decoded image.
    """
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      try:
        image = Image.open(io.BytesIO(data))
      except Image.DecompressionBombError as e:  # Pillow's own guard, past 2x max_pixels
        raise _Reject('too_many_pixels', f'Pillow refused the header: {e}') from None
      except Exception as e:  # pylint: disable=broad-except
        signed = next((f for magic, f in _SIGNATURES if data.startswith(magic)), None)
        if signed:
          raise _Reject('corrupt', f'{signed} signature but an unreadable header: {e}') from None
        raise _Reject('not_image', 'Pillow does not recognise the content as an image') from None
      width, height = image.size
      if width * height > self._max_pixels:
        raise _Reject('too_many_pixels', f'header declares {width}x{height} = '
                      f'{width * height:,} pixels > max_pixels {self._max_pixels:,}')
      fmt = _FORMATS.get(image.format)
      if fmt is None:
        raise _Reject('unsupported_format', f'{image.format} image; only '
                      f'{", ".join(sorted(set(_FORMATS.values())))} are ingested')
      mode = image.mode
      if fmt == 'bmp':
        problem = _bmp_problem(data, image)
        if problem:
          raise _Reject('unsupported_mode', problem)
    return fmt, height, width, mode


def _example(data: bytes, meta: Mapping[str, Any]) -> bytes:
  return serialize_example({
      features.IMAGE_KEY: data,
      features.LABEL_KEY: meta['label'],
      features.SOURCE_KEY: meta['source'],
      features.FORMAT_KEY: meta['format'],
      features.HEIGHT_KEY: meta['height'],
      features.WIDTH_KEY: meta['width'],
      features.HASH_KEY: meta['hash'],
      features.PATH_KEY: meta['path'],
      features.SIZE_BUCKET_KEY: features.size_bucket(meta['height'], meta['width']),
  })


def _classify_with_pillow(data: bytes) -> None:
  """Decodes the pixels with Pillow: _Reject('truncated' or 'corrupt') if it fails."""
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', Image.DecompressionBombWarning)
    try:
      Image.open(io.BytesIO(data)).load()
    except Image.DecompressionBombError as e:
      raise _Reject('too_many_pixels', f'Pillow: {e}') from None
    except Exception as e:  # pylint: disable=broad-except
      if 'truncated' in str(e).lower() or isinstance(e, EOFError):
        raise _Reject('truncated', f'Pillow: {type(e).__name__}: {e}') from None
      raise _Reject('corrupt', f'Pillow could not decode it: {type(e).__name__}: {e}') from None


def decode_reject(error: Exception, data: bytes, fmt: str) -> _Reject:
  """Why an image whose header Pillow accepted failed TensorFlow's decode."""
  lines = re.sub(r'\{\{.*?\}\}\s*', '', str(error)).strip().splitlines()
  message = lines[0] if lines else type(error).__name__
  if 'Unknown image file format' in str(error):
    return _Reject('unsupported_format', f'{fmt}: TensorFlow could not decode it ({message})')
  try:
    _classify_with_pillow(data)  # truncated or corrupt, in Pillow's words
  except _Reject as reject:
    return reject
  return _Reject('corrupt', f'Pillow reads it but TensorFlow could not decode it: {message}')


def _decode(contents):
  """TensorFlow's decoder, the one training uses: one kernel, without tf.io.decode_image's
  Python dispatch (the same op, DecodeImage)."""
  return _tf().raw_ops.DecodeImage(contents=contents, channels=features.CHANNELS,
                                   expand_animations=False)


def check_decodes(data: bytes, fmt: str) -> None:
  """TensorFlow's decoder, the one training uses, is the one check every image passes."""
  try:
    _decode(_tf().constant(data))  # a tensor takes the op's fast path; bytes convert slower
  except Exception as e:  # pylint: disable=broad-except
    raise decode_reject(e, data, fmt) from None


def quarantine_record(rel_path: str, reject: '_Reject') -> Dict[str, str]:
  return {'path': rel_path, 'reason': reject.reason, 'detail': reject.detail}


class _IngestChunks(beam.DoFn):
  """Chunks of files in; TFRecord shards (main output), quarantines, tallies and hashes out.

  Per bundle, each split gets one shard file in a temporary folder, named in finish_bundle; the
  report's tallies are folded into one ProfileFn accumulator and the duplicate index into one
  list per hash prefix, also emitted in finish_bundle. With `emit_examples` (a fixed num_shards)
  the serialized examples are yielded instead, for WriteToTFRecord to shard. Shards are written
  with Beam's TFRecord framing and gzip, so a worker that does not `check_decodes` never imports
  TensorFlow.
  """

  def __init__(self, reader: ImageReader, split_names: List[str], examples_uri: str,
               emit_examples: bool, check_decodes_here: bool):
    self._reader = reader
    self._check = check_decodes_here
    self._split_index = {name: i for i, name in enumerate(split_names)}
    self._tmp = os.path.join(examples_uri, _TMP_FOLDER)
    self._emit_examples = emit_examples
    namespace = 'ImageExampleGen'
    self._ingested = beam.metrics.Metrics.counter(namespace, 'ingested')
    self._quarantined = beam.metrics.Metrics.counter(namespace, 'quarantined')
    self._seen = self._seen_ingested = 0

  def setup(self):
    self._reader.setup(single_threaded=self._check)

  def start_bundle(self):
    self._writers: Dict[str, Tuple[Any, str, List[int]]] = {}
    self._profile = ProfileFn().create_accumulator()
    self._hashes: Dict[str, List[Tuple[str, str, str, Optional[str], str]]] = {}

  def process(self, chunk: List[layouts.Entry],
              held_out: Optional[Mapping[str, str]] = None) -> Iterator[Any]:
    read = self._reader.read if self._check else self._reader.inspect
    framed: Dict[str, io.BytesIO] = {}  # per split: one compressed write per chunk
    for entry in chunk:
      self._seen += 1
      try:
        split, example, meta = read(entry, held_out)
      except _Reject as r:
        self._quarantined.inc()
        yield beam.pvalue.TaggedOutput(_QUARANTINE, quarantine_record(entry[0], r))
        continue
      self._ingested.inc()
      self._seen_ingested += 1
      if self._emit_examples:
        yield beam.pvalue.TaggedOutput(_EXAMPLES, (self._split_index[split], example))
      else:
        tfrecordio._TFRecordUtil.write_record(  # pylint: disable=protected-access
            framed.setdefault(split, io.BytesIO()), example)
        self._shard(split)[2][0] += 1
      ProfileFn.fold(self._profile, meta)
      self._hashes.setdefault(meta['hash'][:_HASH_PREFIX], []).append(
          (meta['hash'], meta['path'], split, meta['layout_split'], meta['class']))
      if self._seen % _LOG_EVERY == 0:
        logging.info('ImageExampleGen: %d files read by this worker (%d ingested).',
                     self._seen, self._seen_ingested)
    for split, records in framed.items():
      self._shard(split)[0].write(records.getvalue())

  def _shard(self, split: str):
    """(gzip handle, path, [examples written]) of this bundle's shard of split."""
    if split not in self._writers:
      path = FileSystems.join(self._tmp, f'{split}-{uuid.uuid4().hex}.gz')
      handle = FileSystems.create(path, compression_type=CompressionTypes.GZIP)
      self._writers[split] = (handle, path, [0])
    return self._writers[split]

  def finish_bundle(self):
    def out(tag, value):
      wrapped = windowed_value.WindowedValue(value, window.GlobalWindow().max_timestamp(),
                                             [window.GlobalWindow()])
      return beam.pvalue.TaggedOutput(tag, wrapped) if tag else wrapped
    for split, (writer, path, count) in sorted(self._writers.items()):
      writer.close()
      yield out(None, (split, path, count[0]))
    if self._profile['counts']:
      yield out(_PROFILE, self._profile)
    for prefix, records in sorted(self._hashes.items()):
      yield out(_HASHES, (prefix, records))


def _duplicate_groups(item) -> Iterator[Dict[str, Any]]:
  """(hash prefix, [records of one bundle]) -> the groups of identical files with that prefix."""
  _, batches = item
  by_hash: Dict[str, List[Tuple]] = {}
  for records in batches:
    for record in records:
      by_hash.setdefault(record[0], []).append(record[1:])
  for content_hash, members in by_hash.items():
    if len(members) > 1:
      yield _duplicate_group((content_hash, members))


class _SplitsPerHash(beam.CombineFn):
  """The set of layout splits a content hash occurs in."""

  def create_accumulator(self):
    return set()

  def add_input(self, accumulator, split):
    accumulator.add(split)
    return accumulator

  def merge_accumulators(self, accumulators):
    return set().union(*accumulators)

  def extract_output(self, accumulator):
    return sorted(accumulator)


def _held_out_split(splits: List[str]) -> str:
  ranked = [s for s in _HELD_OUT_ORDER if s in splits]
  return ranked[0] if ranked else splits[0]


# Per class tallies: name -> meta key. Dimensions are counted per value (a dimension has few
# distinct values), so the medians are exact and memory stays bounded by the distinct sizes.
_PROFILE_KEYS = {'sources': 'source', 'formats': 'format', 'modes': 'mode',
                 'size_buckets': None, 'widths': 'width', 'heights': 'height'}


class ProfileFn(beam.CombineFn):
  """Counts per split and class, and per class sources, formats, modes and sizes."""

  def create_accumulator(self):
    return {'counts': {}, 'classes': {}}

  def add_input(self, acc, meta):  # pylint: disable=arguments-renamed
    return ProfileFn.fold(acc, meta)

  @staticmethod
  def fold(acc, meta, n: int = 1):
    """Counts one image (n=-1: takes one back, as if it had never been counted)."""
    by_class = acc['counts'].setdefault(meta['split'], {})
    by_class[meta['class']] = by_class.get(meta['class'], 0) + n
    tables = acc['classes'].setdefault(meta['class'], {k: {} for k in _PROFILE_KEYS})
    for table, key in _PROFILE_KEYS.items():
      value = (features.size_bucket(meta['height'], meta['width']) if key is None
               else meta[key])
      tables[table][value] = tables[table].get(value, 0) + n
      if not tables[table][value]:
        del tables[table][value]
    if not tables['formats']:
      del acc['classes'][meta['class']]
    return acc

  def merge_accumulators(self, accumulators):
    out = self.create_accumulator()
    for acc in accumulators:
      for split, by_class in acc['counts'].items():
        mine = out['counts'].setdefault(split, {})
        for name, n in by_class.items():
          mine[name] = mine.get(name, 0) + n
      for name, tables in acc['classes'].items():
        mine = out['classes'].setdefault(name, {k: {} for k in _PROFILE_KEYS})
        for table, values in tables.items():
          for value, n in values.items():
            mine[table][value] = mine[table].get(value, 0) + n
    return out

  def extract_output(self, acc):
    return acc


class _MergeProfiles(ProfileFn):
  """Combines the per-bundle ProfileFn accumulators the workers emit."""

  def add_input(self, acc, other):
    return self.merge_accumulators([acc, other])


def _median(histogram: Dict[int, int]) -> float:
  """The median of the values a {value: count} histogram holds."""
  total = sum(histogram.values())
  wanted = {(total - 1) // 2, total // 2}
  picked, seen = [], 0
  for value in sorted(histogram):
    start, seen = seen, seen + histogram[value]
    picked += [value for i in wanted if start <= i < seen]
  return sum(picked) / len(picked)


def _shares(counts: Dict[str, int]) -> Dict[str, float]:
  total = sum(counts.values())
  return {k: round(n / total, 4) for k, n in sorted(counts.items(), key=lambda kv: -kv[1])}


def class_profile(tables: Dict[str, Dict[Any, int]]) -> Dict[str, Any]:
  """What report.json says about one class: shares of formats, modes, size buckets; sizes."""
  n = sum(tables['formats'].values())
  return {
      'images': n,
      'format_shares': _shares(tables['formats']),
      'mode_shares': _shares(tables['modes']),
      'size_bucket_shares': _shares(tables['size_buckets']),
      'width': {'min': min(tables['widths']), 'median': _median(tables['widths']),
                'max': max(tables['widths'])},
      'height': {'min': min(tables['heights']), 'median': _median(tables['heights']),
                 'max': max(tables['heights'])},
  }


def _describe_shares(shares: Dict[str, float], upper: bool) -> str:
  shown = [f'{share:.0%} {name.upper() if upper else name}'
           for name, share in shares.items() if share >= 0.005]
  return ', '.join(shown[:3]) + (', ...' if len(shown) > 3 else '')


def _distance(a: Dict[str, float], b: Dict[str, float]) -> float:
  """Total variation distance between two share tables: 0 same, 1 disjoint."""
  return sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b)) / 2


def bias_warnings(profile: Dict[str, Dict[str, Any]]) -> List[str]:
  """Sentences on what differs between the classes besides their content."""
  if not all(name in profile for name in features.LABEL_NAMES):
    return []
  real, fake = (profile[name] for name in features.LABEL_NAMES)
  names = features.LABEL_NAMES
  out = []
  for key, upper, what in (
      ('format_shares', True, 'the container (file format and its compression) instead of '
       'the content'),
      ('mode_shares', False, 'the colour mode (greyscale, alpha, palette) instead of the content')):
    if _distance(real[key], fake[key]) >= BIAS_THRESHOLD:
      out.append(f'{names[0]} is {_describe_shares(real[key], upper)} but {names[1]} is '
                 f'{_describe_shares(fake[key], upper)}: a model can learn {what}.')
  size = {name: (profile[name]['width']['median'], profile[name]['height']['median'])
          for name in names}
  ratio = max(max(a, b) / max(min(a, b), 1) for a, b in zip(*size.values()))
  if (ratio >= 1.5 or _distance(real['size_bucket_shares'], fake['size_bucket_shares'])
      >= BIAS_THRESHOLD):
    out.append(
        f'{names[0]} images have a median size of {size[names[0]][0]:g}x{size[names[0]][1]:g} '
        f'({_describe_shares(real["size_bucket_shares"], False)}) but {names[1]} '
        f'{size[names[1]][0]:g}x{size[names[1]][1]:g} '
        f'({_describe_shares(fake["size_bucket_shares"], False)}): a model can learn the image '
        'size (and resizing traces) instead of the content.')
  return out


def duplicate_warnings(groups: List[Dict[str, Any]]) -> List[str]:
  out = []
  moved = [g for g in groups if g['kept_in_one_split']]
  crossing = [g for g in groups if g['crosses_splits']]
  labels = [g for g in groups if g['crosses_classes']]
  if moved:
    out.append(f"{len(moved)} group(s) of byte-identical files lay in more than one of the "
               "layout's splits; each group was kept in its most held-out split to prevent "
               f"leakage, e.g. {', '.join(moved[0]['paths'][:3])} -> {moved[0]['splits'][0]}.")
  if crossing:
    out.append(f'{len(crossing)} group(s) of byte-identical files are in more than one split '
               f"(leakage: evaluation sees training images), e.g. "
               f"{', '.join(crossing[0]['paths'][:3])} in {' and '.join(crossing[0]['splits'])}.")
  if labels:
    out.append(f'{len(labels)} group(s) of byte-identical files carry both labels (label '
               f"noise), e.g. {', '.join(labels[0]['paths'][:3])}.")
  quiet = [g for g in groups if not (g['crosses_splits'] or g['crosses_classes'])]
  if quiet:
    out.append(f'{len(quiet)} group(s) of byte-identical files '
               f"({sum(len(g['paths']) for g in quiet)} files) stay within one split and class; "
               'they do not leak, but each copy weighs again in training and metrics, e.g. '
               f"{', '.join(quiet[0]['paths'][:3])}.")
  return out


def _duplicate_group(item: Tuple[str, List[Tuple[str, str, Optional[str], str]]]
                     ) -> Dict[str, Any]:
  content_hash, members = item
  splits = sorted({split for _, split, _, _ in members})
  layout_splits = sorted({s for _, _, s, _ in members if s is not None})
  classes = sorted({class_name for _, _, _, class_name in members})
  return {'content_hash': content_hash, 'paths': sorted(path for path, _, _, _ in members),
          'splits': splits, 'crosses_splits': len(splits) > 1,
          'kept_in_one_split': len(layout_splits) > 1 and len(splits) == 1,
          'classes': classes, 'crosses_classes': len(classes) > 1}


def _finalize_shards(shards: List[Tuple[str, str, int]], split_names: List[str],
                     examples_uri: str) -> None:
  """Moves the bundles' shard files to Split-<name>/data_tfrecord-i-of-n.gz, as TFX names them.

  Only shards of committed bundles are listed, so a retried bundle's leftovers are dropped with
  the temporary folder. A split without images still gets one (empty) file, as TFX writes.
  """
  tf = _tf()
  for name in split_names:
    mine = sorted(path for split, path, _ in shards if split == name)
    folder = os.path.join(examples_uri, f'Split-{name}')
    tf.io.gfile.makedirs(folder)
    if not mine:
      with tf.io.TFRecordWriter(os.path.join(folder, f'{TF_RECORD_FILE_NAME}-00000-of-00001.gz'),
                                tf.io.TFRecordOptions(compression_type='GZIP')):
        pass
    for i, path in enumerate(mine):
      tf.io.gfile.rename(path, os.path.join(
          folder, f'{TF_RECORD_FILE_NAME}-{i:05d}-of-{len(mine):05d}.gz'), overwrite=True)


def verify_examples(files: Mapping[str, List[str]], expected: Mapping[str, int], max_pixels: int
                    ) -> List[Tuple[Dict[str, Any], _Reject]]:
  """TensorFlow decodes every image the workers wrote: `check_decodes`, batched per split.

  files: {split: its shard files}; expected: {split: how many examples they hold}.
  The same decoder on the same bytes as the one-file-at-a-time check, run by tf.data in C++
  threads of this process, so that the Beam workers never import TensorFlow. A split with fewer
  decodable images than `expected` is read again example by example: the ones that fail are
  dropped from their files and returned as (meta, reject). Memory stays bounded: files stream.
  """
  tf = _tf()
  Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow classifies the failures, as in a worker
  spec = {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}

  def decoded(records):
    """How many of a batch of examples decode: all of them, or an error drops the batch."""
    images = tf.io.parse_example(records, spec)[features.IMAGE_KEY]
    heights = tf.map_fn(lambda image: tf.shape(_decode(image))[0], images,
                        fn_output_signature=tf.int32, parallel_iterations=1)  # tf.data: parallel
    # Counted from the decoded heights, so that no graph optimization can skip the decode.
    return tf.reduce_sum(tf.cast(heights > 0, tf.int64))

  failures = []
  for split, count in expected.items():
    paths = sorted(files.get(split, []))
    # Batches: tf.data's per-element cost is most of a small image's decode.
    decodable = (tf.data.TFRecordDataset(paths, compression_type='GZIP', buffer_size=1 << 20)
                 .batch(_VERIFY_BATCH)
                 .map(decoded, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
                 .ignore_errors()
                 .reduce(np.int64(0), lambda n, k: n + k))
    if int(decodable) != count:
      for path in paths:
        failures += _drop_undecodable(path, split)
  return failures


class ShardVerifier(threading.Thread):
  """Runs `verify_examples` on the workers' shards while the Beam pipeline is still running.

  The shards are complete once ReadAndValidate has finished, but Beam then still groups the
  duplicate index, combines the report and shuts its workers down (~1.5 s on CIFAKE, on cores
  that are mostly idle). The pipeline announces the shard list in a file (`_announce_shards`);
  this thread, started in the launcher beside the pipeline, waits for that file and decodes.
  `failures()` after the pipeline: the result, or None if the shards were never announced.
  """

  def __init__(self, examples_uri: str, max_pixels: int):
    super().__init__(name='ShardVerifier', daemon=True)
    self._announced = os.path.join(examples_uri, _TMP_FOLDER, _SHARDS_FILE)
    self._max_pixels = max_pixels
    self._ended = threading.Event()
    self._result: Optional[List[Tuple[Dict[str, Any], _Reject]]] = None
    self._error: Optional[BaseException] = None

  def run(self) -> None:
    try:
      while not FileSystems.exists(self._announced):
        if self._ended.wait(0.05) and not FileSystems.exists(self._announced):
          return  # the pipeline ended (or failed) without announcing shards
      with FileSystems.open(self._announced) as f:
        shards = pickle.load(f)
      files: Dict[str, List[str]] = {}
      expected: Dict[str, int] = {}
      for split, path, count in shards:
        files.setdefault(split, []).append(path)
        expected[split] = expected.get(split, 0) + count
      self._result = verify_examples(files, expected, self._max_pixels)
    except BaseException as e:  # pylint: disable=broad-except
      self._error = e  # raised in the launcher's thread, by failures()

  def stop(self) -> None:
    """Ends the wait (if it still waits) and the thread."""
    self._ended.set()
    if self.is_alive():
      self.join()

  def failures(self) -> Optional[List[Tuple[Dict[str, Any], _Reject]]]:
    self.stop()
    if self._error is not None:
      raise self._error
    return self._result


def _announce_shards(shards: List[Tuple[str, str, int]], path: str) -> None:
  """Writes the shard list for the ShardVerifier, atomically: it reads the file once it exists."""
  partial = path + '.partial'
  with FileSystems.create(partial) as f:
    pickle.dump(shards, f)
  FileSystems.rename([partial], [path])


def _drop_undecodable(path: str, split: str) -> List[Tuple[Dict[str, Any], _Reject]]:
  """Rewrites one shard without the examples TensorFlow cannot decode; returns those."""
  tf = _tf()
  failed = []
  rewritten = path + '.rewrite'
  with tf.io.TFRecordWriter(rewritten, tf.io.TFRecordOptions(compression_type='GZIP')) as out:
    for record in tf.data.TFRecordDataset(path, compression_type='GZIP'):
      record = record.numpy()
      feature = tf.train.Example.FromString(record).features.feature
      value = lambda key: feature[key].bytes_list.value[0]  # pylint: disable=cell-var-from-loop
      number = lambda key: feature[key].int64_list.value[0]  # pylint: disable=cell-var-from-loop
      data, fmt = value(features.IMAGE_KEY), value(features.FORMAT_KEY).decode()
      try:
        check_decodes(data, fmt)
      except _Reject as reject:
        with warnings.catch_warnings():
          warnings.simplefilter('ignore', Image.DecompressionBombWarning)
          mode = Image.open(io.BytesIO(data)).mode
        meta = {'path': value(features.PATH_KEY).decode(), 'split': split,
                'hash': value(features.HASH_KEY).decode(),
                'class': features.LABEL_NAMES[number(features.LABEL_KEY)],
                'source': value(features.SOURCE_KEY).decode(), 'format': fmt, 'mode': mode,
                'height': number(features.HEIGHT_KEY), 'width': number(features.WIDTH_KEY)}
        failed.append((meta, reject))
        continue
      out.write(record)
  if failed:
    tf.io.gfile.rename(rewritten, path, overwrite=True)
  else:
    tf.io.gfile.remove(rewritten)
  return failed


def _save_results(_, profile, duplicates, quarantined, shards, path: str) -> None:
  """What the workers found, for the launcher to verify and report (`finish`)."""
  with FileSystems.create(path) as f:
    pickle.dump({'profile': profile, 'duplicates': duplicates, 'quarantined': quarantined,
                 'shards': shards}, f)


def finish(examples_uri: str, report_uri: str, split_names: List[str], header: Dict[str, Any],
           verify: bool, verifier: Optional[ShardVerifier] = None) -> None:
  """After the Beam pipeline, in the launcher: decodes verified (by `verifier` if it could),
  shards named, report written."""
  tf = _tf()
  tmp = os.path.join(examples_uri, _TMP_FOLDER)
  with tf.io.gfile.GFile(os.path.join(tmp, _RESULTS_FILE), 'rb') as f:
    results = pickle.load(f)
  failures = verifier.failures() if verifier else None  # before the shards move
  if results['shards'] is not None:
    _finalize_shards(results['shards'], split_names, examples_uri)
  tf.io.gfile.rmtree(tmp)
  profile = results['profile']
  if verify:
    if failures is None:
      expected = {s: sum(profile['counts'].get(s, {}).values()) for s in split_names}
      failures = verify_examples(
          {s: tf.io.gfile.glob(os.path.join(examples_uri, f'Split-{s}', '*.gz'))
           for s in split_names}, expected, header['max_pixels'])
    for meta, reject in failures:
      ProfileFn.fold(profile, meta, -1)
      results['quarantined'].append(quarantine_record(meta['path'], reject))
    # Identical bytes decode alike: a failed file's duplicates all failed with it.
    failed = {meta['hash'] for meta, _ in failures}
    results['duplicates'] = [g for g in results['duplicates'] if g['content_hash'] not in failed]
  _write_report(profile, results['duplicates'], results['quarantined'], header, split_names,
                report_uri)


def _write_report(profile, duplicates, quarantined, header: Dict[str, Any], split_names,
                  report_uri: str) -> None:
  """Runs once, after every file went through and every decode was checked."""
  tf = _tf()
  counts = {s: {c: 0 for c in features.LABEL_NAMES} for s in split_names}
  for split, by_class in profile['counts'].items():
    counts[split].update(by_class)
  classes = {c: profile['classes'].get(c) for c in features.LABEL_NAMES}
  reasons: Dict[str, int] = {}
  for record in quarantined:
    reasons[record['reason']] = reasons.get(record['reason'], 0) + 1
  duplicates = sorted(duplicates, key=lambda g: g['paths'][0])
  per_class = {c: class_profile(t) for c, t in classes.items() if t}
  warnings_ = bias_warnings(per_class) + duplicate_warnings(duplicates)
  for split, by_class in counts.items():
    missing = [c for c, n in by_class.items() if not n]
    if missing and sum(by_class.values()):
      warnings_.append(f"Split {split!r} has no {' or '.join(missing)} image: its metrics "
                       'will be one-sided.')
  report = dict(header)
  report.update({
      'ingested': sum(sum(by_class.values()) for by_class in counts.values()),
      'quarantined': sorted(quarantined, key=lambda r: r['path']),
      'quarantine_reasons': dict(sorted(reasons.items())),
      'counts': counts,
      'sources': {c: dict(sorted((t or {}).get('sources', {}).items())) for c, t in classes.items()},
      'formats': {c: dict(sorted((t or {}).get('formats', {}).items())) for c, t in classes.items()},
      'modes': {c: dict(sorted((t or {}).get('modes', {}).items())) for c, t in classes.items()},
      'profile': per_class,
      'duplicates': duplicates,
      'warnings': warnings_,
  })
  with tf.io.gfile.GFile(os.path.join(report_uri, REPORT_FILE), 'w') as f:
    f.write(json.dumps(report, indent=2))
  buffer = io.StringIO()
  writer = csv.writer(buffer)
  writer.writerow(['path', 'reason', 'detail'])
  writer.writerows([r['path'], r['reason'], r['detail']] for r in report['quarantined'])
  with tf.io.gfile.GFile(os.path.join(report_uri, QUARANTINE_FILE), 'w') as f:
    f.write(buffer.getvalue())


def build_pipeline(pipeline, data_dir: str, layout: layouts.Layout, entries: List[layouts.Entry],
                   split_names: List[str], plan: SplitPlan, max_pixels: int,
                   duplicate_policy: str, num_shards: int, examples_uri: str,
                   check_decodes_here: bool) -> None:
  """The Beam graph: read chunks of files in parallel, write split shards, combine the report.

  check_decodes_here: the workers run TensorFlow's decode themselves (`ImageReader.read`);
  otherwise they only `inspect`, the shard list is announced for a `ShardVerifier` as soon as
  it is complete, and `finish` gets the verified decodes.
  """
  reader = ImageReader(data_dir, layout, plan, max_pixels)
  # Folders list one class after the other; written in that order, a split's shards hold long
  # single-class runs that a trainer's shuffle buffer cannot mix (batch-norm then learns the
  # batch's class). A path-hash order mixes classes and sources in every chunk and shard.
  entries = sorted(entries, key=lambda entry: hashlib.sha1(entry[0].encode('utf-8',
                                                                        'surrogateescape')).digest())
  # Each chunk goes in pickled by the C pickler and zlib-compressed: Beam would pickle the paths
  # with its pure-Python pickler and bzip2 them, ~2.5 s of the launcher's CPU for 100k files.
  # Create reshuffles: work spreads out.
  chunks = [zlib.compress(pickle.dumps(entries[i:i + _CHUNK_FILES], pickle.HIGHEST_PROTOCOL), 1)
            for i in range(0, len(entries), _CHUNK_FILES)]
  files = (pipeline
           | 'ListFiles' >> beam.Create(chunks)
           | 'Unpack' >> beam.Map(lambda chunk: pickle.loads(zlib.decompress(chunk))))
  side_inputs = []
  if duplicate_policy == SAME_SPLIT and len(layout.splits) > 1:
    # A first, cheap pass (read and hash, no decode) finds identical files the layout put in
    # different splits; only those (few) travel to the workers, as a side input.
    side_inputs.append(beam.pvalue.AsDict(
        files
        | 'HashFiles' >> beam.FlatMap(
            lambda chunk: (kv for entry in chunk for kv in reader.hash_and_split(entry)))
        | 'SplitsPerHash' >> beam.CombinePerKey(_SplitsPerHash())
        | 'CrossingSplits' >> beam.Filter(lambda kv: len(kv[1]) > 1)
        | 'HeldOutSplit' >> beam.MapTuple(lambda h, splits: (h, _held_out_split(splits)))))
  emit_examples = num_shards > 0
  results = files | 'ReadAndValidate' >> beam.ParDo(
      _IngestChunks(reader, split_names, examples_uri, emit_examples, check_decodes_here),
      *side_inputs).with_outputs(
          _QUARANTINE, _EXAMPLES, _PROFILE, _HASHES, main='shards')
  if emit_examples:
    by_split = results[_EXAMPLES] | 'PartitionBySplit' >> beam.Partition(
        lambda item, _: item[0], len(split_names))
    for index, name in enumerate(split_names):
      _ = (by_split[index]
           | f'Serialized[{name}]' >> beam.Values()
           | f'WriteSplit[{name}]' >> beam.io.WriteToTFRecord(
               os.path.join(examples_uri, f'Split-{name}', TF_RECORD_FILE_NAME),
               file_name_suffix='.gz', num_shards=num_shards))
    shards = pipeline | 'NoShards' >> beam.Create([None])
  else:
    shards = results.shards | 'ShardsToList' >> beam.combiners.ToList()
    if not check_decodes_here:
      _ = shards | 'AnnounceShards' >> beam.Map(
          _announce_shards, path=os.path.join(examples_uri, _TMP_FOLDER, _SHARDS_FILE))
  profile = results[_PROFILE] | 'Profile' >> beam.CombineGlobally(_MergeProfiles())
  duplicates = (results[_HASHES]
                | 'GroupByHashPrefix' >> beam.GroupByKey()
                | 'DuplicateGroups' >> beam.FlatMap(_duplicate_groups)
                | 'DuplicatesToList' >> beam.combiners.ToList())
  quarantined = results[_QUARANTINE] | 'QuarantineToList' >> beam.combiners.ToList()
  _ = (pipeline
       | 'ResultsTrigger' >> beam.Create([None])
       | 'SaveResults' >> beam.Map(
           _save_results, beam.pvalue.AsSingleton(profile),
           beam.pvalue.AsSingleton(duplicates), beam.pvalue.AsSingleton(quarantined),
           beam.pvalue.AsSingleton(shards),
           path=os.path.join(examples_uri, _TMP_FOLDER, _RESULTS_FILE)))
