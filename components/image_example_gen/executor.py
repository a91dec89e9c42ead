"""Folders of images -> tf.Examples, with every file either ingested or quarantined with a reason.

TFX's own ExampleGens read records (CSV, TFRecord, Avro, Parquet); an image dataset is a tree of
encoded files whose labels live in folder names. This executor reads that tree but writes exactly
what TFX's BaseExampleGenExecutor writes (gzipped TFRecords under Split-<name>/, split_names,
payload_format, file_format), so StatisticsGen, Transform, Trainer and Evaluator read it as is.

The bytes go into the example untouched: a generator's traces live in compression artefacts and
metadata that a re-encode would erase. A file is kept only if TensorFlow decodes it the way
training will (`features.decode_and_resize`), so a file that passes here cannot fail a training
step later.
"""

import bisect
import errno
import hashlib
import io
import json
import os
import re
import warnings
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from absl import logging
import apache_beam as beam
from PIL import Image
import tensorflow as tf
from tfx import types
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen import write_split
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils

from components import features
from components.image_example_gen import layouts

# Exec property and output keys.
DATA_DIR_KEY = 'data_dir'
SPLIT_RATIOS_KEY = 'split_ratios'
MAX_PIXELS_KEY = 'max_pixels'
NUM_SHARDS_KEY = 'num_shards'
EXAMPLES_KEY = 'examples'
REPORT_KEY = 'report'

