"""The exported SavedModel: the serving contract every pushed model meets.

Signatures (all share the Transform graph, so serving preprocesses exactly as training did):
  serving_default     image_bytes: string [None] (encoded JPEG/PNG/GIF/BMP, any size)
                      -> fake_probability: float32 [None], is_fake: int64 [None] (1 = fake)
  serving_tf_example  examples: serialized tf.Example [None] -> the same outputs (TFMA uses it)
  transform_features  examples: serialized tf.Example [None] -> the transformed features
  metadata            () -> threshold, view, image_size, crop_size, native_size, backbone,
                      label_names
`assets.extra/fakedetect.json` carries the same metadata for tools that do not load the graph.
"""

import json
import os
from typing import Any, Dict

import tensorflow as tf
import tensorflow_transform as tft

from fakedetect.components import features
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


def declared_pixels(image_bytes: tf.Tensor) -> tf.Tensor:
  """width x height each JPEG/PNG/GIF/BMP header declares (int64 [batch]); 0 for other bytes.

  Read from the header only, so a decompression bomb is refused before any pixel is decoded.
  """
  head = tf.strings.substr(tf.strings.join([image_bytes, b'\0' * 32]), 0, 32)
  b = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)
  word = lambda i, n, big: sum(b[:, i + k] * 256**(n - 1 - k if big else k) for k in range(n))
  starts = lambda magic: tf.strings.substr(image_bytes, 0, len(magic)) == magic
  bmp_height = word(22, 4, False)
  bmp_height = tf.abs(tf.where(bmp_height >= 2**31, bmp_height - 2**32, bmp_height))
  jpeg = tf.map_fn(
      lambda one: tf.cond(
          tf.strings.substr(one, 0, 3) == b'\xff\xd8\xff',
          lambda: tf.reduce_prod(tf.cast(tf.image.extract_jpeg_shape(one)[:2], tf.int64)),
          lambda: tf.constant(0, tf.int64)),
      image_bytes, fn_output_signature=tf.int64)
  zero = tf.zeros_like(jpeg)
  return (jpeg +
          tf.where(starts(b'\x89PNG'), word(16, 4, True) * word(20, 4, True), zero) +
          tf.where(starts(b'GIF8'), word(6, 2, False) * word(8, 2, False), zero) +
          tf.where(starts(b'BM'), word(18, 4, False) * bmp_height, zero))


def _within_limits(image_bytes: tf.Tensor) -> tf.Tensor:
  """The bytes, gated so the request fails with a clear error if any image is over a limit.

  The gate is a data dependency (check_numerics on the decoder's input path): Grappler may
  reorder a control dependency on an Assert, which would let a bomb be decoded first.
  """
  for over, message in (
      (tf.strings.length(image_bytes) > MAX_IMAGE_BYTES,
       f'image_bytes: an image is larger than {MAX_IMAGE_BYTES} bytes'),
      (declared_pixels(image_bytes) > MAX_IMAGE_PIXELS,
       f'image_bytes: an image declares more than {MAX_IMAGE_PIXELS} pixels')):
    bad = tf.cast(tf.reduce_any(over), tf.float32)
    gate = tf.debugging.check_numerics(bad / (1.0 - bad), message)  # inf when over: raises
    image_bytes = tf.strings.substr(image_bytes, tf.zeros_like(tf.strings.length(image_bytes)),
                                    tf.strings.length(image_bytes) + tf.cast(gate, tf.int32))
  return image_bytes


class _ExportModule(tf.Module):
  """Holds the model, the Transform layer and the decision threshold as tracked state."""

  def __init__(self, model, tf_transform_output: tft.TFTransformOutput, threshold: float,
               view: views.View, backbone: str):
    super().__init__()
    self.model = model
    self.tft_layer = tf_transform_output.transform_features_layer()
    self.threshold = tf.Variable(threshold, dtype=tf.float32, trainable=False, name='threshold')
    self._view = view
    self._backbone = backbone
    raw_spec = tf_transform_output.raw_feature_spec()
    raw_spec.pop(features.LABEL_KEY, None)
    self._example_spec = raw_spec
    self._image_shape = list(raw_spec[features.IMAGE_KEY].shape)

  def _predict(self, raw_features: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    transformed = self.tft_layer(raw_features)
    inputs = views.serving_inputs(transformed, self._view)
    probability = tf.reshape(self.model(inputs, training=False), [-1])
    probability = tf.cast(probability, tf.float32)
    return {
        PROBABILITY_KEY: probability,
        DECISION_KEY: tf.cast(probability >= self.threshold, tf.int64),
    }

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='image_bytes')])
  def serve_images(self, image_bytes):
    image_bytes = _within_limits(image_bytes)
    # The Transform graph takes the feature as the schema declares it ([batch, 1] when dense).
    shaped = tf.reshape(image_bytes, [-1] + self._image_shape)
    return self._predict({features.IMAGE_KEY: shaped})

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def serve_examples(self, serialized):
    parsed = tf.io.parse_example(serialized, {features.IMAGE_KEY: self._example_spec[
        features.IMAGE_KEY]})
    return self._predict(parsed)

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
           view: views.View, extra_metadata: Dict[str, Any]) -> None:
  """Saves the serving SavedModel (TF Serving layout is added by the Pusher's version folder).

  `extra_metadata` must name the `backbone`; the view's settings are added here."""
  module = _ExportModule(model, tf_transform_output, threshold, view,
                         extra_metadata.get('backbone', ''))
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
  metadata = dict(extra_metadata, threshold=float(threshold), view=view.name,
                  image_size=view.size, crop_size=view.crop_size, native_size=view.native_size,
                  label_names=list(features.LABEL_NAMES))
  path = os.path.join(export_dir, METADATA_FILE)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(json.dumps(metadata, indent=2, sort_keys=True))


def read_metadata(model_dir: str) -> Dict[str, Any]:
  with tf.io.gfile.GFile(os.path.join(model_dir, METADATA_FILE)) as f:
    return json.loads(f.read())
