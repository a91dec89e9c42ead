"""Backbones: the feature extractors the classifier head sits on, chosen by name.

`cnn` is the project's original small CNN (what CIFAKE's results were measured with), `resnet` the
project's own residual network for 64-256 px views, and any `keras.applications` architecture
(ResNet50, EfficientNetB0, ...) the route to ImageNet-pretrained features. Every backbone maps
float [b, h, w, C] in [0, 1] (or a forensic filter's C channels, components/filters.py) to
globally average-pooled [b, features], so the head and the serving graph never depend on which.

Weights are 'none', 'imagenet' (applications only; Keras downloads and caches them), 'previous'
(the Trainer copies the last blessed model's weights in after building: build() leaves the
backbone initialised) or a weights file, for machines without network or a hand-made start.
"""

import contextlib
import difflib
import importlib
import os
import tempfile
from typing import Iterator, Optional, Tuple

import keras
import numpy as np

from fakedetect.components import batch_norm

OWN = ('cnn', 'resnet')
WEIGHTS = ('none', 'imagenet', 'previous')
# What Model.load_weights reads: Keras 3 weights, legacy H5 (ImageNet downloads) or a whole model.
WEIGHT_FILE_SUFFIXES = ('.weights.h5', '.h5', '.keras')
OWN_WEIGHTS_SUFFIX = '.weights.h5'  # what the own backbones' save_weights writes
# Largest input side the residual net's stem keeps at full resolution (see _resnet).
_FULL_RESOLUTION_STEM = 64
_BN_MOMENTUM = 0.9  # settles within a few small epochs


def applications() -> Tuple[str, ...]:
  """The architecture names keras.applications offers (its constructors are capitalised)."""
  return tuple(name for name in dir(keras.applications)
               if name[:1].isupper() and callable(getattr(keras.applications, name)))


def names_message() -> str:
  return ('cnn, resnet or a keras.applications name such as ResNet50, EfficientNetB0, '
          'MobileNetV3Small')


def check(name: str, weights: str, channels: int = 3) -> Optional[str]:
  """What is wrong with backbone `name` starting from `weights` on `channels` input channels
  (3 for pixels, more behind a filter), in words a user can act on; None when it can be built."""
  if name not in OWN + applications():
    close = difflib.get_close_matches(name.lower(), [n.lower() for n in OWN + applications()], 1)
    hint = [n for n in OWN + applications() if close and n.lower() == close[0]]
    return (f'unknown backbone {name!r}' + (f' (did you mean {hint[0]}?)' if hint else '') +
            f': use {names_message()}')
  if weights in ('none', 'previous'):
    return None
  if weights == 'imagenet':
    if name in OWN:
      return (f'backbone {name!r} has no ImageNet weights (it is the project\'s own): use a '
              f'keras.applications backbone such as ResNet50 for imagenet, or weights none, '
              f'previous or a weights file')
    if channels != 3:
      return (f'ImageNet weights take 3 colour channels, but the input filter gives {channels}: '
              f'use no filter (or npr, which keeps 3 channels) with imagenet, or weights none')
    return None
  suffixes = (OWN_WEIGHTS_SUFFIX,) if name in OWN else WEIGHT_FILE_SUFFIXES
  if not weights.endswith(suffixes):
    return (f'weights {weights!r} is neither one of {", ".join(WEIGHTS)} nor a weights file for '
            f'{name} (a path ending in {", ".join(suffixes)})')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not tf.io.gfile.exists(weights):
    return f'weights file {weights} does not exist: check the path, or use weights none'
  return None


