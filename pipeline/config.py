"""The pipeline's whole configuration, typed, in one place.

Every knob a user may turn lives here with its default; the CLI only fills these dataclasses
(`--set section.field=value`), and the pipeline passes the relevant parts to each component.
"""

import dataclasses
import json
import os
import posixpath
from typing import Any, Dict, List, Optional

from fakedetect.components import errors
from fakedetect.components import features
from fakedetect.components import views
from fakedetect.components.image_example_gen.folders import is_remote
from fakedetect.pipeline import names

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class DataConfig:
  data_dir: str = ''
  # Content-hash split of folders that do not bring their own splits (percent).
  train_percent: int = 70
  eval_percent: int = 15
  test_percent: int = 15
  max_pixels: int = features.MAX_IMAGE_PIXELS  # decompression-bomb limit, per image
  schema_dir: str = os.path.join(REPO_DIR, 'schema')
  use_curated_schema: bool = True  # False: SchemaGen infers one (to start a new curated schema)
  # Class folder names (components/image_example_gen/classes.py), e.g. --set
  # data.fake_dirs=gan_out,diffusion; [] = the built-in names (fake, ai, ai_generated, generated,
  # synthetic, ... and real, human, authentic, nature).
  fake_dirs: List[str] = dataclasses.field(default_factory=list)
  real_dirs: List[str] = dataclasses.field(default_factory=list)
  # Read links whose target lies outside data_dir; off, they are quarantined (outside_data_folder).
  follow_outside_links: bool = False

  def split_ratios(self) -> Dict[str, int]:
    return {'train': self.train_percent, 'eval': self.eval_percent, 'test': self.test_percent}

  def class_names(self):
    """The class folder names in force (a LayoutError if a name would mean both classes)."""
    from fakedetect.components.image_example_gen import classes  # pylint: disable=g-import-not-at-top
    return classes.ClassNames(tuple(self.fake_dirs), tuple(self.real_dirs))


@dataclasses.dataclass
class ImageConfig:
  """What the model sees of each image (components/views.py)."""
  # global (the whole image resized to size x size), local (native crop_size crops of the central
  # native_size square, never resampled), both, or auto (chosen from the folder: pipeline/auto.py).
  view: str = views.AUTO
  size: int = features.DEFAULT_IMAGE_SIZE
  crop_size: int = 64
  native_size: int = 256  # caps what is stored per example, whatever a photo's megapixels
  # Per-channel mean/std standardisation of the model's input, measured on the training split by
  # the Transform and applied by the model's first layer (cnn and resnet backbones only).
  standardize: bool = False

  def resolved(self) -> views.View:
    """The view module code builds. The DAG is built from resolved settings (pipeline/auto.py);
    an `auto` that reaches here anyway (a config written by hand) is today's global view."""
    name = views.GLOBAL if self.view == views.AUTO else self.view
    return views.View(name, self.size, self.crop_size, self.native_size, self.standardize)


@dataclasses.dataclass
class ModelConfig:
  """The network (components/model.py, components/backbones.py, components/filters.py)."""
  # cnn (the small CNN), resnet (the project's residual net), any keras.applications name
  # (ResNet50, EfficientNetB0, ...), or auto (chosen with the view: pipeline/auto.py).
  backbone: str = 'auto'
  filter: str = 'none'  # fixed forensic input filter as the first layer: none, npr, highpass
  # Where training starts: none, imagenet (keras.applications backbones; Keras downloads and
  # caches the weights once), a weights file (machines without network), or previous (the last
  # blessed model, through the Trainer's base_model input).
  weights: str = 'none'

  def resolved_backbone(self) -> str:
    """The backbone module code builds: an `auto` that reaches it (a config written by hand) is
    today's CNN, as ImageConfig.resolved() makes it today's global view."""
    return 'cnn' if self.backbone == 'auto' else self.backbone


# What early stopping and the Tuner may watch, and which way is better.
EARLY_STOPPING_MODES = {'val_loss': 'min', 'val_auc': 'max'}


