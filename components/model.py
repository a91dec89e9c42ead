"""The classifier: a small CNN whose width, depth and dropout are hyperparameters.

Written against Keras 3 (`import keras`), never `tf.keras`: TFT flips `tf.keras` to tf_keras when
imported, and keras-tuner only accepts Keras 3 models (see TFX-NOTES).
"""

from typing import Any, Dict

import keras

from components import features


def augmentation(flip: bool, rotation: float, color_jitter: float) -> keras.Sequential:
  """Random flips, small rotations and colour jitter, mapped over the training input only.

  Kept out of the classifier so the exported model holds no augmentation state and evaluation
  and serving can never augment.
  """
  layers = []
  if flip:
    layers.append(keras.layers.RandomFlip('horizontal_and_vertical'))
  if rotation > 0:
    layers.append(keras.layers.RandomRotation(rotation, fill_mode='reflect'))
  if color_jitter > 0:
    layers.append(keras.layers.RandomBrightness(color_jitter, value_range=(0.0, 1.0)))
    layers.append(keras.layers.RandomContrast(color_jitter))
  return keras.Sequential(layers, name='augmentation')


def build(image_size: int, width: int = 32, depth: int = 3, dropout: float = 0.3,
          learning_rate: float = 3e-3) -> keras.Model:
  """Conv blocks (conv-BN-ReLU x2, pool) doubling in width, global pooling, dropout, sigmoid.

  Global average pooling keeps the parameter count independent of the image size, and the first
  block has no stride so pixel-level traces (noise, up-sampling periodicity) reach the filters.
  """
  inputs = keras.Input(shape=(image_size, image_size, features.CHANNELS),
                       name=features.TRANSFORMED_IMAGE_KEY)
  x = inputs
  for block in range(depth):
    filters = width * 2**block
    for _ in range(2):
      x = keras.layers.Conv2D(filters, 3, padding='same', use_bias=False)(x)
      x = keras.layers.BatchNormalization(momentum=0.9)(x)  # settles within a few small epochs
      x = keras.layers.ReLU()(x)
    if block < depth - 1:
      x = keras.layers.MaxPooling2D()(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  x = keras.layers.Dropout(dropout)(x)
  # float32 output even under mixed precision, so probabilities stay well calibrated.
  outputs = keras.layers.Dense(1, activation='sigmoid', dtype='float32', name='fake_probability')(x)
  model = keras.Model(inputs, outputs, name='fakedetect_cnn')
  model.compile(
      optimizer=keras.optimizers.Adam(learning_rate),
      loss=keras.losses.BinaryCrossentropy(),
      metrics=[keras.metrics.BinaryAccuracy(name='accuracy'),
               keras.metrics.Precision(name='precision'),
               keras.metrics.Recall(name='recall'),
               keras.metrics.AUC(name='auc')])
  return model


HPARAM_NAMES = ('learning_rate', 'width', 'depth', 'dropout', 'flip', 'rotation', 'color_jitter')


def build_from_hparams(image_size: int, hparams: Dict[str, Any]) -> keras.Model:
  """Builds from a dict holding HPARAM_NAMES (the TrainConfig or the Tuner's best values)."""
  return build(image_size, width=int(hparams['width']), depth=int(hparams['depth']),
               dropout=float(hparams['dropout']), learning_rate=float(hparams['learning_rate']))


def augmentation_from_hparams(hparams: Dict[str, Any]) -> keras.Sequential:
  return augmentation(bool(hparams['flip']), float(hparams['rotation']),
                      float(hparams['color_jitter']))