def build(name: str, input_shape: Tuple[int, int, int], width: int, depth: int,
          weights: str = 'none', model_name: str = 'backbone',
          last_block_factor: float = 1.0) -> keras.Model:
  """The backbone `name` as a model [b, h, w, C] -> [b, features]; width/depth size the own
  backbones and are ignored by applications, whose size is in their name. `last_block_factor`
  widens the cnn's last block (the features the head reads); other backbones refuse it."""
  problem = check(name, weights, input_shape[-1])
  if problem:
    raise ValueError(problem)
  if last_block_factor != 1 and name != 'cnn':
    raise ValueError(f'train.last_block_factor={last_block_factor} widens the cnn backbone\'s '
                     f'last block; {name} has no such setting: use 1 or backbone cnn')
  inputs = keras.Input(shape=tuple(input_shape), name=f'{model_name}_input')
  with _local_copy(weights) as path:
    if name in OWN:
      outputs = (_cnn(inputs, width, depth, last_block_factor) if name == 'cnn'
                 else _resnet(inputs, width, depth))
      model = keras.Model(inputs, outputs, name=model_name)
      if path:
        _load_own(model, path, f'the weights file {weights} does not fit the backbone {name} '
                  f'(width {width}, depth {depth}, input {tuple(input_shape)})')
      return model
    return _application(name, inputs, 'imagenet' if weights == 'imagenet' else path, model_name)


@contextlib.contextmanager
def _local_copy(weights: str) -> Iterator[Optional[str]]:
  """The weights file as a local path (h5py reads local files only; gs:// is copied), or None."""
  if weights in WEIGHTS:
    yield None
  elif '://' not in weights:
    yield weights
  else:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    suffix = next(s for s in WEIGHT_FILE_SUFFIXES if weights.endswith(s))
    with tempfile.TemporaryDirectory() as folder:
      local = os.path.join(folder, 'weights' + suffix)
      tf.io.gfile.copy(weights, local)
      yield local


def _load_own(model: keras.Model, path: str, mismatch: str) -> None:
  """Loads a file saved by `save_weights` of the same backbone, refusing any other shape.

  Keras matches weights by position and raises when the model has a variable the file lacks or
  of another shape, but ignores what the file has beyond the model (a deeper net's file loads
  into a shallower one), so the file's variables are counted too.
  """
  import h5py  # pylint: disable=g-import-not-at-top
  problem = None
  try:
    with h5py.File(path, 'r') as stored:
      found = []
      stored.visititems(lambda key, item: found.append(key) if isinstance(item, h5py.Dataset)
                        else None)
    if len(found) != len(model.weights):
      problem = f'it holds {len(found)} variables, the backbone has {len(model.weights)}'
    else:
      model.load_weights(path)
  except (ValueError, KeyError, OSError) as error:
    problem = str(error)
  if problem:
    raise ValueError(
        f'{mismatch}: {problem}. Use a file saved by the same backbone setting\'s '
        f'save_weights, or weights none')


def _cnn(inputs, width: int, depth: int, last_block_factor: float = 1.0):
  """The original CNN body: `depth` blocks of conv-BN-ReLU x2, max-pooling between blocks,
  width doubling (the last block's times `last_block_factor`). The first block has no stride, so
  pixel-level traces reach the filters."""
  x = inputs
  for block in range(depth):
    filters = width * 2**block
    if block == depth - 1:
      filters = max(1, round(filters * last_block_factor))
    for _ in range(2):
      x = keras.layers.Conv2D(filters, 3, padding='same', use_bias=False)(x)
      x = batch_norm.FusedBatchNormalization(momentum=_BN_MOMENTUM)(x)
      x = keras.layers.ReLU()(x)
    if block < depth - 1:
      x = keras.layers.MaxPooling2D()(x)
  return keras.layers.GlobalAveragePooling2D()(x)


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, zero_gamma: bool = False):
  x = keras.layers.Conv2D(filters, kernel, strides=stride, padding='same', use_bias=False,
                          name=f'{name}_conv')(x)
  return batch_norm.FusedBatchNormalization(
      momentum=_BN_MOMENTUM, gamma_initializer='zeros' if zero_gamma else 'ones',
      name=f'{name}_bn')(x)


