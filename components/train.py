"""Trainer and Tuner module: `run_fn` and `tuner_fn`, as the TFX Trainer and Tuner call them.

`custom_config` carries pipeline/config.py's ModuleConfig (image, train and tuner sections),
which both functions rebuild as dataclasses. Best hyperparameters from the Tuner, when present,
win over the TrainConfig values of the same name.
"""

import json
import math
import os
import time
from typing import Any, Dict, List, Tuple

from absl import logging
import keras
import keras_tuner
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx import v1 as tfx

from fakedetect.components import distribute
from fakedetect.components import metrics
from fakedetect.components import model as model_lib
from fakedetect.components import export
from fakedetect.components import progress
from fakedetect.components import train_input
from fakedetect.components import views
from fakedetect.pipeline import config as config_lib

HISTORY_FILE = 'history.json'
CURVES_FILE = 'training_curves.png'


class _BatchCounter(keras.callbacks.Callback):
  """Counts training batches as they pass, so throughput needs no second read of the data."""

  def __init__(self):
    super().__init__()
    self.count = 0

  def on_train_batch_end(self, batch, logs=None):
    self.count += 1


class EpochProgress(keras.callbacks.Callback):
  """One line per epoch for a user waiting at the console (components/progress.py)."""

  def __init__(self, what: str, epochs: int, monitor: str):
    super().__init__()
    self._what, self._epochs, self._monitor = what, epochs, monitor
    self._started = time.monotonic()

  def on_train_begin(self, logs=None):
    self._started = time.monotonic()

  def on_epoch_end(self, epoch, logs=None):
    progress.emit(progress.epoch_line(self._what, epoch + 1, self._epochs, logs or {},
                                      time.monotonic() - self._started, self._monitor))


def _hparams(fn_args: tfx.components.FnArgs, train: config_lib.TrainConfig) -> Dict[str, Any]:
  hparams = {name: getattr(train, name) for name in model_lib.HPARAM_NAMES}
  if fn_args.hyperparameters:
    best = keras_tuner.HyperParameters.from_config(fn_args.hyperparameters).values
    hparams.update({k: v for k, v in best.items() if k in hparams})
    logging.info('Using the Tuner\'s best hyperparameters: %s', best)
  return hparams


def cosine_schedule(peak: float, epochs: int, floor: float = 0.02):
  """Epoch -> learning rate: `peak` at first, falling along a half cosine to `floor` x peak at
  the last epoch. A short run on 2 cores gains more from the low-rate tail than from more epochs
  at a constant rate."""
  def rate(epoch: int, _current=None) -> float:
    progress = epoch / max(epochs - 1, 1)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
  return rate


def _predict(model: keras.Model, dataset: tf.data.Dataset,
             flip_average: bool) -> Tuple[np.ndarray, np.ndarray]:
  labels, probabilities = [], []
  for images, batch_labels in dataset:
    probabilities.append(np.asarray(
        model_lib.fake_probabilities(model, images, flip_average)).ravel())
    labels.append(batch_labels.numpy().ravel())
  return np.concatenate(labels), np.concatenate(probabilities)


