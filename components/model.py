"""The classifier: a small CNN whose width, depth and dropout are hyperparameters.

Written against Keras 3 (`import keras`), never `tf.keras`: TFT flips `tf.keras` to tf_keras when
imported, and keras-tuner only accepts Keras 3 models (see TFX-NOTES).
"""

import dataclasses
from typing import Any, Dict

import keras

from fakedetect.components import augment
from fakedetect.components import features


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


# Model hyperparameters, then the augmentation strengths (components/augment.py): the values the
# Tuner may search and the Trainer reads from its config.
HPARAM_NAMES = ('learning_rate', 'width', 'depth', 'dropout') + tuple(
    field.name for field in dataclasses.fields(augment.Strengths))


def build_from_hparams(image_size: int, hparams: Dict[str, Any]) -> keras.Model:
  """Builds from a dict holding HPARAM_NAMES (the TrainConfig or the Tuner's best values)."""
  return build(image_size, width=int(hparams['width']), depth=int(hparams['depth']),
               dropout=float(hparams['dropout']), learning_rate=float(hparams['learning_rate']))
