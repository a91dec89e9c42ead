"""The one place that decides what an example is and how its pixels become model input.

ExampleGen writes these keys, Transform turns `IMAGE_KEY` into `TRANSFORMED_IMAGE_KEY` with
`decode_and_resize`, the Trainer reads the transformed keys and the serving signatures call the
same Transform graph: training, evaluation and serving cannot disagree on size, labels or scaling.
"""

from typing import Dict

# Raw tf.Example features, written by the image ExampleGen.
IMAGE_KEY = 'image_bytes'  # the original encoded file, byte for byte
LABEL_KEY = 'label'  # int64, index into LABEL_NAMES
SOURCE_KEY = 'source'  # generator name for fakes, camera/source name for reals
FORMAT_KEY = 'format'  # jpeg | png | gif | bmp | webp
HEIGHT_KEY = 'height'
WIDTH_KEY = 'width'
HASH_KEY = 'content_hash'  # sha256 of the bytes: duplicate and leakage detection
PATH_KEY = 'path'  # path relative to the data folder, for tracing a failure back to a file
SIZE_BUCKET_KEY = 'size_bucket'  # small | medium | large, a slicing feature

# Transformed features, produced by the Transform graph.
TRANSFORMED_IMAGE_KEY = 'image'  # float32 [size, size, 3] in [0, 1]
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


def decode_and_resize(image_bytes, image_size: int):
  """Encoded images (tf.string [batch]) -> float32 [batch, size, size, 3] in [0, 1].

  Accepts JPEG, PNG (8 and 16 bit), GIF (first frame) and BMP, grey, RGB or RGBA; the dtype-aware
  decode maps any bit depth onto [0, 1] before resizing, so normalization is the same for all.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def _one(encoded):
    image = tf.io.decode_image(
        encoded, channels=CHANNELS, dtype=tf.float32, expand_animations=False)
    image.set_shape([None, None, CHANNELS])
    image = tf.image.resize(image, [image_size, image_size], method='bilinear')
    return tf.clip_by_value(image, 0.0, 1.0)

  image_bytes = tf.reshape(image_bytes, [-1])
  return tf.map_fn(
      _one, image_bytes,
      fn_output_signature=tf.TensorSpec([image_size, image_size, CHANNELS], tf.float32))


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
