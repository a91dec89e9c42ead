"""`fakedetect`: the command line; the pipeline's commands (demo-data, run, compile) are here, the
ones that work on what a run left behind in model_commands.py.

User mistakes end in a message that says what to do, not a traceback: every module raises
`errors.UserError` (components/errors.py) for them, and the command group turns it into click's
message and exit status 1 in one place.
"""

import contextlib
import logging
import os
import sys
import time
import warnings

import click

from fakedetect import model_commands
from fakedetect.components import errors
from fakedetect.pipeline import config as config_lib
from fakedetect.pipeline import names

DEFAULT_DEMO_DIR = 'demo_data'


class _Commands(click.Group):
  """Runs a command; a UserError from anywhere below becomes its message, exit status 1."""

  def invoke(self, ctx):
    try:
      return super().invoke(ctx)
    except errors.UserError as e:
      raise click.ClickException(str(e)) from None


def _quiet_imports() -> None:
  # google-api-core warns about Python 3.10 at import; TF logs device chatter at level 0-1.
  warnings.filterwarnings('ignore', category=FutureWarning)
  warnings.filterwarnings('ignore', category=DeprecationWarning)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def _log_to_file(output_dir: str) -> str:
  """Sends absl/TFX/Beam logging to a file so the console keeps to progress and results."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  log_dir = os.path.join(os.path.abspath(output_dir), names.LOGS_DIR)
  os.makedirs(log_dir, exist_ok=True)
  path = os.path.join(log_dir, time.strftime('run-%Y%m%d-%H%M%S.log'))
  handler = logging.FileHandler(path, encoding='utf-8')
  handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
  root = logging.getLogger()
  for existing in list(root.handlers):
    root.removeHandler(existing)
  root.addHandler(handler)
  root.setLevel(logging.INFO)
  # Library warnings (TFMA's divide-by-zero on empty slices, deprecations) go to the log too.
  logging.captureWarnings(True)
  warnings.simplefilter('default')
  tf_logger = logging.getLogger('tensorflow')
  for existing in list(tf_logger.handlers):
    tf_logger.removeHandler(existing)
  tf_logger.propagate = True
  absl_logging.use_absl_handler = lambda: None
  absl_logging.set_verbosity(absl_logging.INFO)
  absl_logging.get_absl_handler().setLevel(logging.CRITICAL + 1)
  return path


@click.group(cls=_Commands, context_settings={'help_option_names': ['-h', '--help']})
def main() -> None:
  """Train, gate and ship a real-vs-generated image detector with TFX."""
  _quiet_imports()


@main.command('demo-data')
@click.argument('out_dir', default=DEFAULT_DEMO_DIR, type=click.Path(file_okay=False))
@click.option('--per-class', default=200, show_default=True, help='Images per class.')
@click.option('--seed', default=0, show_default=True)
@click.option('--no-broken', is_flag=True, help='Leave out the deliberately broken files.')
def demo_data(out_dir: str, per_class: int, seed: int, no_broken: bool) -> None:
  """Write the deterministic demo set (real/ and fake/<generator>/) into OUT_DIR."""
  from fakedetect import demo_data as demo  # pylint: disable=g-import-not-at-top
  if per_class < 2:
    raise errors.UserError('--per-class must be at least 2 (each split needs both classes).')
  try:
    result = demo.generate(out_dir, per_class=per_class, seed=seed, broken=not no_broken,
                           progress=True)
  except OSError as e:  # a folder the user named cannot be written
    raise errors.UserError(f'Cannot write the demo set into {out_dir}: {e.strerror or e}') from None
  click.echo(f"Wrote {result['real']} real and {result['fake']} fake images"
             f"{' and ' + str(len(result['broken'])) + ' broken files' if result['broken'] else ''}"
             f' to {os.path.abspath(out_dir)}')


def _build_config(data: str, output: str, settings, no_cache: bool, tune: bool,
                  runner_profile=None, workers=None) -> config_lib.PipelineConfig:
  config = config_lib.PipelineConfig(output_dir=output, enable_cache=not no_cache)
  config.data.data_dir = data
  config.tuner.enabled = tune
  settings = list(settings)  # --runner and --workers are shorthands, and win over --set
  if runner_profile:
    settings.append(f'runner.profile={runner_profile}')
  if workers is not None:
    settings.append(f'runner.workers={workers}')
  config = config.with_overrides(settings)
  _refuse_invalid(config)
  return config


def _refuse_invalid(config: config_lib.PipelineConfig) -> None:
  with _output_to(os.devnull):  # a backbone check imports Keras, and TensorFlow's import chatter
    problem = config_lib.validate(config)
  if problem:
    raise errors.UserError(problem)


def _resolve_auto(config: config_lib.PipelineConfig, settings) -> config_lib.PipelineConfig:
  """Replaces `auto` settings by what suits the folder (pipeline/auto.py), and says so."""
  from fakedetect.pipeline import auto  # pylint: disable=g-import-not-at-top
  if not auto.needs_resolving(config):
    return config
  try:
    sides = auto.sample_sides(config.data.data_dir)
  except Exception as e:  # pylint: disable=broad-except
    if not config_lib.is_remote(config.data.data_dir):
      raise  # a local folder's problem is the user's to fix (a LayoutError says how)
    # A bucket only the platform can read (compile).
    click.echo(f'auto settings: cannot look at {config.data.data_dir} from here ({e}); using '
               'the thumbnail recipe. Set image.view and model.backbone to choose.', err=True)
    sides = []
  config, applied = auto.resolve(config, settings, sides)
  click.echo(auto.describe(applied, sides), err=True)
  _refuse_invalid(config)
  return config


def _pipeline_options(command):
  """The settings `run` and `compile` share."""
  options = [
      click.option('--set', 'settings', multiple=True, metavar='SECTION.FIELD=VALUE',
                   help='Override a config value, e.g. --set train.epochs=5 (repeatable).'),
      click.option('--runner', 'runner_profile', type=click.Choice(config_lib.RUNNER_PROFILES),
                   default=None, help='Where the Beam components run (runner.profile; default '
                   'in-memory). dataflow, flink and spark need more: see the README.'),
      click.option('--workers', type=click.IntRange(0), default=None,
                   help='runner.workers: multi-processing worker processes (0 = one per '
                   'core), Dataflow\'s max workers, Flink\'s parallelism.'),
      click.option('--tune', is_flag=True, help='Run the keras-tuner search before training.'),
      click.option('--no-cache', is_flag=True, help='Re-run every component even if cached.'),
  ]
  for option in reversed(options):
    command = option(command)
  return command


@main.command()
@click.option('--data', default=None,
              help=f'Folder of labelled images (or a gs:// URI). Default: the demo set in '
              f'./{DEFAULT_DEMO_DIR}, generated when missing.')
@click.option('--output', default='outputs', show_default=True, type=click.Path(file_okay=False),
              help='Where the run keeps metadata, artifacts, logs, summary.json and '
              'serving_model/.')
@_pipeline_options
def run(data, output, settings, runner_profile, workers, tune, no_cache) -> None:
  """Run the whole pipeline: ingest, validate, transform, train, evaluate, push."""
  if data is None:
    data = DEFAULT_DEMO_DIR
    if not os.path.isdir(data):
      click.echo(f'No --data given: generating the demo set in ./{data} first.', err=True)
      from fakedetect import demo_data as demo  # pylint: disable=g-import-not-at-top
      demo.generate(data, progress=True)
  if not config_lib.is_remote(data) and not os.path.isdir(data):
    raise errors.UserError(f'--data {data!r} is not a folder. Point it at a folder of labelled '
                           'images (e.g. real/ and fake/ sub-folders), or run `fakedetect '
                           'demo-data` first.')
  config = _build_config(data, output, settings, no_cache, tune, runner_profile, workers)
  _check_layout(config.data.data_dir)
  config = _resolve_auto(config, settings)
  os.makedirs(config.output_dir, exist_ok=True)
  log_path = _log_to_file(config.output_dir)
  click.echo(f'Running pipeline {config.name!r} on {config_lib.location(data)} '
             f'({config_lib.describe_runner(config.runner)}); details in {log_path}', err=True)

  try:
    with _output_to(log_path) as console:
      from fakedetect.pipeline import runner  # pylint: disable=g-import-not-at-top
      runner.run(config, console=console)  # TensorFlow's import chatter goes to the log too
  except Exception as e:  # pylint: disable=broad-except
    message = _root_message(e)
    raise errors.UserError(f'The pipeline failed: {message}\nFull log: {log_path}') from None
  from fakedetect import summary as summary_lib  # pylint: disable=g-import-not-at-top
  result = summary_lib.collect(config)
  summary_lib.write(result, config.summary_path)
  serving_root = os.path.dirname(config.serving_dir)
  if os.path.isdir(serving_root):
    from fakedetect import registry  # pylint: disable=g-import-not-at-top
    result['models_config'] = registry.write_config(serving_root)
  click.echo(summary_lib.render(result))
  if result['pushed_model']:  # the pipeline's ModelCardGenerator wrote the card beside it
    from fakedetect.components import model_card  # pylint: disable=g-import-not-at-top
    card = model_card.card_path(result['pushed_model'])
    click.echo('model card: ' + (card or f'none beside the model (see the '
                                         f'{names.MODEL_CARD_GENERATOR} step in {log_path})'))
  click.echo(f'summary: {config.summary_path}')


@main.command('compile')
@click.option('--target', type=click.Choice([config_lib.KUBEFLOW_V2]),
              default=config_lib.KUBEFLOW_V2, show_default=True,
              help='The orchestrator to compile for.')
@click.option('--output', default='pipeline.json', show_default=True,
              type=click.Path(dir_okay=False),
              help='.json: the PipelineJob Vertex AI Pipelines takes; .yaml: the PipelineSpec '
              'the Kubeflow Pipelines client takes.')
@click.option('--pipeline-root', default=config_lib.DEFAULT_KFP_ROOT, show_default=True,
              help='Where the platform keeps artifacts (gs://... on Vertex AI); the pushed '
              'model goes to <pipeline-root>/serving_model/.')
@click.option('--data', default=None, help='The images, as the platform reads them. '
              'Default: <pipeline-root>/data.')
@click.option('--image', default=config_lib.DEFAULT_IMAGE, show_default=True,
              help='Container image every component runs in: TFX 1.16 plus this project '
              '(docker build -t IMAGE . with the Dockerfile here, pushed where the cluster pulls).')
@_pipeline_options
def compile_command(target, output, pipeline_root, data, image, settings, runner_profile,
                    workers, tune, no_cache) -> None:
  """Compile the pipeline for Kubeflow Pipelines v2 / Vertex AI Pipelines (offline)."""
  del target  # one target for now; the option keeps the command stable when more come
  if not config_lib.is_remote(pipeline_root):
    raise errors.UserError(f'--pipeline-root {pipeline_root!r} is not a URI: the platform\'s '
                           'pods share no disk with this machine; give gs://BUCKET/PATH (or '
                           's3://, minio://).')
  settings = [f'runner.pipeline_root={pipeline_root}'] + list(settings)
  config = _build_config(data or f'{pipeline_root.rstrip("/")}/data', pipeline_root, settings,
                         no_cache, tune, runner_profile, workers)
  config = _resolve_auto(config, settings)
  with _output_to(os.devnull):  # TensorFlow's and TFX's import and compile chatter
    from fakedetect.pipeline import runner  # pylint: disable=g-import-not-at-top
    path = runner.compile_kubeflow_v2(config, output, image)
  click.echo(f'Wrote {path}: pipeline {config.name!r}, image {image}, pipeline root '
             f'{config.pipeline_root}, data {config.data.data_dir}, Beam '
             f'{config_lib.describe_runner(config.runner)}.')
  if pipeline_root == config_lib.DEFAULT_KFP_ROOT:
    click.echo('Note: the pipeline root is a placeholder; compile again with --pipeline-root '
               'gs://YOUR-BUCKET/PATH before submitting.', err=True)


@contextlib.contextmanager
def _output_to(path: str):
  """Sends stdout and stderr, this process's and its children's (TFX's wheel builds, Keras' epoch
  lines, Beam's worker processes), to the log file; yields the console for progress lines."""
  sys.stdout.flush()
  sys.stderr.flush()
  saved = {fd: os.dup(fd) for fd in (1, 2)}
  console = os.fdopen(os.dup(saved[2]), 'w', buffering=1, encoding='utf-8')
  with open(path, 'a', encoding='utf-8') as log:
    for fd in saved:
      os.dup2(log.fileno(), fd)
    try:
      yield console
    finally:
      sys.stdout.flush()
      sys.stderr.flush()
      for fd, copy in saved.items():
        os.dup2(copy, fd)
        os.close(copy)
      console.close()


def _check_layout(data_dir: str) -> None:
  """Fails fast, before TFX starts, on a folder whose layout cannot be read."""
  from fakedetect.components.image_example_gen import layouts  # pylint: disable=g-import-not-at-top
  layouts.detect(data_dir)


def _root_message(error: BaseException) -> str:
  """The innermost message: Beam and TFX wrap a component's error several times."""
  while error.__cause__ is not None or error.__context__ is not None:
    error = error.__cause__ or error.__context__
  text = str(error).strip().splitlines()
  return text[-1] if text else type(error).__name__


for _command in model_commands.COMMANDS:  # models, predict, evaluate, explain, inspect
  main.add_command(_command)


if __name__ == '__main__':
  sys.exit(main())