def _plot_curves(history: Dict[str, List[float]], path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for ax, metric in zip(axes, ('loss', 'accuracy')):
    epochs = range(1, len(history.get(metric, [])) + 1)
    ax.plot(epochs, history.get(metric, []), label='train')
    ax.plot(epochs, history.get('val_' + metric, []), label='validation')
    ax.set_xlabel('epoch')
    ax.set_title(metric)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _architecture(config: config_lib.ModuleConfig,
                  transform_graph_path: str) -> model_lib.Architecture:
  """The configured network; 'previous' weights are loaded after building (`_warm_start`). The
  input statistics are those the Transform measured (image.standardize), if it did."""
  weights = config.model.weights
  return model_lib.Architecture(
      config.model.resolved_backbone(), config.model.filter,
      'none' if weights == 'previous' else weights,
      views.channel_statistics(tft.TFTransformOutput(transform_graph_path)))


def _warm_start(model: keras.Model, config: config_lib.ModuleConfig, base_model) -> str:
  """Where training started: 'previous' copies the last blessed model's weights (TFX passes its
  serving folder as fn_args.base_model), if there is one and its architecture is this one."""
  if config.model.weights != 'previous':
    return config.model.weights
  if not base_model:
    logging.warning('model.weights=previous: no blessed model yet; training from scratch.')
    return 'none (no blessed model yet)'
  return model_lib.copy_weights(model, os.path.join(base_model, export.KERAS_FILE))


def run_fn(fn_args: tfx.components.FnArgs) -> None:
  """Trains with early stopping, picks the decision threshold on eval, exports for serving."""
  config = config_lib.ModuleConfig.from_custom_config(fn_args.custom_config)
  train = config.train
  strategy = distribute.strategy(train.strategy)  # before any TF work
  policy = distribute.set_precision(train.precision)
  view = config.image.resolved()
  arch = _architecture(config, fn_args.transform_graph_path)
  keras.utils.set_random_seed(train.seed)
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
  train_set, eval_set = train_input.train_and_eval(fn_args, tf_transform_output, view, train,
                                                   shuffle_labels=train.shuffle_labels)

  hparams = _hparams(fn_args, train)
  with strategy.scope():
    model = model_lib.build_from_hparams(view, arch, hparams)
    started_from = _warm_start(model, config, fn_args.base_model)
  model.summary(print_fn=logging.info, expand_nested=True)

  batches = _BatchCounter()
  callbacks = [
      batches,
      EpochProgress('Trainer', train.epochs, train.early_stopping_metric),
      *model_lib.fit_callbacks(model),  # before EarlyStopping: it keeps the averaged weights
      keras.callbacks.EarlyStopping(
          monitor=train.early_stopping_metric, patience=train.early_stopping_patience,
          mode=config_lib.EARLY_STOPPING_MODES[train.early_stopping_metric],
          restore_best_weights=True),
      keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir),
  ]
  if train.lr_schedule == 'cosine':
    callbacks.append(keras.callbacks.LearningRateScheduler(
        cosine_schedule(float(hparams['learning_rate']), train.epochs)))
  started = time.monotonic()
  history = model.fit(train_input.augmented(train_set, hparams), validation_data=eval_set,
                      epochs=train.epochs, callbacks=callbacks, verbose=2)
  fit_seconds = time.monotonic() - started

  model = distribute.float32_copy(
      model, lambda: model_lib.build_from_hparams(view, arch, hparams, weights='none'))
  labels, probabilities = _predict(model, eval_set, train.flip_average)
  threshold = metrics.best_threshold(labels, probabilities, train.threshold_metric)
  logging.info('Decision threshold %.4f (best %s on the eval split).', threshold,
               train.threshold_metric)

  tf.io.gfile.makedirs(fn_args.model_run_dir)
  record = {
      'history': {k: [float(v) for v in vs] for k, vs in history.history.items()},
      'epochs_run': len(history.history.get('loss', [])),
      'hyperparameters': hparams,
      'threshold': threshold,
      'fit_seconds': fit_seconds,
      'device': 'GPU' if tf.config.list_physical_devices('GPU') else 'CPU',
      'precision': policy,
      # Counted during fit (the last batch of an epoch may be short: within one batch per
      # epoch); validation passes included, as that is what a user waits for.
      'train_images_per_second': batches.count * train.batch_size / max(fit_seconds, 1e-9),
  }
  with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, HISTORY_FILE), 'w') as f:
    f.write(json.dumps(record, indent=2))
  _plot_curves(record['history'], os.path.join(fn_args.model_run_dir, CURVES_FILE))

  target = distribute.export_dir(strategy, fn_args.serving_model_dir,
                                 os.path.join(fn_args.model_run_dir, 'worker_exports'))
  export.export(model, tf_transform_output, target, threshold, view,
                extra_metadata={'hyperparameters': hparams,
                                'epochs_run': record['epochs_run'],
                                'threshold_metric': train.threshold_metric,
                                'early_stopping_metric': train.early_stopping_metric,
                                'backbone': arch.backbone, 'filter': arch.filter,
                                'weights': started_from},
                flip_average=train.flip_average)


