"""The image ExampleGen's Beam graph: chunks of files in; TFRecord files per split and the
ingest results out. No TFX or TensorFlow import here: the Beam workers import this module.

Work travels in chunks of files, not one element per file: a worker reads, checks and encodes a
chunk (one tfx_bsl call per split of it) and writes its examples to its bundle's file of that
split (`tfrecord.Writer`, one compressed write per chunk), so no example crosses processes; with
num_shards, examples are grouped by shard instead and each group is written by the same writer.
The report's tallies fold into one accumulator per bundle, and only the duplicate index (hash,
path) is shuffled, by hash prefix: memory stays bounded. As soon as every file is written, their
list is announced (`announce_path`) for the launcher's decode check (`verify.DecodeCheck`); the
last step saves what the launcher needs to write the report (`report.IngestResults`).
"""

import hashlib
import pickle
import random
import zlib
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from absl import logging
import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import window
from apache_beam.utils import windowed_value

from fakedetect.components.image_checks import ImageRejected
from fakedetect.components.image_example_gen import encoding
from fakedetect.components.image_example_gen import folders
from fakedetect.components.image_example_gen import profile
from fakedetect.components.image_example_gen import reading
from fakedetect.components.image_example_gen import report
from fakedetect.components.image_example_gen import splits
from fakedetect.components.image_example_gen import tfrecord

_CHUNK_FILES = 64  # files per Beam element
_HASH_PREFIX = 2  # hex digits: duplicate index shuffled in 256 groups
_LOG_EVERY = 1000
_QUARANTINE, _PROFILE, _HASHES, _EXAMPLES = 'quarantine', 'profile', 'hashes', 'examples'


def _in_global_window(value: Any) -> windowed_value.WindowedValue:
  """What finish_bundle yields: it has no input element to take a window from."""
  return windowed_value.WindowedValue(value, window.GlobalWindow().max_timestamp(),
                                      [window.GlobalWindow()])


class _IngestChunks(beam.DoFn):
  """Chunks of files in; written files (main output) or examples keyed by shard, quarantines,
  tallies and hashes out."""

  def __init__(self, reader: reading.ImageReader, check_decodes: bool, folder: str,
               num_shards: int):
    self._reader = reader
    self._check = check_decodes
    self._folder = folder
    self._num_shards = num_shards
    namespace = 'ImageExampleGen'
    self._ingested = beam.metrics.Metrics.counter(namespace, 'ingested')
    self._quarantined = beam.metrics.Metrics.counter(namespace, 'quarantined')
    self._seen = self._seen_ingested = 0

  def setup(self):
    self._reader.setup(single_threaded=self._check)

  def start_bundle(self):
    self._writers: Dict[str, tfrecord.Writer] = {}
    self._shard = random.randrange(max(self._num_shards, 1))
    self._profile = profile.ProfileFn().create_accumulator()
    self._hashes: Dict[str, List[profile.HashRecord]] = {}

  def process(self, chunk: List[folders.Entry],
              held_out: Optional[Mapping[str, str]] = None) -> Iterator[Any]:
    read = self._reader.read if self._check else self._reader.inspect
    ingested: Dict[str, List] = {}  # per split: (bytes, meta), encoded at once
    for entry in chunk:
      self._seen += 1
      try:
        split, data, meta = read(entry, held_out)
      except ImageRejected as rejected:
        self._quarantined.inc()
        yield beam.pvalue.TaggedOutput(_QUARANTINE, reading.quarantine_record(entry[0], rejected))
        continue
      self._ingested.inc()
      self._seen_ingested += 1
      ingested.setdefault(split, []).append((data, meta))
      profile.ProfileFn.fold(self._profile, meta)
      self._hashes.setdefault(meta['hash'][:_HASH_PREFIX], []).append(
          (meta['hash'], meta['path'], split, meta['layout_split'], meta['class']))
      if self._seen % _LOG_EVERY == 0:
        logging.info('ImageExampleGen: %d files read by this worker (%d ingested).',
                     self._seen, self._seen_ingested)
    for split, images in ingested.items():
      examples = encoding.encode_examples(images)
      if not self._num_shards:
        if split not in self._writers:
          self._writers[split] = tfrecord.Writer(self._folder, split)
        self._writers[split].write(examples)
        continue
      for example in examples:  # round robin over the shards, as Beam's own sink
        self._shard = (self._shard + 1) % self._num_shards
        yield beam.pvalue.TaggedOutput(_EXAMPLES, ((split, self._shard), example))

  def finish_bundle(self):
    for _, writer in sorted(self._writers.items()):
      yield _in_global_window(writer.close())
    if self._profile['counts']:
      yield beam.pvalue.TaggedOutput(_PROFILE, _in_global_window(self._profile))
    for prefix, records in sorted(self._hashes.items()):
      yield beam.pvalue.TaggedOutput(_HASHES, _in_global_window((prefix, records)))


