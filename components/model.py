"""The classifier: the view's inputs, an optional forensic filter, a backbone per input, a head.

  global view  image [b, size, size, 3] -> standardize -> filter -> backbone -> features
  local view   crops [b, k, crop, crop, 3] -> standardize -> filter -> backbone on every crop ->
               features averaged over the k crops (k = 1 in training, the grid otherwise; see
               components/views.py)
  both         the two feature vectors concatenated (global first)
  then dropout and one sigmoid unit. Averaging features before a linear head is averaging the
  crops' logits, so a grid's score is the mean evidence over the square. `standardize` is there
  only when the Transform measured the inputs' statistics (image.standardize): a fixed per-channel
  affine, so the exported model applies exactly what training did.

The training recipe's levers live here too: AdamW's decoupled weight decay, label smoothing in the
loss, and an exponential moving average of the weights (`ema`), which `fit_callbacks` makes the
weights that are validated, kept by early stopping and exported.

Written against Keras 3 (`import keras`), never `tf.keras`: TFT flips `tf.keras` to tf_keras when
imported, and keras-tuner only accepts Keras 3 models (see TFX-NOTES).
"""

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import keras

from fakedetect.components import augment
from fakedetect.components import backbones
from fakedetect.components import features
from fakedetect.components import filters
from fakedetect.components import views

# Layer names other code looks up (explain.py's Grad-CAM, warm starts).
GLOBAL_FILTER, GLOBAL_BACKBONE = 'global_filter', 'global_backbone'
LOCAL_FEATURES = 'local_features'
HEAD = 'fake_probability'


@dataclasses.dataclass(frozen=True)
class Architecture:
  """What the model is made of (pipeline/config.py's ModelConfig, resolved)."""
  backbone: str = 'cnn'
  filter: str = 'none'
  weights: str = 'none'  # none | imagenet | a weights file ('previous' is the Trainer's)
  # {model input: (per-channel mean, std)} on the training split (views.channel_statistics),
  # applied by the first layer; {} leaves the inputs in [0, 1].
  input_statistics: Dict[str, Tuple[Tuple[float, ...], ...]] = dataclasses.field(
      default_factory=dict)

  @classmethod
  def from_dict(cls, values: Dict[str, Any]) -> 'Architecture':
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


@keras.saving.register_keras_serializable(package='fakedetect')
class CropFeatures(keras.layers.Layer):
  """Runs a backbone on each crop of [b, k, h, w, c] and averages its features over the k crops."""

  def __init__(self, backbone: keras.Model, **kwargs):
    super().__init__(**kwargs)
    self.backbone = backbone

  def build(self, input_shape):
    self.backbone.build((None,) + tuple(input_shape[2:]))

  def call(self, crops, training=None):
    shape = keras.ops.shape(crops)
    flat = keras.ops.reshape(crops, (-1,) + tuple(self.backbone.input_shape[1:]))
    found = self.backbone(flat, training=training)
    found = keras.ops.reshape(found, (shape[0], shape[1], found.shape[-1]))
    return keras.ops.mean(found, axis=1)

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.backbone.output_shape[-1])

  def get_config(self):
    return {**super().get_config(), 'backbone': keras.saving.serialize_keras_object(self.backbone)}

  @classmethod
  def from_config(cls, config):
    config = dict(config, backbone=keras.saving.deserialize_keras_object(config['backbone']))
    return cls(**config)


def _standardize(arch: Architecture, input_name: str, prefix: str):
  """The fixed per-channel standardisation of one input, or None without statistics."""
  if input_name not in arch.input_statistics:
    return None
  if arch.backbone not in backbones.OWN:
    raise ValueError(
        f'image.standardize scales the input of the own backbones ({", ".join(backbones.OWN)}); '
        f'{arch.backbone} scales it as its ImageNet weights expect: turn one of them off')
  mean, std = arch.input_statistics[input_name]
  return keras.layers.Normalization(mean=list(mean), variance=[s * s for s in std],
                                    dtype='float32', name=f'{prefix}_standardize')


def _branch(side: int, arch: Architecture, width: int, depth: int, prefix: str, input_name: str,
            last_block_factor: float = 1.0):
  """(fixed input layer or None, backbone model) for one view's input of side x side pixels.

  The fixed layer, named `{prefix}_filter` (what explain.py runs before the backbone), is the
  forensic filter, or the standardisation followed by the filter if there is one."""
  standardize = _standardize(arch, input_name, prefix)
  layer = filters.layer(arch.filter, f'{prefix}_filter' if standardize is None
                        else f'{prefix}_forensic_filter')
  if standardize is not None:
    layer = keras.Sequential([standardize] + ([layer] if layer is not None else []),
                             name=f'{prefix}_filter')
  channels = filters.channels(arch.filter, features.CHANNELS)
  backbone = backbones.build(arch.backbone, (side, side, channels), width, depth,
                             weights=arch.weights, model_name=f'{prefix}_backbone',
                             last_block_factor=last_block_factor)
  return layer, backbone