@dataclasses.dataclass
class TrainConfig:
  epochs: int = 30
  batch_size: int = 32  # 32 or 64, per the recipe
  learning_rate: float = 3e-3
  width: int = 32  # filters of the first conv block; doubles per block
  depth: int = 3  # conv blocks
  dropout: float = 0.3
  weight_decay: float = 0.0  # > 0: AdamW with this decoupled weight decay, else Adam
  label_smoothing: float = 0.0  # > 0: binary labels pulled this far towards 0.5 in the loss
  # > 0: the weights trained, validated and exported are an exponential moving average of the
  # optimizer's steps with this momentum (e.g. 0.999); 0: the last step's weights.
  ema: float = 0.0
  # Multiplies the filters of the cnn backbone's last block (1 = width x 2^(depth-1), as today).
  last_block_factor: float = 1.0
  early_stopping_patience: int = 8
  # What early stopping (and the Tuner) watch on the eval split: val_loss or val_auc.
  early_stopping_metric: str = 'val_loss'
  # 'cosine': the learning rate falls from learning_rate along a half cosine over `epochs`;
  # 'constant': it stays at learning_rate.
  lr_schedule: str = 'cosine'
  # Augmentation, training input only (components/augment.py).
  flip: bool = True
  # Random translation of the whole image by up to this many pixels on each axis: padded by
  # mirroring, cropped back at a random place; never resampled (0 = off; CIFAKE's anchor: 4).
  translate: int = 0
  # Fraction of a full turn. Off by default: resampling blurs the pixel-level traces of generators.
  rotation: float = 0.0
  color_jitter: float = 0.1
  # The forensic recipe: a share of images re-compressed as JPEG (quality from min to 100) and a
  # share blurred (sigma up to max), so uploads that re-encode or soften do not fool the model.
  jpeg_fraction: float = 0.2
  jpeg_min_quality: int = 60
  blur_fraction: float = 0.1
  blur_max_sigma: float = 1.0
  # Test-time flip averaging: the threshold's choice, TFMA and serving score an image and its
  # mirror and average the two, so a score does not hang on which way the image faces. Needs a
  # model trained on mirrored images (flip); costs a second forward pass per image.
  flip_average: bool = False
  # Decision threshold chosen on the eval split: 'f1' or 'balanced_accuracy'.
  threshold_metric: str = 'f1'
  # Fault injection for testing the quality gate: train on shuffled labels.
  shuffle_labels: bool = False
  seed: int = 0
  # tf.distribute strategy (components/distribute.py): auto, one-device, mirrored, multi-worker.
  strategy: str = 'auto'
  # Keras dtype policy while training: auto (float16 on GPU, bfloat16 on a CPU with bfloat16
  # instructions, else float32), float32, mixed_float16, mixed_bfloat16. Serving is float32.
  precision: str = 'auto'
  # Bytes of parsed examples the Trainer and Tuner may hold in memory (components/
  # train_input.py): a split under what is left of it is read once and shuffled from memory
  # every epoch, training split first; a larger one is streamed from disk every epoch. Never
  # more than half the machine's memory; 0 always streams. CIFAKE's 90k examples take 1.1 GB.
  cache_bytes: int = 4 * 2**30


# components/artifact_simulator.py's modes and components/autogan.py's decoders.
SIMULATE_MODES = ('add', 'only')
SIMULATE_DECODERS = ('transposed', 'nearest')