def _write_shard(item: Tuple[Tuple[str, int], Iterable[bytes]], folder: str) -> tfrecord.Written:
  """One fixed shard's examples -> one file, a chunk at a time."""
  (split, _), examples = item
  writer = tfrecord.Writer(folder, split)
  chunk = []
  for example in examples:
    chunk.append(example)
    if len(chunk) == _CHUNK_FILES:
      writer.write(chunk)
      chunk = []
  writer.write(chunk)
  return writer.close()


def announce(written: List[tfrecord.Written], path: str) -> None:
  """Writes the list of written files, atomically: the decode check reads it once it exists."""
  partial = path + '.partial'
  with FileSystems.create(partial) as f:
    pickle.dump(written, f)
  FileSystems.rename([partial], [path])


def _save_results(_, tallies, duplicates, quarantined, written, path: str) -> None:
  report.IngestResults(tallies, duplicates, quarantined, written).save(path)


def build_pipeline(pipeline, reader: reading.ImageReader, layout_splits: Tuple[str, ...],
                   entries: List[folders.Entry], duplicate_policy: str, num_shards: int,
                   folder: str, check_decodes: bool, announce_path: Optional[str],
                   results_path: str) -> None:
  """The Beam graph: read chunks of files in parallel, write files, save the results.

  folder: where the files are written (`tfrecord.finalize` names them after the run).
  check_decodes: the workers run TensorFlow's decode themselves (`ImageReader.read`); otherwise
  they only `inspect`. announce_path: where the list of files goes as soon as they are all
  written, for the launcher's decode check. num_shards: files per split; 0: one per bundle.
  """
  # Folders list one class after the other; written in that order, a split's files hold long
  # single-class runs that a trainer's shuffle buffer cannot mix (batch-norm then learns the
  # batch's class). A path-hash order mixes classes and sources in every chunk and file.
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
  if duplicate_policy == splits.SAME_SPLIT and len(layout_splits) > 1:
    # A first, cheap pass (read and hash, no decode) finds identical files the layout put in
    # different splits; only those (few) travel to the workers, as a side input.
    side_inputs.append(beam.pvalue.AsDict(
        files
        | 'HashFiles' >> beam.FlatMap(
            lambda chunk: (kv for entry in chunk for kv in reader.hash_and_split(entry)))
        | 'SplitsPerHash' >> beam.CombinePerKey(beam.combiners.ToSetCombineFn())
        | 'CrossingSplits' >> beam.Filter(lambda kv: len(kv[1]) > 1)
        | 'HeldOutSplit' >> beam.MapTuple(lambda h, found: (h, splits.held_out_split(found)))))
  results = files | 'ReadAndValidate' >> beam.ParDo(
      _IngestChunks(reader, check_decodes, folder, num_shards), *side_inputs).with_outputs(
          _QUARANTINE, _PROFILE, _HASHES, _EXAMPLES, main='written')
  written = results.written
  if num_shards:
    written = (results[_EXAMPLES]
               | 'GroupByShard' >> beam.GroupByKey()
               | 'WriteShards' >> beam.Map(_write_shard, folder=folder))
  written = written | 'WrittenToList' >> beam.combiners.ToList()
  if announce_path:
    _ = written | 'Announce' >> beam.Map(announce, path=announce_path)
  _ = (pipeline
       | 'ResultsTrigger' >> beam.Create([None])
       | 'SaveResults' >> beam.Map(
           _save_results,
           beam.pvalue.AsSingleton(
               results[_PROFILE] | 'Profile' >> beam.CombineGlobally(profile.MergeProfiles())),
           beam.pvalue.AsSingleton(
               results[_HASHES]
               | 'GroupByHashPrefix' >> beam.GroupByKey()
               | 'DuplicateGroups' >> beam.FlatMap(profile.duplicate_groups)
               | 'DuplicatesToList' >> beam.combiners.ToList()),
           beam.pvalue.AsSingleton(results[_QUARANTINE] | 'QuarantineToList' >>
                                   beam.combiners.ToList()),
           beam.pvalue.AsSingleton(written),
           path=results_path))