DEFAULT_SPLIT_RATIOS = {'train': 70, 'eval': 15, 'test': 15}
DEFAULT_MAX_PIXELS = 50_000_000
REPORT_FILE = 'report.json'

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
_META = 'meta'
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
  the ratio splits it lacks (e.g. eval for CIFAKE) are carved out of its train split by content
  hash, with the weights in `ratios`.
  """
  if not layout_splits:
    return list(ratios), {None: list(ratios.items())}
  plan: SplitPlan = {s: [(s, 1)] for s in layout_splits}
  missing = [s for s in ratios if s not in layout_splits]
  if missing and 'train' in layout_splits:
    if 'train' not in ratios:
      raise ValueError(f'split_ratios {ratios} must weigh train to carve {missing} out of it.')
    plan['train'] = [('train', ratios['train'])] + [(s, ratios[s]) for s in missing]
  carved = {name for candidates in plan.values() for name, _ in candidates}
  names = [s for s in ratios if s in carved] + [s for s in layout_splits if s not in ratios]
  return names, plan


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


def _bytes_feature(value: bytes) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _text_feature(value: str) -> tf.train.Feature:
  return _bytes_feature(value.encode('utf-8'))


def _int_feature(value: int) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


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


class _ReadImage(beam.DoFn):
  """Reads and validates one file; yields (split index, serialized example) or a quarantine."""

  def __init__(self, data_dir: str, layout: layouts.Layout, split_names: List[str],
               plan: SplitPlan, max_pixels: int):
    self._data_dir = data_dir
    self._layout = layout
    self._split_index = {name: i for i, name in enumerate(split_names)}
    self._plan = plan
    self._max_pixels = max_pixels
    namespace = 'ImageExampleGen'
    self._ingested = beam.metrics.Metrics.counter(namespace, 'ingested')
    self._quarantined = beam.metrics.Metrics.counter(namespace, 'quarantined')
    self._seen = self._seen_ingested = 0

  def setup(self):
    # Pillow's own bomb guard is process-wide; make it agree with ours (it raises past 2x).
    Image.MAX_IMAGE_PIXELS = self._max_pixels
    self._tf_decode = tf.function(
        lambda images: features.decode_and_resize(images, 8),
        input_signature=[tf.TensorSpec([None], tf.string)])

  def process(self, entry: layouts.Entry) -> Iterator[Any]:
    rel_path, problem = entry
    self._seen += 1
    try:
      split, example, meta = self._build(rel_path, problem)
    except _Reject as r:
      self._quarantined.inc()
      beam.metrics.Metrics.counter('ImageExampleGen', f'quarantined_{r.reason}').inc()
      yield beam.pvalue.TaggedOutput(
          _QUARANTINE, {'path': rel_path, 'reason': r.reason, 'detail': r.detail})
    else:
      self._ingested.inc()
      self._seen_ingested += 1
      yield self._split_index[split], example
      yield beam.pvalue.TaggedOutput(_META, meta)
    if self._seen % _LOG_EVERY == 0:
      logging.info('ImageExampleGen: %d files read by this worker (%d ingested, %d quarantined).',
                   self._seen, self._seen_ingested, self._seen - self._seen_ingested)

  def _build(self, rel_path: str, problem: Optional[str]):
    if problem:
      raise _Reject('unreadable', problem)
    if layouts.is_system_file(rel_path):
      raise _Reject('not_image', 'hidden or system file, not read')
    labelled = self._layout.parse(rel_path)
    if labelled is None:
      raise _Reject('unlabelled', f'not inside the class folders of the {self._layout.name} '
                    'layout, so it has no label')
    data = self._read(rel_path)
    if not data:
      raise _Reject('empty', 'the file has zero bytes')
    content_hash = hashlib.sha256(data).hexdigest()
    fmt, height, width = self._validate(data)
    split = assign_split(content_hash, self._plan[labelled.split])
    class_name = features.LABEL_NAMES[labelled.label]
    example = tf.train.Example(features=tf.train.Features(feature={
        features.IMAGE_KEY: _bytes_feature(data),
        features.LABEL_KEY: _int_feature(labelled.label),
        features.SOURCE_KEY: _text_feature(labelled.source),
        features.FORMAT_KEY: _text_feature(fmt),
        features.HEIGHT_KEY: _int_feature(height),
        features.WIDTH_KEY: _int_feature(width),
        features.HASH_KEY: _text_feature(content_hash),
        features.PATH_KEY: _text_feature(rel_path),
        features.SIZE_BUCKET_KEY: _text_feature(features.size_bucket(height, width)),
    }))
    meta = {'path': rel_path, 'hash': content_hash, 'split': split, 'class': class_name,
            'source': labelled.source, 'format': fmt}
    return split, example.SerializeToString(), meta

  def _read(self, rel_path: str) -> bytes:
    path = layouts._join(self._data_dir, rel_path)  # pylint: disable=protected-access
    try:
      if layouts._is_remote(self._data_dir):  # pylint: disable=protected-access
        with fileio.open(path, 'rb') as f:
          return f.read()
      with open(path, 'rb') as f:
        return f.read()
    except OSError as e:
      if e.errno == errno.ELOOP:
        raise _Reject('unreadable', 'symlink loop') from None
      raise _Reject('unreadable', f'{type(e).__name__}: {e.strerror or e}') from None
    except Exception as e:  # pylint: disable=broad-except
      raise _Reject('unreadable', f'{type(e).__name__}: {e}') from None

  def _validate(self, data: bytes) -> Tuple[str, int, int]:
    """(format, height, width) of an image training can use, else _Reject. Header first."""
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
      if fmt == 'bmp':
        problem = _bmp_problem(data, image)
        if problem:
          raise _Reject('unsupported_mode', problem)
      try:
        image.load()
      except Image.DecompressionBombError as e:
        raise _Reject('too_many_pixels', f'Pillow: {e}') from None
      except Exception as e:  # pylint: disable=broad-except
        if 'truncated' in str(e).lower():
          raise _Reject('truncated', f'Pillow: {e}') from None
        raise _Reject('corrupt', f'Pillow could not decode it: {type(e).__name__}: {e}') from None
    try:
      self._tf_decode([data])
    except Exception as e:  # pylint: disable=broad-except
      # Drop tf.function's '{{function_node ...}}' prefixes; keep TF's own first line.
      lines = re.sub(r'\{\{.*?\}\}\s*', '', str(e)).strip().splitlines()
      message = lines[0] if lines else type(e).__name__
      if 'Unknown image file format' in str(e):
        raise _Reject('unsupported_format',
                      f'{fmt}: TensorFlow could not decode it ({message})') from None
      raise _Reject('corrupt', f'Pillow reads it but TensorFlow could not decode it: '
                    f'{message}') from None
    return fmt, height, width


def _tally(meta: Dict[str, str]) -> Iterator[Tuple[str, str, str]]:
  yield 'counts', meta['split'], meta['class']
  yield 'sources', meta['class'], meta['source']
  yield 'formats', meta['class'], meta['format']


def _duplicate_group(item: Tuple[str, List[Tuple[str, str, str]]]) -> Dict[str, Any]:
  content_hash, members = item
  splits = sorted({split for _, split, _ in members})
  classes = sorted({class_name for _, _, class_name in members})
  return {'content_hash': content_hash, 'paths': sorted(path for path, _, _ in members),
          'splits': splits, 'crosses_splits': len(splits) > 1,
          'classes': classes, 'crosses_classes': len(classes) > 1}


def _write_report(_, tallies, duplicates, quarantined, header: Dict[str, Any], split_names,
                  report_path: str) -> None:
  """Runs once, after every file went through: the whole report is assembled by Beam."""
  counts = {s: {c: 0 for c in features.LABEL_NAMES} for s in split_names}
  sources = {c: {} for c in features.LABEL_NAMES}
  formats = {c: {} for c in features.LABEL_NAMES}
  for (kind, key, value), n in tallies:
    table = {'counts': counts, 'sources': sources, 'formats': formats}[kind]
    table[key][value] = table[key].get(value, 0) + n
  reasons: Dict[str, int] = {}
  for record in quarantined:
    reasons[record['reason']] = reasons.get(record['reason'], 0) + 1
  report = dict(header)
  report.update({
      'ingested': sum(n for (kind, _, _), n in tallies if kind == 'counts'),
      'quarantined': sorted(quarantined, key=lambda r: r['path']),
      'quarantine_reasons': dict(sorted(reasons.items())),
      'counts': counts,
      'sources': {c: dict(sorted(v.items())) for c, v in sources.items()},
      'formats': {c: dict(sorted(v.items())) for c, v in formats.items()},
      'duplicates': sorted(duplicates, key=lambda g: g['paths'][0]),
  })
  with fileio.open(report_path, 'w') as f:
    f.write(json.dumps(report, indent=2))


class Executor(base_beam_executor.BaseBeamExecutor):
  """Lists the files here, reads them in Beam, writes splits and report.json."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    data_dir = exec_properties[DATA_DIR_KEY]
    ratios = parse_split_ratios(exec_properties.get(SPLIT_RATIOS_KEY))
    max_pixels = int(exec_properties.get(MAX_PIXELS_KEY) or DEFAULT_MAX_PIXELS)
    num_shards = int(exec_properties.get(NUM_SHARDS_KEY) or 0)  # 0: Beam decides
    examples = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
    report = artifact_utils.get_single_instance(output_dict[REPORT_KEY])

    layout = layouts.detect(data_dir)
    split_names, plan = plan_splits(ratios, layout.splits)
    entries = layout.list_files(data_dir)
    logging.info('ImageExampleGen: %d files found in %s (layout %s); splits %s.',
                 len(entries), data_dir, layout.name, split_names)

    examples.split_names = artifact_utils.encode_split_names(split_names)
    report_path = os.path.join(report.uri, REPORT_FILE)
    header = {'data_dir': data_dir, 'layout': layout.name, 'files_found': len(entries),
              'splits': split_names, 'split_ratios': ratios, 'max_pixels': max_pixels}

    with self._make_beam_pipeline() as pipeline:
      results = (
          pipeline
          | 'ListFiles' >> beam.Create(entries)
          | 'Reshuffle' >> beam.Reshuffle()
          | 'ReadAndValidate' >> beam.ParDo(
              _ReadImage(data_dir, layout, split_names, plan, max_pixels)).with_outputs(
                  _QUARANTINE, _META, main='examples'))
      by_split = results.examples | 'PartitionBySplit' >> beam.Partition(
          lambda item, _: item[0], len(split_names))
      for index, name in enumerate(split_names):
        _ = (by_split[index]
             | f'Serialized[{name}]' >> beam.Values()
             | f'WriteSplit[{name}]' >> beam.io.WriteToTFRecord(
                 os.path.join(artifact_utils.get_split_uri([examples], name),
                              write_split.DEFAULT_TF_RECORD_FILE_NAME),
                 file_name_suffix='.gz', num_shards=num_shards))
      tallies = (results[_META]
                 | 'Tally' >> beam.FlatMap(_tally)
                 | 'CountTallies' >> beam.combiners.Count.PerElement()
                 | 'TalliesToList' >> beam.combiners.ToList())
      duplicates = (results[_META]
                    | 'KeyByHash' >> beam.Map(
                        lambda m: (m['hash'], (m['path'], m['split'], m['class'])))
                    | 'GroupByHash' >> beam.GroupByKey()
                    | 'OnlyDuplicates' >> beam.Filter(lambda kv: len(list(kv[1])) > 1)
                    | 'DuplicateGroup' >> beam.Map(
                        lambda kv: _duplicate_group((kv[0], list(kv[1]))))
                    | 'DuplicatesToList' >> beam.combiners.ToList())
      quarantined = results[_QUARANTINE] | 'QuarantineToList' >> beam.combiners.ToList()
      _ = (pipeline
           | 'ReportTrigger' >> beam.Create([None])
           | 'WriteReport' >> beam.Map(
               _write_report, beam.pvalue.AsSingleton(tallies),
               beam.pvalue.AsSingleton(duplicates), beam.pvalue.AsSingleton(quarantined),
               header=header, split_names=split_names, report_path=report_path))

    # What TFX's BaseExampleGenExecutor.Do and ExampleGen driver set on the examples.
    examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
    examples_utils.set_file_format(
        examples, write_split.to_file_format_str(example_gen_pb2.FORMAT_TFRECORDS_GZIP))
    if not examples.has_custom_property(example_gen_utils.SPAN_PROPERTY_NAME):
      examples.set_int_custom_property(example_gen_utils.SPAN_PROPERTY_NAME, 0)

    with fileio.open(report_path) as f:
      result = json.loads(f.read())
    for key in ('files_found', 'ingested'):
      report.set_int_custom_property(key, result[key])
    report.set_int_custom_property('quarantined', len(result['quarantined']))
    _check(result, report_path)


