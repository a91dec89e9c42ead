"""The pipeline's whole configuration, typed, in one place.

Every knob a user may turn lives here with its default; the CLI only fills these dataclasses
(`--set section.field=value`), and the pipeline passes the relevant parts to each component.
"""

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional

from components import distribute
from components import features


@dataclasses.dataclass
class DataConfig:
  data_dir: str = ''
  # Content-hash split of folders that do not bring their own splits (percent).
  train_percent: int = 70
  eval_percent: int = 15
  test_percent: int = 15
  max_pixels: int = features.MAX_IMAGE_PIXELS  # decompression-bomb limit, per image
  schema_dir: str = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                 'schema')
  use_curated_schema: bool = True  # False: SchemaGen infers one (to start a new curated schema)

  def split_ratios(self) -> Dict[str, int]:
    return {'train': self.train_percent, 'eval': self.eval_percent, 'test': self.test_percent}


@dataclasses.dataclass
class ImageConfig:
  size: int = features.DEFAULT_IMAGE_SIZE  # every image is resized to size x size


@dataclasses.dataclass
class TrainConfig:
  epochs: int = 30
  batch_size: int = 32  # 32 or 64, per the recipe
  learning_rate: float = 3e-3
  width: int = 32  # filters of the first conv block; doubles per block
  depth: int = 3  # conv blocks
  dropout: float = 0.3
  early_stopping_patience: int = 8
  # 'cosine': the learning rate falls from learning_rate along a half cosine over `epochs`;
  # 'constant': it stays at learning_rate.
  lr_schedule: str = 'cosine'
  # Augmentation, training input only (components/augment.py).
  flip: bool = True
  # Fraction of a full turn. Off by default: resampling blurs the pixel-level traces of generators.
  rotation: float = 0.0
  color_jitter: float = 0.1
  # The forensic recipe: a share of images re-compressed as JPEG (quality from min to 100) and a
  # share blurred (sigma up to max), so uploads that re-encode or soften do not fool the model.
  jpeg_fraction: float = 0.2
  jpeg_min_quality: int = 60
  blur_fraction: float = 0.1
  blur_max_sigma: float = 1.0
  # Decision threshold chosen on the eval split: 'f1' or 'balanced_accuracy'.
  threshold_metric: str = 'f1'
  # Fault injection for testing the quality gate: train on shuffled labels.
  shuffle_labels: bool = False
  seed: int = 0
  # tf.distribute strategy (components/distribute.py): auto, one-device, mirrored, multi-worker.
  strategy: str = 'auto'


@dataclasses.dataclass
class TunerConfig:
  enabled: bool = False
  max_trials: int = 6
  epochs_per_trial: int = 3


@dataclasses.dataclass
class GateConfig:
  """What the Evaluator (TFMA) and the RobustnessGate demand before a model is blessed and pushed.

  Value bars and change bars are judged on the whole eval split; slices are reported, not gated.
  """
  # Value bars (TFMA, at a 0.5 probability cut); 0 lets every model through.
  min_precision: float = 0.8
  min_recall: float = 0.8
  # Change bars against the last blessed model: the most each metric may drop (1 = off).
  max_accuracy_drop: float = 0.01
  max_auc_drop: float = 1.0
  eval_split: str = 'test'  # never seen by training, tuning or threshold selection
  # Slices: every feature named here gets one TFMA slice per value (add any example feature).
  slice_features: List[str] = dataclasses.field(
      default_factory=lambda: [features.SOURCE_KEY, features.FORMAT_KEY,
                               features.SIZE_BUCKET_KEY])
  # Robustness: eval_split re-scored under each perturbation (components/perturb.py; [] = all).
  perturbations: List[str] = dataclasses.field(default_factory=list)
  # Bar on accuracy under the worst perturbation, at the model's own threshold (0 = off).
  min_robust_accuracy: float = 0.0