@dataclasses.dataclass
class SimulateConfig:
  """The ArtifactSimulator: fakes for the training split, made from its real images by a small
  GAN with a generator's up-sampling stack (components/artifact_simulator.py)."""
  enabled: bool = False
  # add: simulated fakes next to the real ones; only: reals + simulated fakes, no real fake.
  mode: str = 'add'
  images: int = 1000  # real training images simulated from (each gives one fake)
  # The generator's up-sampling: transposed (stride-2 transposed convs: a checkerboard) or
  # nearest (nearest-neighbour x2 + conv).
  decoder: str = 'transposed'
  epochs: int = 8  # of the simulator's GAN training, 100 batches of random crops each


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
class ModuleConfig:
  """The settings the module code TFX loads (transform.py, train.py) receives, typed on both
  sides: the DAG passes `to_custom_config()` as a component's custom_config (JSON in ML Metadata),
  and the module rebuilds the dataclasses with `from_custom_config`. A section a component does
  not get keeps its defaults (the Transform gets only `image`, so training settings do not bust
  its cache).
  """
  image: ImageConfig = dataclasses.field(default_factory=ImageConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  tuner: TunerConfig = dataclasses.field(default_factory=TunerConfig)

  def to_custom_config(self, *sections: str) -> Dict[str, Any]:
    """{section: fields} for the named sections (all by default)."""
    names = sections or tuple(field.name for field in dataclasses.fields(self))
    return {name: dataclasses.asdict(getattr(self, name)) for name in names}

  @classmethod
  def from_custom_config(cls, custom_config: Optional[Dict[str, Any]]) -> 'ModuleConfig':
    types = {field.name: field.default_factory for field in dataclasses.fields(cls)}
    return cls(**{name: types[name](**values)
                  for name, values in (custom_config or {}).items() if name in types})


RUNNER_PROFILES = ('in-memory', 'multi-processing', 'dataflow', 'flink', 'spark')
ENVIRONMENT_TYPES = ('DOCKER', 'PROCESS', 'EXTERNAL', 'LOOPBACK')
# The components that run Beam; the others (Trainer, RobustnessGate, Pusher, ...) run in the
# orchestrating process whatever the profile.
BEAM_COMPONENTS = (names.IMAGE_EXAMPLE_GEN, names.STATISTICS_GEN, names.TRANSFORM, names.EVALUATOR)
# Ships this project (components.*, pipeline.*) to Beam workers outside this venv, the way Beam
# packages a multi-file pipeline; TFX's own user-module wheel holds only the module's folder.
SETUP_FILE = os.path.join(REPO_DIR, 'setup.py')
IN_MEMORY_ARGS = ['--runner=DirectRunner', '--direct_running_mode=in_memory',
                  '--direct_num_workers=1']
# `fakedetect compile`: Kubeflow Pipelines v2 / Vertex AI.
KUBEFLOW_V2 = 'kubeflow-v2'
IMAGE_ROOT = '/fakedetect'  # where the Dockerfile puts this project in the image
DEFAULT_IMAGE = 'fakedetect:0.1.0'
DEFAULT_KFP_ROOT = 'gs://YOUR-BUCKET/fakedetect'  # a placeholder: compile says so


@dataclasses.dataclass
class RunnerConfig:
  """Where the Beam components (BEAM_COMPONENTS) run; beam_pipeline_args() makes Beam's flags.

  Orchestration stays with this process (BeamDagRunner, ML Metadata in SQLite) or moves to
  Kubeflow / Vertex AI as a whole (`fakedetect compile`); the Trainer scales with train.strategy.
  """
  profile: str = 'in-memory'  # one of RUNNER_PROFILES
  # multi-processing: worker processes (0 = one per core); dataflow: --max_num_workers;
  # flink: --parallelism. 0 leaves it to the runner.
  workers: int = 0
  project: str = ''  # dataflow: GCP project
  region: str = ''  # dataflow: e.g. us-central1
  temp_location: str = ''  # dataflow: gs:// folder for staging and temp files
  # dataflow: --sdk_container_image; flink/spark with DOCKER: the worker image
  # (--environment_config). Default: Beam's SDK image, plus this project and TFX pip-installed.
  sdk_container_image: str = ''
  job_endpoint: str = ''  # flink/spark: the Beam job server, host:port
  environment_type: str = 'DOCKER'  # flink/spark: where the SDK workers run (ENVIRONMENT_TYPES)
  # multi-processing: Beam components kept on the in-memory direct runner. Starting their worker
  # processes (each imports TF) costs about what halving their work saves, even on all of CIFAKE
  # (benchmarks/runners.py); [] multi-processes every Beam component.
  in_memory_components: List[str] = dataclasses.field(
      default_factory=lambda: [names.STATISTICS_GEN, names.EVALUATOR])
  # Where artifacts go; '' = <output>/tfx. Remote workers need one they can reach (gs://...).
  pipeline_root: str = ''
  extra_args: List[str] = dataclasses.field(default_factory=list)  # more Beam flags, last wins


@dataclasses.dataclass
class PipelineConfig:
  name: str = 'fakedetect'
  model_name: str = 'fakedetect'
  output_dir: str = 'outputs'
  enable_cache: bool = True
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  image: ImageConfig = dataclasses.field(default_factory=ImageConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  tuner: TunerConfig = dataclasses.field(default_factory=TunerConfig)
  simulate: SimulateConfig = dataclasses.field(default_factory=SimulateConfig)
  gate: GateConfig = dataclasses.field(default_factory=GateConfig)
  runner: RunnerConfig = dataclasses.field(default_factory=RunnerConfig)

  @property
  def pipeline_root(self) -> str:
    return self.runner.pipeline_root or location(self.output_dir, names.PIPELINE_ROOT_DIR)

  @property
  def metadata_path(self) -> str:
    return location(self.output_dir, names.METADATA_STORE)

  @property
  def serving_dir(self) -> str:
    return location(self.output_dir, names.SERVING_DIR, self.model_name)

  @property
  def summary_path(self) -> str:
    return location(self.output_dir, names.SUMMARY_FILE)

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  def module_config(self) -> ModuleConfig:
    return ModuleConfig(image=self.image, model=self.model, train=self.train, tuner=self.tuner)

  def with_overrides(self, overrides: List[str]) -> 'PipelineConfig':
    """Applies `section.field=value` strings, typed by the dataclass fields."""
    config = self
    for item in overrides:
      key, sep, raw = item.partition('=')
      if not sep:
        raise ConfigError(f'--set expects section.field=value, got {item!r}.')
      config = _set(config, key.strip().split('.'), raw.strip(), key)
    return config


class ConfigError(errors.UserError):
  """A user's configuration is wrong; the message says how to fix it."""


def location(base: str, *parts: str) -> str:
  """base/parts: absolute for a local base, untouched for a URI (gs://...)."""
  if is_remote(base):
    return posixpath.join(base, *parts)
  return os.path.join(os.path.abspath(base), *parts)


def beam_pipeline_args(runner: RunnerConfig, setup_file: Optional[str] = None) -> List[str]:
  """Beam's own flags for the runner profile (empty for in-memory: TFX's default direct runner).

  `setup_file`: this project's setup.py where Beam is launched (default: this checkout's).
  Raises ConfigError naming the `--set` a profile is missing.
  """
  profile = runner.profile
  if profile == 'in-memory':
    return list(runner.extra_args)
  if profile == 'multi-processing':
    args = ['--direct_running_mode=multi_processing', f'--direct_num_workers={runner.workers}']
  elif profile == 'dataflow':
    _require(runner, 'dataflow', 'project', 'region', 'temp_location')
    args = ['--runner=DataflowRunner', f'--project={runner.project}',
            f'--region={runner.region}', f'--temp_location={runner.temp_location}']
    if runner.sdk_container_image:
      args.append(f'--sdk_container_image={runner.sdk_container_image}')
    if runner.workers:
      args.append(f'--max_num_workers={runner.workers}')
  else:  # flink, spark: Beam's portable runners, through the cluster's job server
    _require(runner, profile, 'job_endpoint')
    args = [f'--runner={profile.capitalize()}Runner', f'--job_endpoint={runner.job_endpoint}',
            f'--environment_type={runner.environment_type}']
    if runner.sdk_container_image and runner.environment_type == 'DOCKER':
      args.append(f'--environment_config={runner.sdk_container_image}')
    if runner.workers and profile == 'flink':
      args.append(f'--parallelism={runner.workers}')
  # Workers import components.* (ExampleGen DoFns, user modules). The direct runner's workers
  # share this venv and ignore it; it also stops TFX from building an unused sdist of itself.
  setup_file = setup_file or (SETUP_FILE if os.path.isfile(SETUP_FILE) else None)
  if setup_file:
    args.append(f'--setup_file={setup_file}')
  return args + list(runner.extra_args)


def describe_runner(runner: RunnerConfig) -> str:
  """E.g. 'multi-processing direct runner, 2 workers; in memory: StatisticsGen'."""
  if runner.profile == 'in-memory':
    return 'in-memory direct runner'
  if runner.profile == 'dataflow':
    return f'Dataflow in {runner.project}/{runner.region}'
  if runner.profile != 'multi-processing':
    return f'{runner.profile.capitalize()} at {runner.job_endpoint} ({runner.environment_type})'
  text = (f'multi-processing direct runner, '
          f'{runner.workers or "one per core"} worker{"s" if runner.workers != 1 else ""}')
  if runner.in_memory_components:
    text += f'; in memory: {", ".join(runner.in_memory_components)}'
  return text


def component_beam_args(runner: RunnerConfig, component_id: str) -> List[str]:
  """Flags appended to one component's (they win over the pipeline's): in-memory overrides."""
  if runner.profile == 'multi-processing' and component_id in runner.in_memory_components:
    return list(IN_MEMORY_ARGS)
  return []


_EXAMPLES = {'project': 'PROJECT', 'region': 'us-central1', 'temp_location': 'gs://BUCKET/tmp',
             'job_endpoint': 'HOST:8099'}


def _require(runner: RunnerConfig, profile: str, *names: str) -> None:
  missing = [name for name in names if not getattr(runner, name)]
  if missing:
    raise ConfigError(f'runner.profile={profile} needs: ' + ' '.join(
        f'--set runner.{name}={_EXAMPLES[name]}' for name in missing))


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
  """Returns what is wrong with a config, in words a user can act on, or None
  (pipeline/validation.py: every setting's range, checked before any work starts)."""
  from fakedetect.pipeline import validation  # pylint: disable=g-import-not-at-top
  return validation.problem(config)
