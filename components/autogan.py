"""AutoGAN (Zhang, Karaman and Chang, WIFS 2019): a generator's up-sampling stack, trained on real
images only, whose reconstructions carry the traces that generators share.

  encoder   3x3 conv, then `levels` stride-2 convs (width doubling): the image at 1/2^levels
  decoder   `levels` up-sampling steps back to full size, then a 3x3 conv to RGB (sigmoid):
              nearest     nearest-neighbour x2, then a 3x3 conv (as in StyleGAN-era generators)
              transposed  a 3x3 stride-2 transposed conv, whose uneven overlap leaves the
                          checkerboard of DCGAN/CycleGAN-style generators
  discriminator  a PatchGAN: stride-2 4x4 convs judging each patch real or reconstructed

The generator minimises L1 reconstruction plus a least-squares adversarial term; the
discriminator tells real crops from reconstructed ones. The reconstruction keeps the content (so a
detector cannot learn content), loses what an encoder cannot carry (sensor noise, fine texture)
and adds the decoder's up-sampling pattern: the evidence a detector should learn. Everything is
fully convolutional: trained on random crops, it reconstructs an image of any size whole.

Written against Keras 3 (`import keras`), as components/model.py is.
"""

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from fakedetect.pipeline import config as config_lib

DECODERS = config_lib.SIMULATE_DECODERS
TRANSPOSED, NEAREST = DECODERS
# Weight of the adversarial term against L1 on [0, 1] pixels: enough to push reconstructions off
# the blurry L1 optimum, small enough that they stay the same picture.
ADVERSARIAL_WEIGHT = 0.01
# Adam with beta_1 0.5, as GANs since DCGAN; 5x their 2e-4, as a few hundred steps must do.
LEARNING_RATE = 1e-3
# An epoch is this many batches whatever the number of images: a small training split still
# gets the steps a generator needs to reconstruct well, a large one is sampled.
STEPS_PER_EPOCH = 100


@dataclasses.dataclass(frozen=True)
class Shape:
  """The generator's size; `levels` down- and up-samplings (x2^levels)."""
  decoder: str = TRANSPOSED
  levels: int = 2
  width: int = 16

  @property
  def multiple(self) -> int:
    """Image sides must be multiples of this (reconstruct pads and crops back)."""
    return 2**self.levels


def generator(shape: Shape) -> keras.Model:
  if shape.decoder not in DECODERS:
    raise ValueError(f'decoder {shape.decoder!r}: expected one of {", ".join(DECODERS)}.')
  inputs = keras.Input([None, None, 3])
  x = keras.layers.Conv2D(shape.width, 3, padding='same', activation='relu')(inputs)
  for level in range(shape.levels):
    x = keras.layers.Conv2D(shape.width * 2**(level + 1), 3, strides=2, padding='same',
                            activation='relu')(x)
  x = keras.layers.Conv2D(shape.width * 2**shape.levels, 3, padding='same', activation='relu')(x)
  for level in reversed(range(shape.levels)):
    filters = shape.width * 2**level
    if shape.decoder == NEAREST:
      x = keras.layers.UpSampling2D(2, interpolation='nearest')(x)
      x = keras.layers.Conv2D(filters, 3, padding='same', activation='relu')(x)
    else:
      x = keras.layers.Conv2DTranspose(filters, 3, strides=2, padding='same',
                                       activation='relu')(x)
  outputs = keras.layers.Conv2D(3, 3, padding='same', activation='sigmoid')(x)
  return keras.Model(inputs, outputs, name=f'autogan_{shape.decoder}')


def discriminator(width: int) -> keras.Model:
  inputs = keras.Input([None, None, 3])
  x = inputs
  for i in range(3):
    x = keras.layers.Conv2D(width * 2**i, 4, strides=2, padding='same')(x)
    x = keras.layers.LeakyReLU(0.2)(x)
  outputs = keras.layers.Conv2D(1, 3, padding='same')(x)
  return keras.Model(inputs, outputs, name='patch_discriminator')


