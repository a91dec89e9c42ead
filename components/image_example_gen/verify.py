"""TensorFlow's decode of every image the Beam workers wrote, in the launcher, batched.

On the direct runner the workers only `inspect` files and never import TensorFlow; the launcher,
which has it loaded, runs the decode check (`image_checks.decode_op`, the op training runs) on
the examples as written: the same decoder on the same bytes as the one-file-at-a-time check, in
tf.data's C++ threads. It runs beside the pipeline (`DecodeCheck`): the files are all written
once the workers have read every file, while Beam still groups the duplicate index, combines the
report and stops its workers (~1 s on 20k CIFAKE images, on cores that are mostly idle). A split
with fewer decodable images than written is read again example by example, and the ones that
fail are dropped from their files and quarantined.
"""

import pickle
import threading
from typing import Dict, List, Optional, Tuple

from apache_beam.io.filesystems import FileSystems
import numpy as np

from fakedetect.components import features
from fakedetect.components import image_checks
from fakedetect.components.image_checks import ImageRejected
from fakedetect.components.image_example_gen import reading
from fakedetect.components.image_example_gen import tfrecord

_BATCH = 256  # examples per decode call: tf.data's per-element cost is most of a small decode
_POLL_SECONDS = 0.05
Failure = Tuple[reading.Meta, ImageRejected]


class DecodeCheck:
  """`undecodable` on the files the pipeline announces (beam_graph.announce), in a thread of the
  launcher started beside the pipeline; `result()` after the pipeline waits for it."""

  def __init__(self, announce_path: str, max_pixels: int):
    self._path = announce_path
    self._max_pixels = max_pixels
    self._pipeline_over = threading.Event()
    self._failures: Optional[List[Failure]] = None
    self._error: Optional[BaseException] = None
    self._thread = threading.Thread(target=self._run, name='DecodeCheck', daemon=True)
    self._thread.start()

  def _run(self) -> None:
    try:
      while not FileSystems.exists(self._path):
        if self._pipeline_over.wait(_POLL_SECONDS) and not FileSystems.exists(self._path):
          return  # the pipeline failed before the files were all written
      with FileSystems.open(self._path) as f:
        written = pickle.load(f)
      self._failures = undecodable(written, self._max_pixels)
    except BaseException as e:  # pylint: disable=broad-except
      self._error = e  # raised in the launcher's thread, by result()

  def stop(self) -> None:
    """Ends the wait, if the thread still waits, and the thread."""
    self._pipeline_over.set()
    self._thread.join()

  def result(self) -> List[Failure]:
    """After a successful pipeline: the examples that TensorFlow could not decode."""
    self.stop()
    if self._error is not None:
      raise self._error
    if self._failures is None:
      raise RuntimeError(f'The ingest pipeline ended without announcing its files ({self._path}).')
    return self._failures


def undecodable(written: List[tfrecord.Written], max_pixels: int) -> List[Failure]:
  """(meta, why) of each written example TensorFlow cannot decode, now gone from its file.

  Memory stays bounded: files stream.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  spec = {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}

  def decoded(records):
    """How many of a batch of examples decode: all of them, or an error drops the batch."""
    images = tf.io.parse_example(records, spec)[features.IMAGE_KEY]
    heights = tf.map_fn(lambda image: tf.shape(image_checks.decode_op(image))[0], images,
                        fn_output_signature=tf.int32, parallel_iterations=1)  # tf.data: parallel
    # Counted from the decoded heights, so that no graph optimization can skip the decode.
    return tf.reduce_sum(tf.cast(heights > 0, tf.int64))

  paths_of: Dict[str, List[str]] = {}
  expected: Dict[str, int] = {}
  for split, path, count in written:
    paths_of.setdefault(split, []).append(path)
    expected[split] = expected.get(split, 0) + count
  failures = []
  for split, paths in sorted(paths_of.items()):
    count = expected[split]
    decodable = (tf.data.TFRecordDataset(sorted(paths), compression_type='GZIP',
                                         buffer_size=1 << 20)
                 .batch(_BATCH)
                 .map(decoded, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
                 .ignore_errors()
                 .reduce(np.int64(0), lambda n, k: n + k))
    if int(decodable) != count:
      for path in paths:
        failures += _drop_undecodable(path, split, max_pixels)
  return failures


def _drop_undecodable(path: str, split: str, max_pixels: int) -> List[Failure]:
  """Writes one file again without the examples TensorFlow cannot decode; returns those."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # Before any Pillow call: decode_rejection asks Pillow why a decode failed, and a header
  # within max_pixels must not trip Pillow's own (lower) guard there.
  image_checks.allow_pixels(max_pixels)
  failed = []
  rewritten = tfrecord.Writer(FileSystems.split(path)[0], split)
  for records in tf.data.TFRecordDataset(path, compression_type='GZIP').batch(_BATCH):
    kept = []
    for record in records.numpy():
      feature = tf.train.Example.FromString(record).features.feature
      data = feature[features.IMAGE_KEY].bytes_list.value[0]
      fmt = feature[features.FORMAT_KEY].bytes_list.value[0].decode()
      try:
        image_checks.check_decodes(data, fmt)
        kept.append(record)
      except ImageRejected as rejected:
        text = {key: feature[key].bytes_list.value[0].decode() for key in (
            features.FORMAT_KEY, features.PATH_KEY, features.HASH_KEY, features.SOURCE_KEY)}
        number = {key: feature[key].int64_list.value[0] for key in (
            features.LABEL_KEY, features.HEIGHT_KEY, features.WIDTH_KEY)}
        meta = {'path': text[features.PATH_KEY], 'split': split,
                'hash': text[features.HASH_KEY],
                'class': features.LABEL_NAMES[number[features.LABEL_KEY]],
                'source': text[features.SOURCE_KEY], 'format': text[features.FORMAT_KEY],
                'mode': image_checks.check_header(data, max_pixels).mode,
                'height': number[features.HEIGHT_KEY], 'width': number[features.WIDTH_KEY]}
        failed.append((meta, rejected))
    rewritten.write(kept)
  rewritten.close()
  if failed:
    FileSystems.rename([rewritten.path], [path])
  else:
    FileSystems.delete([rewritten.path])
  return failed