def _check(result: Dict[str, Any], report_path: str) -> None:
  """Fails the component, after the report is written, on a miscount or an unusable dataset."""
  found, ingested, quarantined = (result['files_found'], result['ingested'],
                                  len(result['quarantined']))
  logging.info('ImageExampleGen: %d found, %d ingested, %d quarantined %s; per split %s.',
               found, ingested, quarantined, result['quarantine_reasons'], result['counts'])
  if ingested + quarantined != found:
    raise RuntimeError(f'ImageExampleGen lost files: {ingested} ingested + {quarantined} '
                       f'quarantined != {found} found (report: {report_path}).')
  for class_name in features.LABEL_NAMES:
    if not any(split[class_name] for split in result['counts'].values()):
      raise ValueError(
          f'No usable {class_name!r} image in {result["data_dir"]}: {found} files found, '
          f'{quarantined} quarantined (reasons {result["quarantine_reasons"]}); see {report_path}.')
  for name, by_class in result['counts'].items():
    if not sum(by_class.values()):
      raise ValueError(
          f'Split {name!r} has no usable image ({ingested} images ingested in all; splits '
          f'{list(result["counts"])} from the {result["layout"]} layout and split_ratios '
          f'{result["split_ratios"]}); add images or change split_ratios.')
    missing = [c for c, n in by_class.items() if not n]
    if missing:
      logging.warning('ImageExampleGen: split %r has no %s image.', name, missing)
  crossing = [g for g in result['duplicates'] if g['crosses_splits'] or g['crosses_classes']]
  if crossing:
    logging.warning('ImageExampleGen: %d groups of identical files cross splits or classes '
                    '(leakage or label noise), e.g. %s.', len(crossing), crossing[0]['paths'])