def build(view: views.View, arch: Architecture = Architecture(), width: int = 32, depth: int = 3,
          dropout: float = 0.3, learning_rate: float = 3e-3, weight_decay: float = 0.0,
          label_smoothing: float = 0.0, ema: float = 0.0,
          last_block_factor: float = 1.0) -> keras.Model:
  """The compiled classifier for `view`; inputs are named as views.py names them."""
  inputs, found = {}, []
  if view.uses_global:
    image = keras.Input((view.size, view.size, features.CHANNELS), name=views.GLOBAL_INPUT)
    inputs[views.GLOBAL_INPUT] = image
    layer, backbone = _branch(view.size, arch, width, depth, 'global', views.GLOBAL_INPUT,
                              last_block_factor)
    found.append(backbone(layer(image) if layer is not None else image))
  if view.uses_local:
    crops = keras.Input((None, view.crop_size, view.crop_size, features.CHANNELS),
                        name=views.CROPS_INPUT)
    inputs[views.CROPS_INPUT] = crops
    layer, backbone = _branch(view.crop_size, arch, width, depth, 'local', views.CROPS_INPUT,
                              last_block_factor)
    if layer is not None:
      backbone = keras.Sequential([layer, backbone], name='local_filtered_backbone')
    found.append(CropFeatures(backbone, name=LOCAL_FEATURES)(crops))
  x = found[0] if len(found) == 1 else keras.layers.Concatenate()(found)
  x = keras.layers.Dropout(dropout)(x)
  # float32 output even under mixed precision, so probabilities stay well calibrated.
  outputs = keras.layers.Dense(1, activation='sigmoid', dtype='float32', name=HEAD)(x)
  model = keras.Model(inputs, outputs, name=f'fakedetect_{view.name}_{arch.backbone}')
  # Keras keeps the average beside each weight; fit_callbacks() swaps it in where it counts.
  averaging = {'use_ema': True, 'ema_momentum': ema} if ema else {}
  optimizer = (keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay, **averaging)
               if weight_decay else keras.optimizers.Adam(learning_rate, **averaging))
  model.compile(
      optimizer=optimizer,
      loss=keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing),
      metrics=[keras.metrics.BinaryAccuracy(name='accuracy'),
               keras.metrics.Precision(name='precision'),
               keras.metrics.Recall(name='recall'),
               keras.metrics.AUC(name='auc')])
  return model


def fake_probabilities(model: keras.Model, inputs: Dict[str, Any], flip_average: bool = False):
  """The model's fake probabilities [b] for the view's `inputs`, as the threshold's choice and
  the serving graph both compute them (so the threshold fits the scores served). With
  `flip_average`, the mean of the scores of the inputs and of their mirror images (every input,
  global image or crops, has its width on axis -2): the test-time half of the flip augmentation.
  """
  probability = keras.ops.reshape(model(inputs, training=False), (-1,))
  if not flip_average:
    return probability
  mirrored = {name: keras.ops.flip(value, axis=-2) for name, value in inputs.items()}
  return (probability + keras.ops.reshape(model(mirrored, training=False), (-1,))) / 2


def fit_callbacks(model: keras.Model) -> List[keras.callbacks.Callback]:
  """Callbacks `model.fit` needs for this compiled model, placed before early stopping and any
  checkpointing. With `ema` on, the averaged weights are swapped in for every validation and at
  every epoch's end, so early stopping watches them and keeps them as its best weights (which it
  restores at the end): what is validated is what is exported."""
  optimizer = getattr(model.optimizer, 'inner_optimizer', model.optimizer)  # loss scaling
  if not getattr(optimizer, 'use_ema', False):
    return []
  return [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)]


# Model hyperparameters, then the augmentation strengths (components/augment.py): the values the
# Tuner may search and the Trainer reads from its config.
HPARAM_NAMES = ('learning_rate', 'weight_decay', 'width', 'depth', 'dropout', 'label_smoothing',
                'ema', 'last_block_factor') + tuple(
                    field.name for field in dataclasses.fields(augment.Strengths))


def build_from_hparams(view: views.View, arch: Architecture, hparams: Dict[str, Any],
                       weights: Optional[str] = None) -> keras.Model:
  """Builds from a dict holding HPARAM_NAMES (the TrainConfig or the Tuner's best values).

  `weights` overrides the architecture's (e.g. 'none' when rebuilding a trained model)."""
  if weights is not None:
    arch = dataclasses.replace(arch, weights=weights)
  return build(view, arch, width=int(hparams['width']), depth=int(hparams['depth']),
               dropout=float(hparams['dropout']),
               learning_rate=float(hparams['learning_rate']),
               weight_decay=float(hparams.get('weight_decay', 0.0)),
               label_smoothing=float(hparams.get('label_smoothing', 0.0)),
               ema=float(hparams.get('ema', 0.0)),
               last_block_factor=float(hparams.get('last_block_factor', 1.0)))


def copy_weights(model: keras.Model, keras_file: str) -> str:
  """Starts `model` from a trained classifier's weights (the last blessed model's .keras copy).

  Returns where training started, for the model's metadata. An architecture that changed since
  (another view, backbone or width) cannot be warm-started: it trains from scratch, and says so.
  """
  from absl import logging  # pylint: disable=g-import-not-at-top
  previous = keras.saving.load_model(keras_file, compile=False)
  shapes = [tuple(w.shape) for w in previous.get_weights()]
  if shapes != [tuple(w.shape) for w in model.get_weights()]:
    logging.warning('model.weights=previous: the last blessed model (%s) has another '
                    'architecture; training from scratch.', keras_file)
    return 'none (the last blessed model has another architecture)'
  model.set_weights(previous.get_weights())
  logging.info('Warm start from the last blessed model: %s', keras_file)
  return f'previous ({keras_file})'