def random_crops(images: Sequence[np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
  """One random size x size crop of each uint8 image (every side >= size) -> float32 [0, 1]."""
  out = np.empty([len(images), size, size, 3], np.float32)
  for i, image in enumerate(images):
    top = rng.integers(0, image.shape[0] - size + 1)
    left = rng.integers(0, image.shape[1] - size + 1)
    out[i] = image[top:top + size, left:left + size] / 255.0
  return out


def crop_size(images: Sequence[np.ndarray], wanted: int, multiple: int) -> int:
  """The training crop: `wanted`, or the smallest side among the images if smaller, down to a
  multiple of `multiple` (the crops of a batch share one size)."""
  side = min([wanted] + [min(image.shape[:2]) for image in images])
  side -= side % multiple
  if side < multiple:
    raise ValueError(f'images of {side} px cannot go through {multiple}x down-sampling.')
  return side


class Simulator:
  """Trains the generator against the discriminator on real images; reconstructs images."""

  def __init__(self, shape: Shape, seed: int = 0):
    keras.utils.set_random_seed(seed)
    self.shape = shape
    self.generator = generator(shape)
    self.discriminator = discriminator(shape.width)
    self._g_optimizer = keras.optimizers.Adam(LEARNING_RATE, beta_1=0.5)
    self._d_optimizer = keras.optimizers.Adam(LEARNING_RATE, beta_1=0.5)
    self._rng = np.random.default_rng(seed)

  @tf.function(reduce_retracing=True)
  def _step(self, real):
    with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
      fake = self.generator(real, training=True)
      real_score = self.discriminator(real, training=True)
      fake_score = self.discriminator(fake, training=True)
      l1 = tf.reduce_mean(tf.abs(real - fake))
      adversarial = tf.reduce_mean(tf.square(fake_score - 1.0))
      g_loss = l1 + ADVERSARIAL_WEIGHT * adversarial
      d_loss = 0.5 * (tf.reduce_mean(tf.square(real_score - 1.0)) +
                      tf.reduce_mean(tf.square(fake_score)))
    g_vars = self.generator.trainable_variables
    d_vars = self.discriminator.trainable_variables
    self._g_optimizer.apply_gradients(zip(g_tape.gradient(g_loss, g_vars), g_vars))
    self._d_optimizer.apply_gradients(zip(d_tape.gradient(d_loss, d_vars), d_vars))
    return {'l1': l1, 'adversarial': adversarial, 'discriminator': d_loss}

  def train(self, images: Sequence[np.ndarray], epochs: int, crop: int, batch_size: int = 16,
            steps_per_epoch: int = STEPS_PER_EPOCH,
            on_epoch: Optional[Callable[[int, Dict[str, float]], None]] = None
            ) -> Dict[str, List[float]]:
    """Per epoch, `steps_per_epoch` batches of random crops, every image in turn (each image as
    often as the others); returns each loss's mean per epoch."""
    size = crop_size(images, crop, self.shape.multiple)
    history: Dict[str, List[float]] = {'l1': [], 'adversarial': [], 'discriminator': []}
    needed = steps_per_epoch * batch_size
    for epoch in range(epochs):
      order = np.concatenate([self._rng.permutation(len(images))
                              for _ in range(-(-needed // len(images)))])[:needed]
      crops = random_crops([images[i] for i in order], size, self._rng)
      sums = dict.fromkeys(history, 0.0)
      for start in range(0, len(crops), batch_size):
        losses = self._step(tf.constant(crops[start:start + batch_size]))
        for name, value in losses.items():
          sums[name] += float(value) * len(crops[start:start + batch_size])
      for name in history:
        history[name].append(sums[name] / len(crops))
      if on_epoch:
        on_epoch(epoch + 1, {name: values[-1] for name, values in history.items()})
    return history

  def reconstruct(self, images: Sequence[np.ndarray]) -> List[np.ndarray]:
    """uint8 [h, w, 3] images of one size -> the generator's uint8 [h, w, 3] of each, whole:
    mirrored up to a multiple of 2^levels on each side, reconstructed, cropped back."""
    h, w = images[0].shape[:2]
    m = self.shape.multiple
    pad = [(0, 0), (0, -h % m), (0, -w % m), (0, 0)]
    batch = np.pad(np.stack(images), pad, mode='reflect' if min(h, w) > 1 else 'edge')
    out = self.generator(batch.astype(np.float32) / 255.0, training=False).numpy()
    return list(np.clip(np.round(out[:, :h, :w] * 255.0), 0, 255).astype(np.uint8))


def same_size_runs(images: Sequence[np.ndarray], most: int) -> List[List[int]]:
  """Indices of consecutive images of one size, at most `most` together: the batches a whole
  dataset of one size (CIFAKE, FFHQ) is reconstructed in, one by one where sizes vary."""
  runs: List[List[int]] = []
  for i, image in enumerate(images):
    if runs and len(runs[-1]) < most and images[runs[-1][0]].shape == image.shape:
      runs[-1].append(i)
    else:
      runs.append([i])
  return runs
