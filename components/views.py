"""What the model sees of an image: its views, decided here and nowhere else.

  global  the whole image resized to `size` x `size` (bilinear, antialiased when shrinking): layout
          and content, what a 32 px CIFAKE thumbnail is anyway.
  local   native pixels, never resampled: the central `native_size` square of the image (mirrored
          copies tile an image smaller than that, which moves pixels but never interpolates them).
          Training takes one random `crop_size` crop of it per image per epoch; everything else
          (the threshold, TFMA, the robustness gate, predict, evaluate, explain, TF Serving) takes a
          fixed grid of crops covering it, whose features the model averages.
  both    the two, fused by the model (components/model.py).

The Transform stores per example what its view needs: the global image as float32, the native
square as uint8 (a serialized tensor). Both are bounded by the settings, never by a photo's
megapixels: at most native_size^2 x 3 bytes plus size^2 x 12 bytes an example. The Trainer and the
exported model turn the stored features into model inputs with `training_inputs` and
`serving_inputs`; the exported serving signatures run the same Transform graph first, so a served
image passes through exactly the code a training image did.

With `standardize`, the Transform also measures each input's per-channel mean and standard
deviation over the training split (tf.Transform analyzers, one pass; the results are constants of
its graph) and stores them beside every example. The model, not the Transform, applies them: its
first layer (components/model.py), after augmentation, which works on [0, 1] pixels. The Trainer
reads them back from the Transform graph with `channel_statistics`, and the exported model
carries them, so serving standardises exactly as training did.
"""

import dataclasses
from typing import Dict, List, Tuple

from fakedetect.components import features

GLOBAL, LOCAL, BOTH = 'global', 'local', 'both'
AUTO = 'auto'  # resolved from the data folder before the pipeline is built (pipeline/auto.py)
VIEWS = (AUTO, GLOBAL, LOCAL, BOTH)

# Transformed feature (stored by the Transform) and model input names.
NATIVE_KEY = 'native'  # serialized uint8 [native_size, native_size, 3]
GLOBAL_INPUT = features.TRANSFORMED_IMAGE_KEY  # float32 [size, size, 3] in [0, 1]
CROPS_INPUT = 'crops'  # float32 [crops, crop_size, crop_size, 3] in [0, 1]
# Per-channel (mean, std) of each model input over the training split, float32 [3] per example.
STATISTICS_KEYS = {GLOBAL_INPUT: ('image_channel_mean', 'image_channel_std'),
                   CROPS_INPUT: ('crops_channel_mean', 'crops_channel_std')}


