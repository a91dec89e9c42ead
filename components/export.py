"""The exported SavedModel: the serving contract every pushed model meets.

Signatures (all share the Transform graph, so serving preprocesses exactly as training did):
  serving_default     image_bytes: string [None] (encoded JPEG/PNG/GIF/BMP, any size)
                      -> fake_probability: float32 [None], is_fake: int64 [None] (1 = fake)
  serving_tf_example  examples: serialized tf.Example [None] -> the same outputs (TFMA uses it)
  transform_features  examples: serialized tf.Example [None] -> the transformed features
  metadata            () -> threshold, view, image_size, crop_size, native_size, backbone,
                      label_names
`assets.extra/fakedetect.json` carries the same metadata for tools that do not load the graph.

serving_default refuses a request holding an image it cannot score, naming the first such one by
its position, in the InvalidArgumentError a TF Serving client reads (HTTP 400):
  assertion failed: [image_bytes[3] is not an image: ...; no image of this request was scored: ...]
Reasons: empty, not a JPEG/PNG/GIF/BMP, over MAX_IMAGE_BYTES, a JPEG header without a size, over
MAX_IMAGE_PIXELS (all checked before any image is decoded), then not decodable. An empty request
is answered with empty outputs.
"""

import json
import os
import re
from typing import Any, Dict, Optional, Tuple

import tensorflow as tf
import tensorflow_transform as tft

from fakedetect.components import features
from fakedetect.components import model as model_lib
from fakedetect.components import views
from fakedetect.pipeline import names

SERVING_SIGNATURE = 'serving_default'
EXAMPLE_SIGNATURE = 'serving_tf_example'
TRANSFORM_SIGNATURE = 'transform_features'
METADATA_SIGNATURE = 'metadata'
PROBABILITY_KEY = 'fake_probability'
DECISION_KEY = 'is_fake'
METADATA_FILE = names.MODEL_METADATA_FILE
KERAS_FILE = os.path.join('assets.extra', 'model.keras')  # the classifier, for Grad-CAM
# Untrusted input: serving_default refuses a request holding an image over these, before decoding.
MAX_IMAGE_BYTES = features.MAX_IMAGE_BYTES
MAX_IMAGE_PIXELS = features.MAX_IMAGE_PIXELS


# What tf.io.decode_image reads, by the bytes each format starts with.
_JPEG, _PNG, _GIF, _BMP = b'\xff\xd8\xff', b'\x89PNG', b'GIF8', b'BM'
_REFUSAL = 'image_bytes[{{}}] {}; no image of this request was scored: send it without that one'
_REFUSED = re.compile(r'image_bytes\[(\d+)\] (.+?); no image of this request was scored')


def _refuse(image_bytes: tf.Tensor, refused: tf.Tensor, reason: str) -> tf.Tensor:
  """`image_bytes` as ops reading it will see it: only once no image is `refused` (bool [batch]).

  Otherwise the request fails with InvalidArgumentError 'assertion failed: [image_bytes[i] ...]',
  i the first refused position: the error a TF Serving client reads in its response. Checks
  chained through their results run in order, so the first one that fails is the one reported.
  """
  count = tf.size(refused)
  first = tf.reduce_min(tf.where(refused, tf.range(count), count))
  with tf.control_dependencies([image_bytes]):  # after the checks before it
    check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(refused)),
                                [tf.strings.format(_REFUSAL.format(reason), first)])
  with tf.control_dependencies([check]):  # a dependency: nothing reads the bytes before
    return tf.identity(image_bytes)


def refused_image(error) -> Optional[Tuple[int, str]]:
  """(position in the batch, reason) of the image serving_default refused a request for, from
  its error (or the error's message); None when the error is not such a refusal."""
  found = _REFUSED.search(str(getattr(error, 'message', error)))
  return (int(found.group(1)), found.group(2)) if found else None


def _first(dataset: tf.data.Dataset, otherwise):
  """The first element of `dataset`, or `otherwise` when it has none. (get_single_element costs
  a tenth of Dataset.reduce per call.)"""
  return dataset.concatenate(tf.data.Dataset.from_tensors(otherwise)).take(1).get_single_element()