class _HyperModel(keras_tuner.HyperModel):
  """The search space: learning rate, weight decay, label smoothing, width, depth, dropout and
  augmentation strength (translation included)."""

  def __init__(self, view: views.View, arch: model_lib.Architecture,
               train: config_lib.TrainConfig, max_trials: int):
    super().__init__()
    self._view = view
    self._arch = arch
    self._train = train
    self._max_trials = max_trials
    self._trials = 0  # keras-tuner fits each trial once (executions_per_trial=1)

  def _values(self, hp: keras_tuner.HyperParameters) -> Dict[str, Any]:
    # Searched: the model's knobs and how hard augmentation pushes; the rest as configured.
    values = {name: getattr(self._train, name) for name in model_lib.HPARAM_NAMES}
    values.update({
        'learning_rate': hp.Float('learning_rate', 1e-3, 1e-2, sampling='log'),
        'width': hp.Choice('width', [16, 32, 48]),
        'depth': hp.Int('depth', 2, 4),
        'dropout': hp.Float('dropout', 0.1, 0.5, step=0.1),
        # CIFAKE's from-scratch recipe: 4 px of translation, AdamW's decay at 1e-4.
        'weight_decay': hp.Choice('weight_decay', [0.0, 1e-4, 5e-4]),
        'label_smoothing': hp.Choice('label_smoothing', [0.0, 0.05, 0.1]),
        'translate': hp.Choice('translate', [0, 2, 4]),
        'rotation': hp.Choice('rotation', [0.0, 0.02, 0.05]),
        'color_jitter': hp.Choice('color_jitter', [0.0, 0.1, 0.2]),
        'jpeg_fraction': hp.Choice('jpeg_fraction', [0.0, 0.2, 0.4]),
        'blur_fraction': hp.Choice('blur_fraction', [0.0, 0.1, 0.2]),
    })
    return values

  def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
    return model_lib.build_from_hparams(self._view, self._arch, self._values(hp))

  def fit(self, hp, model, x, *args, **kwargs):  # pylint: disable=arguments-differ
    self._trials += 1
    # The EMA swap first: keras-tuner's best-epoch checkpoint then saves the averaged weights.
    kwargs['callbacks'] = model_lib.fit_callbacks(model) + list(kwargs.get('callbacks') or []) + [
        EpochProgress(f'Tuner trial {self._trials}/{self._max_trials}', kwargs.get('epochs', 1),
                      self._train.early_stopping_metric)]
    return model.fit(train_input.augmented(x, self._values(hp)), *args, **kwargs)


def tuner_fn(fn_args: tfx.components.FnArgs) -> tfx.components.TunerFnResult:
  """A RandomSearch on val_loss within the configured trial budget."""
  config = config_lib.ModuleConfig.from_custom_config(fn_args.custom_config)
  train = config.train
  distribute.set_precision(train.precision)  # trials train as the Trainer will
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
  direction = config_lib.EARLY_STOPPING_MODES[train.early_stopping_metric]
  tuner = keras_tuner.RandomSearch(
      _HyperModel(config.image.resolved(), _architecture(config, fn_args.transform_graph_path),
                  train, config.tuner.max_trials),
      objective=keras_tuner.Objective(train.early_stopping_metric, direction),
      max_trials=config.tuner.max_trials,
      seed=train.seed,
      directory=fn_args.working_dir,
      project_name='fakedetect_tuning')
  view = config.image.resolved()
  train_set, eval_set = train_input.train_and_eval(fn_args, tf_transform_output, view, train)
  return tfx.components.TunerFnResult(
      tuner=tuner,
      fit_kwargs={
          'x': train_set,
          'validation_data': eval_set,
          'epochs': config.tuner.epochs_per_trial,
          'callbacks': [keras.callbacks.EarlyStopping(
              monitor=train.early_stopping_metric, patience=2, mode=direction)],
      })
