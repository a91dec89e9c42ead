"""Every setting's valid range, checked before any work starts (`config.validate`).

A wrong value found hours into a run (a NaN learning rate, a split share of 200 %, a model name
that climbs out of --output) costs the run; found here it costs one line naming the setting and
what it accepts. Each check returns that line, or None.
"""

import dataclasses
import math
import re
from typing import Any, Iterator, Optional, Tuple

from fakedetect.components import distribute
from fakedetect.components import metrics
from fakedetect.components import views
from fakedetect.components.image_example_gen.folders import is_remote
from fakedetect.pipeline import config as config_lib

# A model or pipeline name becomes a folder (serving_model/<model_name>/) and an ML Metadata
# context: one path component, no separators, no leading dot.
_PLAIN_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,63}')
# The splits the ExampleGen writes (layout folders are mapped onto these names).
_GATE_SPLITS = ('eval', 'test')
# (section, field, low, high, high is included): numbers with a range.
_RANGES = (
    ('data', 'max_pixels', 1, None, True),
    ('train', 'epochs', 1, 10_000, True),
    ('train', 'batch_size', 1, 65_536, True),
    ('train', 'learning_rate', 1e-6, 1.0, True),
    ('train', 'width', 1, 1024, True),
    ('train', 'depth', 1, 8, True),
    ('train', 'dropout', 0.0, 1.0, False),
    ('train', 'weight_decay', 0.0, 1.0, False),
    ('train', 'translate', 0, 64, True),
    ('train', 'label_smoothing', 0.0, 0.5, False),  # 0.5 would make every label 0.5
    ('train', 'ema', 0.0, 1.0, False),
    ('train', 'last_block_factor', 0.25, 8.0, True),
    ('train', 'early_stopping_patience', 0, None, True),
    ('train', 'cache_bytes', 0, None, True),
    ('simulate', 'images', 1, 10_000_000, True),
    ('simulate', 'epochs', 1, 10_000, True),
    ('tuner', 'max_trials', 1, None, True),
    ('tuner', 'epochs_per_trial', 1, None, True),
    ('gate', 'min_precision', 0.0, 1.0, True),
    ('gate', 'min_recall', 0.0, 1.0, True),
    ('gate', 'max_accuracy_drop', 0.0, 1.0, True),
    ('gate', 'max_auc_drop', 0.0, 1.0, True),
    ('gate', 'min_robust_accuracy', 0.0, 1.0, True),
)


def problem(config: 'config_lib.PipelineConfig') -> Optional[str]:
  """What is wrong with config, in words a user can act on, or None."""
  for check in (_value_problem, _names_problem, _split_problem, _range_problem, _train_problem,
                _image_problem, _model_problem, _recipe_problem, _simulate_problem,
                _runner_problem):
    found = check(config)
    if found:
      return found
  return None


def _fields(obj: Any, prefix: str = '') -> Iterator[Tuple[str, Any]]:
  """(dotted setting name, value) of every leaf setting."""
  for field in dataclasses.fields(obj):
    value = getattr(obj, field.name)
    if dataclasses.is_dataclass(value):
      yield from _fields(value, f'{prefix}{field.name}.')
    else:
      yield f'{prefix}{field.name}', value


def _value_problem(config) -> Optional[str]:
  """NaN and infinity pass every comparison; lists must hold strings (--set takes JSON lists)."""
  for key, value in _fields(config):
    if isinstance(value, float) and not math.isfinite(value):
      return f'{key}={value} is not a finite number.'
    if isinstance(value, list) and not all(isinstance(item, str) for item in value):
      return (f'{key}={value!r} must be a list of strings, e.g. --set {key}=a,b or '
              f'--set {key}=\'["a", "b"]\'.')
  return None


def _names_problem(config) -> Optional[str]:
  for key in ('name', 'model_name'):
    value = getattr(config, key)
    if not _PLAIN_NAME.fullmatch(value):
      return (f'{key}={value!r} is not a plain name: use 1-64 letters, digits, _ . or -, '
              'starting with a letter or digit (it becomes a folder and must stay inside '
              '--output).')
  return None


def _split_problem(config) -> Optional[str]:
  data = config.data
  shares = data.split_ratios()
  if any(not 0 <= share <= 100 for share in shares.values()) or sum(shares.values()) != 100:
    return (f'data.train_percent, data.eval_percent and data.test_percent must each be 0..100 and '
            f'sum to 100; got {data.train_percent}, {data.eval_percent} and {data.test_percent}.')
  if data.train_percent == 0 or data.eval_percent == 0:
    return ('data.train_percent and data.eval_percent must be positive (training and the '
            'threshold need them).')
  gate = config.gate
  if gate.eval_split not in _GATE_SPLITS:
    return (f'gate.eval_split={gate.eval_split!r} is not one of {", ".join(_GATE_SPLITS)} (the '
            'split the gate judges; train is what the model learnt from).')
  if gate.eval_split == 'test' and data.test_percent == 0:
    return 'gate.eval_split is test but data.test_percent is 0: give the test split a share.'
  return None


def _range_problem(config) -> Optional[str]:
  for section, name, low, high, high_included in _RANGES:
    value = getattr(getattr(config, section), name)
    above = high is not None and (value > high if high_included else value >= high)
    if value < low or above:
      if high is None:
        accepted = f'at least {low}'
      else:
        accepted = f'{low}..{high}' if high_included else f'at least {low} and below {high}'
      return f'{section}.{name}={value} is outside its range: {accepted}.'
  return None