def _per_image(fn, image_bytes: tf.Tensor):
  """fn(image_bytes) (outputs of leading dimension [batch]) and the images it fails on:
  (succeeded, bool [batch]; outputs).

  A graph has no try/except: a tf.data pipeline that drops what fn fails on stands in for one.
  fn runs on the whole batch; only when that fails does it run image by image, to find which.
  """
  count = tf.size(image_bytes, out_type=tf.int64)
  whole = tf.data.Dataset.from_tensors(image_bytes).map(lambda b: (True, fn(b))).ignore_errors()
  empty = tf.nest.map_structure(lambda s: tf.zeros([0] + s.shape[1:], s.dtype),
                                whole.element_spec[1])
  succeeded, outputs = _first(whole, (False, empty))

  def one_by_one():
    rows = tf.data.Dataset.from_tensor_slices((tf.range(count), image_bytes)).map(
        lambda i, one: (i[None], fn(one[None]))).ignore_errors()
    positions, outputs = _first(rows.unbatch().batch(tf.maximum(count, 1)),
                                (tf.zeros([0], tf.int64), empty))
    return tf.scatter_nd(positions[:, None], tf.ones_like(positions, tf.bool), [count]), outputs

  return tf.cond(succeeded, lambda: (tf.ones([count], tf.bool), outputs), one_by_one)


def declared_pixels(image_bytes: tf.Tensor) -> tf.Tensor:
  """width x height each JPEG/PNG/GIF/BMP header declares (int64 [batch]); 0 for other bytes.

  Read from the header only, so a decompression bomb is refused before any pixel is decoded.
  Fails on a JPEG whose header does not say.
  """
  b = tf.cast(tf.io.decode_raw(image_bytes, tf.uint8, fixed_length=32), tf.int64)  # 0-padded
  word = lambda i, n, big: sum(b[:, i + k] * 256**(n - 1 - k if big else k) for k in range(n))
  starts = lambda magic: tf.strings.substr(image_bytes, 0, len(magic)) == magic
  bmp_height = word(22, 4, False)
  bmp_height = tf.abs(tf.where(bmp_height >= 2**31, bmp_height - 2**32, bmp_height))
  jpeg = tf.map_fn(
      lambda one: tf.cond(
          tf.strings.substr(one, 0, len(_JPEG)) == _JPEG,
          lambda: tf.reduce_prod(tf.cast(tf.image.extract_jpeg_shape(one)[:2], tf.int64)),
          lambda: tf.constant(0, tf.int64)),
      image_bytes, fn_output_signature=tf.int64)
  zero = tf.zeros_like(jpeg)
  return (jpeg +
          tf.where(starts(_PNG), word(16, 4, True) * word(20, 4, True), zero) +
          tf.where(starts(_GIF), word(6, 2, False) * word(8, 2, False), zero) +
          tf.where(starts(_BMP), word(18, 4, False) * bmp_height, zero))


def _within_limits(image_bytes: tf.Tensor) -> tf.Tensor:
  """The bytes, gated so that the request fails naming the first image that is not a JPEG, PNG,
  GIF or BMP, or is over a limit, before any image is decoded."""
  length = tf.strings.length(image_bytes)
  known = tf.reduce_any(tf.stack([tf.strings.substr(image_bytes, 0, len(magic)) == magic
                                  for magic in (_JPEG, _PNG, _GIF, _BMP)]), axis=0)
  image_bytes = _refuse(image_bytes, length == 0, 'is empty (0 bytes)')
  image_bytes = _refuse(image_bytes, tf.logical_not(known),
                        'is not an image: its bytes start as no JPEG, PNG, GIF or BMP file does')
  image_bytes = _refuse(image_bytes, length > MAX_IMAGE_BYTES,
                        f'is larger than {MAX_IMAGE_BYTES} bytes, the limit for one image')
  read, pixels = _per_image(declared_pixels, image_bytes)
  image_bytes = _refuse(image_bytes, tf.logical_not(read),
                        'has a JPEG header that does not give its width and height')
  over = tf.scatter_nd(tf.where(read), pixels > MAX_IMAGE_PIXELS, tf.shape(read, tf.int64))
  return _refuse(image_bytes, over, f'declares more than {MAX_IMAGE_PIXELS} pixels (width x '
                 'height in its header), the limit for one image')


