"""Training-input augmentation: geometry and colour, plus the forensic recipe.

Only the Trainer's and the Tuner's training input passes through here; evaluation, threshold
selection and serving never do, and the exported model holds no augmentation state.

Translation is CIFAKE's from-scratch recipe (pad by a few pixels, crop back at a random place): a
pure integer shift, never resampled, so pixel-level traces survive it. The padding mirrors the
image (REFLECT) rather than adding black, so a shifted image keeps its colour statistics and
the model learns no black frame it never meets in serving. It moves the whole image only: the
local view's crops are random windows already.

The forensic part teaches the detector not to lean on traces that a platform erases on upload:
a fraction of images is re-compressed as JPEG at a random quality, and a fraction is blurred by a
Gaussian of random width, so a re-encoded or softened fake still reads as fake.
"""

import dataclasses
from typing import Any, Dict

import keras
import tensorflow as tf

BLUR_KERNEL = 5  # taps; covers +-2 sigma up to sigma 1.0, the useful range at 32-256 px


@dataclasses.dataclass(frozen=True)
class Strengths:
  """How hard each augmentation pushes; 0 (or False) turns one off."""
  flip: bool = True
  translate: int = 0  # pixels of shift on each axis, at most (the whole image only)
  rotation: float = 0.0  # fraction of a full turn
  color_jitter: float = 0.0  # brightness and contrast factor
  jpeg_fraction: float = 0.0  # share of images re-compressed as JPEG
  jpeg_min_quality: int = 60  # quality drawn uniformly from [this, 100)
  blur_fraction: float = 0.0  # share of images blurred
  blur_max_sigma: float = 1.0  # sigma drawn uniformly from [0.2, this]

  @classmethod
  def from_hparams(cls, hparams: Dict[str, Any]) -> 'Strengths':
    """The fields present in `hparams` (TrainConfig values, or the Tuner's best), typed."""
    values = {}
    for field in dataclasses.fields(cls):
      if field.name in hparams:
        values[field.name] = type(field.default)(hparams[field.name])
    return cls(**values)


def _geometry_and_colour(strengths: Strengths) -> keras.Sequential:
  layers = []
  if strengths.flip:
    layers.append(keras.layers.RandomFlip('horizontal_and_vertical'))
  if strengths.rotation > 0:
    layers.append(keras.layers.RandomRotation(strengths.rotation, fill_mode='reflect'))
  if strengths.color_jitter > 0:
    layers.append(keras.layers.RandomBrightness(strengths.color_jitter, value_range=(0.0, 1.0)))
    layers.append(keras.layers.RandomContrast(strengths.color_jitter))
  return keras.Sequential(layers, name='augmentation')


def _random_jpeg(image: tf.Tensor, min_quality: int) -> tf.Tensor:
  quality = tf.random.uniform([], min_quality, 100, dtype=tf.int32)
  return tf.image.adjust_jpeg_quality(image, quality)


def _random_blur(image: tf.Tensor, max_sigma: float) -> tf.Tensor:
  sigma = tf.random.uniform([], 0.2, max(max_sigma, 0.2))
  taps = tf.range(BLUR_KERNEL, dtype=tf.float32) - (BLUR_KERNEL - 1) / 2
  weights = tf.exp(-0.5 * tf.square(taps / sigma))
  weights /= tf.reduce_sum(weights)
  kernel = tf.tile((weights[:, None] * weights[None, :])[:, :, None, None],
                   [1, 1, tf.shape(image)[-1], 1])
  half = BLUR_KERNEL // 2
  padded = tf.pad(image[None], [[0, 0], [half, half], [half, half], [0, 0]], mode='REFLECT')
  return tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], 'VALID')[0]


def translated(images: tf.Tensor, pixels: int) -> tf.Tensor:
  """Each image of [b, h, w, c] shifted by its own random integer offset in [-pixels, pixels] on
  each axis: the batch padded by `pixels` (mirrored) and every image cropped back at its offset,
  by gathering rows then columns (no per-image loop). Needs pixels < h and w."""
  shape = tf.shape(images)
  padded = tf.pad(images, [[0, 0], [pixels, pixels], [pixels, pixels], [0, 0]], mode='REFLECT')
  offsets = tf.random.uniform([shape[0], 2], 0, 2 * pixels + 1, dtype=tf.int32)
  rows = offsets[:, :1] + tf.range(shape[1])[None]  # [b, h]: the rows each image keeps
  columns = offsets[:, 1:] + tf.range(shape[2])[None]  # [b, w]
  images_rows = tf.gather(padded, rows, axis=1, batch_dims=1)  # [b, h, w + 2 pixels, c]
  return tf.gather(images_rows, columns, axis=2, batch_dims=1)


def _some(images: tf.Tensor, fraction: float, transform) -> tf.Tensor:
  """Applies `transform` to each image with probability `fraction` (images in [0, 1])."""
  def one(image):
    return tf.cond(tf.random.uniform([]) < fraction, lambda: transform(image), lambda: image)
  return tf.map_fn(one, images)


def augmenter(strengths: Strengths):
  """A function on a batch of float images in [0, 1] -> the augmented batch, still in [0, 1];
  None when every augmentation is off. Its `whole_image=False` (the local view's crops) skips
  the translation."""
  geometry = _geometry_and_colour(strengths)
  if (not geometry.layers and strengths.jpeg_fraction <= 0 and strengths.blur_fraction <= 0
      and strengths.translate <= 0):
    return None

  def apply(images: tf.Tensor, whole_image: bool = True) -> tf.Tensor:
    if strengths.jpeg_fraction > 0:
      images = _some(images, strengths.jpeg_fraction,
                     lambda image: _random_jpeg(image, strengths.jpeg_min_quality))
    if strengths.blur_fraction > 0:
      images = _some(images, strengths.blur_fraction,
                     lambda image: _random_blur(image, strengths.blur_max_sigma))
    if strengths.translate > 0 and whole_image:
      images = translated(images, strengths.translate)
    if geometry.layers:
      images = geometry(images, training=True)
    return tf.clip_by_value(images, 0.0, 1.0)

  return apply