def _train_problem(config) -> Optional[str]:
  train = config.train
  if train.threshold_metric not in metrics.THRESHOLD_METRICS:
    return f'train.threshold_metric must be one of {", ".join(metrics.THRESHOLD_METRICS)}.'
  if train.early_stopping_metric not in config_lib.EARLY_STOPPING_MODES:
    return ('train.early_stopping_metric must be one of '
            f'{", ".join(config_lib.EARLY_STOPPING_MODES)}.')
  if train.lr_schedule not in ('cosine', 'constant'):
    return "train.lr_schedule must be 'cosine' or 'constant'."
  for name in ('jpeg_fraction', 'blur_fraction', 'color_jitter', 'rotation'):
    if not 0 <= getattr(train, name) <= 1:
      return f'train.{name}={getattr(train, name)} is outside 0..1.'
  if not 1 <= train.jpeg_min_quality <= 99:
    return f'train.jpeg_min_quality={train.jpeg_min_quality} is outside 1..99.'
  if not 0.2 <= train.blur_max_sigma <= 3:
    return f'train.blur_max_sigma={train.blur_max_sigma} is outside 0.2..3 (pixels).'
  return _choice_problem('train.strategy', train.strategy, distribute.STRATEGIES) or (
      _choice_problem('train.precision', train.precision, distribute.PRECISIONS))


def _choice_problem(key: str, value: str, choices) -> Optional[str]:
  """A setting that names one of a fixed set."""
  if value not in choices:
    return f'{key}={value!r} is not one of {", ".join(choices)}.'
  return None


def _simulate_problem(config) -> Optional[str]:
  simulate = config.simulate
  return (_choice_problem('simulate.mode', simulate.mode, config_lib.SIMULATE_MODES) or
          _choice_problem('simulate.decoder', simulate.decoder, config_lib.SIMULATE_DECODERS))


def _image_problem(config) -> Optional[str]:
  image = config.image
  problem = _choice_problem('image.view', image.view, views.VIEWS)
  if problem:
    return problem
  if not 8 <= image.size <= 1024:
    return f'image.size={image.size} is outside 8..1024.'
  if not 16 <= image.native_size <= 2048:
    return f'image.native_size={image.native_size} is outside 16..2048.'
  if not 8 <= image.crop_size <= image.native_size:
    return (f'image.crop_size={image.crop_size} must be at least 8 and at most image.native_size '
            f'({image.native_size}).')
  return None


def _model_problem(config) -> Optional[str]:
  from fakedetect.components import backbones  # pylint: disable=g-import-not-at-top
  from fakedetect.components import filters  # pylint: disable=g-import-not-at-top
  model = config.model
  problem = _choice_problem('model.filter', model.filter, filters.FILTERS)
  if problem:
    return problem
  if model.backbone == 'auto':
    return None
  return backbones.check(model.backbone, model.weights)


def _recipe_problem(config) -> Optional[str]:
  """Levers that fit only some views and backbones (an `auto` backbone is checked once resolved:
  the CLI validates again after pipeline/auto.py)."""
  from fakedetect.components import backbones  # pylint: disable=g-import-not-at-top
  train, image, backbone = config.train, config.image, config.model.backbone
  if train.translate and image.view != views.LOCAL and train.translate >= image.size:
    return (f'train.translate={train.translate} must be below image.size ({image.size}): the '
            'image is padded by mirroring it, which needs fewer pixels than it has.')
  if image.standardize and backbone not in ('auto',) + backbones.OWN:
    return (f'image.standardize scales the input of the own backbones ({", ".join(backbones.OWN)})'
            f'; {backbone} scales it as its ImageNet weights expect: use one of those, or '
            'image.standardize=false.')
  if train.flip_average and not train.flip:
    return ('train.flip_average averages the scores of an image and its mirror, which only a '
            'model trained on mirrored images scores alike: use train.flip=true with it, or '
            'train.flip_average=false.')
  if train.last_block_factor != 1 and backbone not in ('auto', 'cnn'):
    return (f'train.last_block_factor widens the cnn backbone\'s last block; {backbone} has no '
            'such setting: use model.backbone=cnn, or train.last_block_factor=1.')
  return None
def _runner_problem(config) -> Optional[str]:
  runner = config.runner
  if runner.profile not in config_lib.RUNNER_PROFILES:
    return (f'runner.profile={runner.profile!r} is not one of '
            f'{", ".join(config_lib.RUNNER_PROFILES)}.')
  if runner.workers < 0:
    return 'runner.workers must be >= 0 (0 lets the runner decide).'
  if runner.environment_type not in config_lib.ENVIRONMENT_TYPES:
    return (f'runner.environment_type={runner.environment_type!r} is not one of '
            f'{", ".join(config_lib.ENVIRONMENT_TYPES)}.')
  unknown = sorted(set(runner.in_memory_components) - set(config_lib.BEAM_COMPONENTS))
  if unknown:
    return (f'runner.in_memory_components: not Beam components: {", ".join(unknown)}; the Beam '
            f'components are {", ".join(config_lib.BEAM_COMPONENTS)}.')
  try:
    config_lib.beam_pipeline_args(runner)
  except config_lib.ConfigError as e:
    return str(e)
  if runner.profile == 'dataflow':
    # Dataflow's workers see neither this machine's disk nor its venv.
    if not runner.temp_location.startswith('gs://'):
      return f'runner.temp_location={runner.temp_location!r}: Dataflow needs a gs:// folder.'
    if not is_remote(config.pipeline_root):
      return ('Dataflow workers write the artifacts: --set runner.pipeline_root=gs://BUCKET/'
              f'{config.name}/tfx (now {config.pipeline_root}).')
    if not is_remote(config.data.data_dir):
      return (f'Dataflow workers read the images: --data gs://BUCKET/images (now '
              f'{config.data.data_dir}).')
  return None