@dataclasses.dataclass(frozen=True)
class View:
  """A resolved view: `name` is global, local or both."""
  name: str = GLOBAL
  size: int = features.DEFAULT_IMAGE_SIZE
  crop_size: int = 64
  native_size: int = 256
  standardize: bool = False  # the Transform measures per-channel statistics (see above)

  def __post_init__(self):
    if self.name not in (GLOBAL, LOCAL, BOTH):
      raise ValueError(f'view {self.name!r}: expected global, local or both (auto is resolved '
                       'from the data folder before the pipeline is built).')

  @property
  def uses_global(self) -> bool:
    return self.name in (GLOBAL, BOTH)

  @property
  def uses_local(self) -> bool:
    return self.name in (LOCAL, BOTH)

  def grid(self) -> List[int]:
    """Top-left offsets, on each axis, of the evaluation crops: the fewest that cover the square."""
    count = -(-self.native_size // self.crop_size)
    if count == 1:
      return [0]
    last = self.native_size - self.crop_size
    return [round(i * last / (count - 1)) for i in range(count)]

  def describe(self) -> str:
    parts = []
    if self.uses_global:
      parts.append(f'the whole image resized to {self.size} px')
    if self.uses_local:
      crops = len(self.grid())**2
      parts.append(f'native {self.crop_size} px crops of the central {self.native_size} px '
                   f'(a random crop in training, a grid of {crops} averaged otherwise)')
    return ' + '.join(parts)


def from_metadata(metadata: Dict[str, object]) -> View:
  """The view a model was exported with, from its metadata (the JSON file, or what the metadata
  signature returns); models from before views saw the global one."""
  metadata = {k: v.numpy() if hasattr(v, 'numpy') else v for k, v in metadata.items()}
  name = metadata.get('view', GLOBAL)
  return View(name.decode() if isinstance(name, bytes) else str(name),
              int(metadata.get('image_size', features.DEFAULT_IMAGE_SIZE)),
              int(metadata.get('crop_size', View.crop_size)),
              int(metadata.get('native_size', View.native_size)))


def decode_and_resize(image_bytes, image_size: int):
  """Encoded images (tf.string [batch]) -> float32 [batch, size, size, 3] in [0, 1]: global view.

  Accepts JPEG, PNG (8 and 16 bit), GIF (first frame) and BMP, grey, RGB or RGBA; the dtype-aware
  decode maps any bit depth onto [0, 1] before resizing, so normalization is the same for all.
  An image already at the size passes unchanged; a larger one is low-pass filtered as it shrinks
  (antialias), so a 4,000 px photo is not point-sampled.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def _one(encoded):
    image = tf.io.decode_image(
        encoded, channels=features.CHANNELS, dtype=tf.float32, expand_animations=False)
    image.set_shape([None, None, features.CHANNELS])
    image = tf.image.resize(image, [image_size, image_size], method='bilinear', antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)

  image_bytes = tf.reshape(image_bytes, [-1])
  return tf.map_fn(
      _one, image_bytes,
      fn_output_signature=tf.TensorSpec([image_size, image_size, features.CHANNELS], tf.float32))


def _cover(image, side: int, axis: int):
  """`image` grown along `axis` to at least `side` by alternating mirrored copies (no
  interpolation)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  length = tf.shape(image)[axis]

  def tiled():
    pair = tf.concat([image, tf.reverse(image, [axis])], axis)
    multiples = tf.tensor_scatter_nd_update(
        tf.ones([3], tf.int32), [[axis]], [(side + 2 * length - 1) // (2 * length)])
    return tf.tile(pair, multiples)

  return tf.cond(length >= side, lambda: image, tiled)


def native_square(image_bytes, native_size: int):
  """Encoded images (tf.string [batch]) -> uint8 [batch, n, n, 3]: the central n x n native pixels.

  16-bit PNGs keep their high byte, as the dtype-aware decode does for every path.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def _one(encoded):
    image = tf.io.decode_image(
        encoded, channels=features.CHANNELS, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, features.CHANNELS])
    image = _cover(_cover(image, native_size, 0), native_size, 1)
    top = (tf.shape(image)[0] - native_size) // 2
    left = (tf.shape(image)[1] - native_size) // 2
    return image[top:top + native_size, left:left + native_size]

  image_bytes = tf.reshape(image_bytes, [-1])
  return tf.map_fn(
      _one, image_bytes,
      fn_output_signature=tf.TensorSpec([native_size, native_size, features.CHANNELS], tf.uint8))


def transform(image_bytes, view: View) -> Dict[str, object]:
  """The Transform's image features for `view` (preprocessing_fn: training and serving)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  outputs, pixels = {}, {}
  if view.uses_global:
    outputs[GLOBAL_INPUT] = pixels[GLOBAL_INPUT] = decode_and_resize(image_bytes, view.size)
  if view.uses_local:
    square = native_square(image_bytes, view.native_size)
    pixels[CROPS_INPUT] = _to_float(square)  # every crop is a window of it
    outputs[NATIVE_KEY] = tf.map_fn(
        tf.io.serialize_tensor, square, fn_output_signature=tf.TensorSpec([], tf.string))
  if view.standardize:
    for name, values in pixels.items():
      outputs.update(zip(STATISTICS_KEYS[name], _channel_statistics(values)))
  return outputs


def _channel_statistics(pixels):
  """(mean, std) per channel of every pixel of float [b, h, w, c] over the analysed split (the
  Transform analyses train), each as [b, c]. Images of one input share one size, so the pixel
  mean is the mean of the images' means, and the pixel variance the mean of their variances plus
  the variance of their means (E[x^2] - E[x]^2 loses a narrow channel's spread to rounding)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  means, variances = tf.nn.moments(pixels, axes=[1, 2])
  mean = tft.mean(means, reduce_instance_dims=False)
  variance = (tft.mean(variances, reduce_instance_dims=False) +
              tft.var(means, reduce_instance_dims=False))
  std = tf.sqrt(tf.maximum(variance, 1e-12))
  return tf.zeros_like(means) + mean, tf.zeros_like(means) + std


def channel_statistics(tf_transform_output) -> Dict[str, Tuple[Tuple[float, ...], ...]]:
  """{model input: (per-channel mean, per-channel std)} the Transform measured on the training
  split; {} when it ran without `standardize`. The analyzers' results are constants of the
  Transform graph, so one small image through it reads them: no pass over the data."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  stored = tf_transform_output.transformed_feature_spec()
  keys = {name: pair for name, pair in STATISTICS_KEYS.items() if pair[0] in stored}
  if not keys:
    return {}
  shape = list(tf_transform_output.raw_feature_spec()[features.IMAGE_KEY].shape)
  image = tf.reshape(tf.io.encode_png(tf.zeros([8, 8, features.CHANNELS], tf.uint8)), [1] + shape)
  found = tf_transform_output.transform_features_layer()({features.IMAGE_KEY: image})
  return {name: tuple(tuple(float(v) for v in found[key].numpy()[0]) for key in pair)
          for name, pair in keys.items()}


def _parse_native(serialized, view: View):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  shape = [view.native_size, view.native_size, features.CHANNELS]
  return tf.map_fn(lambda one: tf.ensure_shape(tf.io.parse_tensor(one, tf.uint8), shape),
                   tf.reshape(serialized, [-1]), fn_output_signature=tf.TensorSpec(shape, tf.uint8))


def _to_float(pixels):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.image.convert_image_dtype(pixels, tf.float32)  # / 255, as decode_image does


def training_inputs(transformed: Dict[str, object], view: View) -> Dict[str, object]:
  """Model inputs for training: the global image, and one random crop per image."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  inputs = {}
  if view.uses_global:
    inputs[GLOBAL_INPUT] = transformed[GLOBAL_INPUT]
  if view.uses_local:
    shape = [view.crop_size, view.crop_size, features.CHANNELS]
    crops = tf.map_fn(lambda square: tf.image.random_crop(square, shape),
                      _parse_native(transformed[NATIVE_KEY], view),
                      fn_output_signature=tf.TensorSpec(shape, tf.uint8))
    inputs[CROPS_INPUT] = _to_float(crops)[:, None]
  return inputs


def serving_inputs(transformed: Dict[str, object], view: View) -> Dict[str, object]:
  """Model inputs for everything but training: the global image, and the grid of crops."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  inputs = {}
  if view.uses_global:
    inputs[GLOBAL_INPUT] = transformed[GLOBAL_INPUT]
  if view.uses_local:
    square = _parse_native(transformed[NATIVE_KEY], view)
    size = view.crop_size
    crops = [square[:, top:top + size, left:left + size]
             for top in view.grid() for left in view.grid()]
    inputs[CROPS_INPUT] = _to_float(tf.stack(crops, axis=1))
  return inputs
