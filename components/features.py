"""The one place that decides what an example is and how its pixels become model input.

ExampleGen writes these keys, Transform turns `IMAGE_KEY` into the image's views
(components/views.py), the Trainer reads the transformed keys and the serving signatures call the
same Transform graph: training, evaluation and serving cannot disagree on size, labels or scaling.
"""

from typing import Dict

# Raw tf.Example features, written by the image ExampleGen.
IMAGE_KEY = 'image_bytes'  # the original encoded file, byte for byte
LABEL_KEY = 'label'  # int64, index into LABEL_NAMES
SOURCE_KEY = 'source'  # generator name for fakes, camera/source name for reals
FORMAT_KEY = 'format'  # jpeg | png | gif | bmp (image_checks.FORMATS)
HEIGHT_KEY = 'height'
WIDTH_KEY = 'width'
HASH_KEY = 'content_hash'  # sha256 of the bytes: duplicate and leakage detection
PATH_KEY = 'path'  # path relative to the data folder, for tracing a failure back to a file
SIZE_BUCKET_KEY = 'size_bucket'  # small | medium | large, a slicing feature

# Transformed features, produced by the Transform graph.
TRANSFORMED_IMAGE_KEY = 'image'  # the global view, float32 [size, size, 3] in [0, 1]
TRANSFORMED_LABEL_KEY = 'label'

# Label mapping: the integer label is the index. 1 means fake, everywhere.
LABEL_NAMES = ('real', 'fake')
REAL, FAKE = 0, 1

CHANNELS = 3
DEFAULT_IMAGE_SIZE = 32

# Limits on untrusted images, shared by ingestion, predict and the serving signature.
MAX_IMAGE_BYTES = 32 * 2**20  # encoded file size
MAX_IMAGE_PIXELS = 50_000_000  # declared width x height: decompression bombs stop here


def size_bucket(height: int, width: int) -> str:
  """Buckets by the longer side so TFMA can slice by size."""
  side = max(height, width)
  if side <= 64:
    return 'small'
  if side <= 256:
    return 'medium'
  return 'large'


def raw_feature_spec() -> Dict[str, object]:
  """The tf.Example parsing spec of what ExampleGen writes (for tests and tools)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return {
      IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
      LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
      SOURCE_KEY: tf.io.FixedLenFeature([], tf.string),
      FORMAT_KEY: tf.io.FixedLenFeature([], tf.string),
      HEIGHT_KEY: tf.io.FixedLenFeature([], tf.int64),
      WIDTH_KEY: tf.io.FixedLenFeature([], tf.int64),
      HASH_KEY: tf.io.FixedLenFeature([], tf.string),
      PATH_KEY: tf.io.FixedLenFeature([], tf.string),
      SIZE_BUCKET_KEY: tf.io.FixedLenFeature([], tf.string),
  }