@dataclasses.dataclass
class PipelineConfig:
  name: str = 'fakedetect'
  model_name: str = 'fakedetect'
  output_dir: str = 'outputs'
  enable_cache: bool = True
  beam_pipeline_args: List[str] = dataclasses.field(default_factory=list)
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  image: ImageConfig = dataclasses.field(default_factory=ImageConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  tuner: TunerConfig = dataclasses.field(default_factory=TunerConfig)
  gate: GateConfig = dataclasses.field(default_factory=GateConfig)

  @property
  def pipeline_root(self) -> str:
    return os.path.join(os.path.abspath(self.output_dir), 'tfx')

  @property
  def metadata_path(self) -> str:
    return os.path.join(os.path.abspath(self.output_dir), 'metadata.sqlite')

  @property
  def serving_dir(self) -> str:
    return os.path.join(os.path.abspath(self.output_dir), 'serving_model', self.model_name)

  @property
  def summary_path(self) -> str:
    return os.path.join(os.path.abspath(self.output_dir), 'summary.json')

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  def with_overrides(self, overrides: List[str]) -> 'PipelineConfig':
    """Applies `section.field=value` strings, typed by the dataclass fields."""
    config = self
    for item in overrides:
      key, sep, raw = item.partition('=')
      if not sep:
        raise ConfigError(f'--set expects section.field=value, got {item!r}.')
      config = _set(config, key.strip().split('.'), raw.strip(), key)
    return config


class ConfigError(ValueError):
  """A user's configuration is wrong; the message says how to fix it."""


def _set(obj: Any, path: List[str], raw: str, full_key: str) -> Any:
  names = {f.name: f for f in dataclasses.fields(obj)}
  if path[0] not in names:
    raise ConfigError(f'Unknown setting {full_key!r}; known here: {", ".join(sorted(names))}.')
  current = getattr(obj, path[0])
  if len(path) > 1:
    if not dataclasses.is_dataclass(current):
      raise ConfigError(f'{full_key!r}: {path[0]!r} has no sub-settings.')
    return dataclasses.replace(obj, **{path[0]: _set(current, path[1:], raw, full_key)})
  if dataclasses.is_dataclass(current):
    raise ConfigError(f'{full_key!r} is a section; name one of its fields.')
  return dataclasses.replace(obj, **{path[0]: _parse(current, raw, full_key)})


def _parse(current: Any, raw: str, key: str) -> Any:
  try:
    if isinstance(current, bool):
      if raw.lower() not in ('true', 'false', '1', '0', 'yes', 'no'):
        raise ValueError(raw)
      return raw.lower() in ('true', '1', 'yes')
    if isinstance(current, int):
      return int(raw)
    if isinstance(current, float):
      return float(raw)
    if isinstance(current, list):
      value = json.loads(raw) if raw.startswith('[') else [v for v in raw.split(',') if v]
      return list(value)
    return raw
  except ValueError:
    raise ConfigError(
        f'{key}={raw!r} is not a valid {type(current).__name__}.') from None


def validate(config: PipelineConfig) -> Optional[str]:
  """Returns what is wrong with a config, in words a user can act on, or None."""
  split = config.data
  if split.train_percent <= 0 or split.eval_percent <= 0 or split.test_percent < 0:
    return 'data.train_percent and data.eval_percent must be positive, data.test_percent >= 0.'
  if config.train.batch_size <= 0 or config.train.epochs <= 0:
    return 'train.batch_size and train.epochs must be positive.'
  if not 8 <= config.image.size <= 1024:
    return f'image.size={config.image.size} is outside 8..1024.'
  if config.train.threshold_metric not in ('f1', 'balanced_accuracy'):
    return "train.threshold_metric must be 'f1' or 'balanced_accuracy'."
  train = config.train
  if train.lr_schedule not in ('cosine', 'constant'):
    return "train.lr_schedule must be 'cosine' or 'constant'."
  for name in ('jpeg_fraction', 'blur_fraction', 'color_jitter', 'rotation'):
    if not 0 <= getattr(train, name) <= 1:
      return f'train.{name}={getattr(train, name)} is outside 0..1.'
  if not 1 <= train.jpeg_min_quality <= 99:
    return f'train.jpeg_min_quality={train.jpeg_min_quality} is outside 1..99.'
  if not 0.2 <= train.blur_max_sigma <= 3:
    return f'train.blur_max_sigma={train.blur_max_sigma} is outside 0.2..3 (pixels).'
  if config.gate.eval_split == 'test' and split.test_percent == 0:
    return 'gate.eval_split is test but data.test_percent is 0: give the test split a share.'
  if config.train.strategy not in distribute.STRATEGIES:
    return (f'train.strategy={config.train.strategy!r} is not one of '
            f'{", ".join(distribute.STRATEGIES)}.')
  return None