class _ExportModule(tf.Module):
  """Holds the model, the Transform layer and the decision threshold as tracked state."""

  def __init__(self, model, tf_transform_output: tft.TFTransformOutput, threshold: float,
               view: views.View, backbone: str, flip_average: bool):
    super().__init__()
    self.model = model
    self._flip_average = flip_average
    # The tf.Variables under Keras 3's variables, tracked as such: without them TF Serving (which
    # restores a SavedModel into a session) fails every request with 'Could not find variable'.
    self.model_variables = [v.value for v in model.variables]
    self.tft_layer = tf_transform_output.transform_features_layer()
    self.threshold = tf.Variable(threshold, dtype=tf.float32, trainable=False, name='threshold')
    self._view = view
    self._backbone = backbone
    raw_spec = tf_transform_output.raw_feature_spec()
    raw_spec.pop(features.LABEL_KEY, None)
    self._example_spec = raw_spec
    self._image_shape = list(raw_spec[features.IMAGE_KEY].shape)

  def _predict(self, transformed: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    inputs = views.serving_inputs(transformed, self._view)
    # An empty request never reaches the model: oneDNN's convolutions on AVX512 CPUs return a
    # wrongly shaped tensor for a batch of 0, which fails the request instead of answering [].
    count = tf.shape(tf.nest.flatten(inputs)[0])[0]
    probability = tf.cond(
        count > 0,
        lambda: tf.cast(model_lib.fake_probabilities(self.model, inputs, self._flip_average),
                        tf.float32),
        lambda: tf.zeros([0], tf.float32))
    return {
        PROBABILITY_KEY: probability,
        DECISION_KEY: tf.cast(probability >= self.threshold, tf.int64),
    }

  def _transform_images(self, image_bytes: tf.Tensor) -> Dict[str, tf.Tensor]:
    # The Transform graph takes the feature as the schema declares it ([batch, 1] when dense).
    return self.tft_layer({features.IMAGE_KEY: tf.reshape(image_bytes, [-1] + self._image_shape)})

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='image_bytes')])
  def serve_images(self, image_bytes):
    image_bytes = _within_limits(image_bytes)
    # Only decoding can fail in the Transform of bytes within the limits.
    decoded, transformed = _per_image(self._transform_images, image_bytes)
    checked = _refuse(image_bytes, tf.logical_not(decoded),
                      'could not be decoded: a truncated or corrupt image')
    with tf.control_dependencies([checked]):
      return self._predict(tf.nest.map_structure(tf.identity, transformed))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def serve_examples(self, serialized):
    parsed = tf.io.parse_example(serialized, {features.IMAGE_KEY: self._example_spec[
        features.IMAGE_KEY]})
    return self._predict(self.tft_layer(parsed))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def transform_features(self, serialized):
    raw_spec = dict(self._example_spec)
    parsed = tf.io.parse_example(serialized, raw_spec)
    return self.tft_layer(parsed)

  @tf.function(input_signature=[])
  def metadata(self):
    return {
        'threshold': tf.identity(self.threshold),
        'view': tf.constant(self._view.name),
        'image_size': tf.constant(self._view.size, tf.int64),
        'crop_size': tf.constant(self._view.crop_size, tf.int64),
        'native_size': tf.constant(self._view.native_size, tf.int64),
        'backbone': tf.constant(self._backbone),
        'label_names': tf.constant(list(features.LABEL_NAMES)),
    }


def export(model, tf_transform_output: tft.TFTransformOutput, export_dir: str, threshold: float,
           view: views.View, extra_metadata: Dict[str, Any], flip_average: bool = False) -> None:
  """Saves the serving SavedModel (TF Serving layout is added by the Pusher's version folder).

  `extra_metadata` must name the `backbone`; the view's settings are added here. `flip_average`
  (train.flip_average): every signature scores an image and its mirror and averages the two."""
  module = _ExportModule(model, tf_transform_output, threshold, view,
                         extra_metadata.get('backbone', ''), flip_average)
  signatures = {
      SERVING_SIGNATURE: module.serve_images.get_concrete_function(),
      EXAMPLE_SIGNATURE: module.serve_examples.get_concrete_function(),
      TRANSFORM_SIGNATURE: module.transform_features.get_concrete_function(),
      METADATA_SIGNATURE: module.metadata.get_concrete_function(),
  }
  tf.saved_model.save(module, export_dir, signatures=signatures)
  # tf.saved_model.load gives the classifier's variables but not callable layers; explain needs
  # them.
  tf.io.gfile.makedirs(os.path.join(export_dir, os.path.dirname(KERAS_FILE)))
  model.save(os.path.join(export_dir, KERAS_FILE))
  metadata = dict(extra_metadata, threshold=float(threshold), flip_average=flip_average,
                  view=view.name, image_size=view.size, crop_size=view.crop_size,
                  native_size=view.native_size, label_names=list(features.LABEL_NAMES))
  path = os.path.join(export_dir, METADATA_FILE)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(json.dumps(metadata, indent=2, sort_keys=True))


def read_metadata(model_dir: str) -> Dict[str, Any]:
  with tf.io.gfile.GFile(os.path.join(model_dir, METADATA_FILE)) as f:
    return json.loads(f.read())