def _basic_block(x, filters: int, stride: int, name: str):
  """Two 3x3 conv-BN with an identity (or 1x1 projection) shortcut, ReLU after the sum. The
  residual's last BN starts at zero, so each block starts as the identity (Goyal et al. 2017),
  which lets a net this deep train from scratch on a few thousand images."""
  shortcut = x
  if stride != 1 or x.shape[-1] != filters:
    shortcut = _conv_bn(x, filters, 1, stride, f'{name}_proj')
  y = keras.layers.ReLU(name=f'{name}_relu1')(_conv_bn(x, filters, 3, stride, f'{name}_1'))
  y = _conv_bn(y, filters, 3, 1, f'{name}_2', zero_gamma=True)
  return keras.layers.ReLU(name=f'{name}_out')(keras.layers.Add(name=f'{name}_add')([shortcut, y]))


def _resnet(inputs, width: int, depth: int):
  """The project's residual net (a ResNet-10 at depth 4): a 3x3 stem, then `depth` stages of one
  basic block each, doubling the width and halving the size from the second stage on, then
  global average pooling.

  The stem keeps full resolution up to 64 px, where up-sampling traces live at pixel level; above
  that it strides by 2, which keeps a 128 px view as cheap as a 64 px one. One block per stage,
  not ResNet-18's two: on this project's 2-core machines a second block halved training speed
  (12.5 against 25 images/s at 64 and 128 px, depth 4, width 32, float32), and one block already
  has as many parameters as the 4-block CNN (1.2 M).
  """
  side = max((d for d in inputs.shape[1:3] if d is not None), default=None)
  stem_stride = 1 if side is not None and side <= _FULL_RESOLUTION_STEM else 2
  x = keras.layers.ReLU(name='stem_relu')(_conv_bn(inputs, width, 3, stem_stride, 'stem'))
  for stage in range(depth):
    x = _basic_block(x, width * 2**stage, 2 if stage else 1, f'stage{stage + 1}')
  return keras.layers.GlobalAveragePooling2D(name='pool')(x)


def _application(name: str, inputs, weights: Optional[str], model_name: str) -> keras.Model:
  """keras.applications' `name` without its classifier, behind the input scaling it expects."""
  try:
    network = getattr(keras.applications, name)(
        include_top=False, pooling='avg', input_shape=tuple(inputs.shape[1:]), weights=weights)
  except Exception as error:  # pylint: disable=broad-except
    if weights != 'imagenet':
      raise
    raise RuntimeError(
        f'building {name} with ImageNet weights failed: {error}. Keras downloads them the first '
        f'time (to ~/.keras/models); on a machine without network, fetch the file named above '
        f'on one with network and set the weights to its path') from error
  outputs = network(ApplicationInput(name, name=f'{name.lower()}_input_scaling')(inputs))
  return keras.Model(inputs, outputs, name=model_name)


@keras.saving.register_keras_serializable(package='fakedetect')
class ApplicationInput(keras.layers.Layer):
  """Maps [0, 1] pixels to the input a keras.applications network expects, with that
  application's own `preprocess_input` ([0, 255], [-1, 1], BGR minus ImageNet means, ...).

  A filter's channels (not 3) have no colour means to subtract: they are multiplied by the
  application's gain only (255 for a [0, 255] network, 2 for [-1, 1]), so they reach the first
  convolution at the scale its initialisation and batch normalization were designed for.
  """

  def __init__(self, application: str, **kwargs):
    kwargs.setdefault('trainable', False)
    kwargs.setdefault('dtype', 'float32')  # ImageNet means subtracted at full precision
    super().__init__(**kwargs)
    self.application = application
    module = importlib.import_module(getattr(keras.applications, application).__module__)
    self._preprocess = module.preprocess_input
    white, black = (self._preprocess(np.full((1, 1, 1, 3), value, np.float32))
                    for value in (255.0, 0.0))
    self._gain = float(np.mean(white - black))

  def call(self, inputs):
    if inputs.shape[-1] == 3:
      return self._preprocess(inputs * 255.0)
    return inputs * self._gain

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return {**super().get_config(), 'application': self.application}
