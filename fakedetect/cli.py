"""`fakedetect`: the command line; the pipeline's commands (demo-data, run, compile) are here, the
ones that work on what a run left behind in model_commands.py.

User mistakes end in a message that says what to do, not a traceback: every module raises
`errors.UserError` (components/errors.py) for them, and the command group turns it into click's
message and exit status 1 in one place.
"""

import os
import sys
import warnings

import click

from fakedetect import console
from fakedetect import model_commands
from fakedetect.components import errors
from fakedetect.pipeline import config as config_lib
from fakedetect.pipeline import names
from fakedetect.pipeline import output_folder

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
  # oneDNN's fused CPU kernels, which TensorFlow turns on by itself only on some Intel CPUs;
  # training measured faster with them wherever we ran it (benchmarks/train_speed.py, README).
  # Read when TensorFlow is first imported, so set here; TF_ENABLE_ONEDNN_OPTS=0 in the
  # environment still turns them off.
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')


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
                  runner_profile=None, workers=None,
                  output_option: str = '--output') -> config_lib.PipelineConfig:
  """The config from a command's options and --set settings. `output` is the folder the command
  names with `output_option`: a --set that says otherwise (output_dir, data.data_dir, compile's
  runner.pipeline_root) is refused, not obeyed."""
  config = config_lib.PipelineConfig(output_dir=output, enable_cache=not no_cache)
  config.data.data_dir = data
  config.tuner.enabled = tune
  settings = list(settings)  # --runner and --workers are shorthands, and win over --set
  if runner_profile:
    settings.append(f'runner.profile={runner_profile}')
  if workers is not None:
    settings.append(f'runner.workers={workers}')
  config = config.with_overrides(settings)
  named = [('output_dir', config.output_dir, output_option, output),
           ('data.data_dir', config.data.data_dir, '--data', data)]
  if output_option == '--pipeline-root':  # compile: the root is the option's, as output_dir is
    named.append(('runner.pipeline_root', config.runner.pipeline_root, output_option, output))
  for key, value, option, given in named:
    if config_lib.location(value) != config_lib.location(given):
      raise errors.UserError(f'--set {key}={value} contradicts {option} {given}: give the '
                             f'folder once, with {option}.')
  _refuse_invalid(config)
  return config


def _refuse_invalid(config: config_lib.PipelineConfig) -> None:
  # A backbone check imports Keras: TensorFlow's import chatter goes nowhere.
  with console.output_to(os.devnull):
    problem = config_lib.validate(config)
  if problem:
    raise errors.UserError(problem)


def _resolve_auto(config: config_lib.PipelineConfig, settings) -> config_lib.PipelineConfig:
  """Replaces `auto` settings by what suits the folder (pipeline/auto.py), and says so."""
  from fakedetect.pipeline import auto  # pylint: disable=g-import-not-at-top
  if not auto.needs_resolving(config):
    return config
  try:
    sides = auto.sample_sides(config.data.data_dir, class_names=config.data.class_names())
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
@click.option('--wait', is_flag=True,
              help='If another run is using --output, wait for it to end instead of stopping.')
@_pipeline_options
def run(data, output, wait, settings, runner_profile, workers, tune, no_cache) -> None:
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
  output_folder.refuse_overlap(config)
  _check_layout(config.data)
  config = _resolve_auto(config, settings)
  waiting = lambda holder: click.echo(f'Waiting for the run using {config.output_dir}: '
                                      f'{holder}', err=True)
  with output_folder.claim(config.output_dir, wait, on_wait=waiting) as note:
    if note:
      click.echo(note, err=True)
    try:
      log_path = console.log_to_file(config.output_dir)
    except OSError as e:
      raise output_folder.unwritable(config.output_dir, e) from None
    _run_and_report(config, log_path)


def _run_and_report(config: config_lib.PipelineConfig, log_path: str) -> None:
  """Runs the pipeline with progress on the console and the rest in the log, then says how
  it went (summary.json, the model card, models.config)."""
  click.echo(f'Running pipeline {config.name!r} on {config_lib.location(config.data.data_dir)} '
             f'({config_lib.describe_runner(config.runner)}); details in {log_path}', err=True)
  try:
    with console.output_to(log_path) as stream:
      from fakedetect.pipeline import runner  # pylint: disable=g-import-not-at-top
      # TensorFlow's import chatter goes to the log too; epoch lines come through a file beside it.
      runner.run(config, console=stream, progress_dir=os.path.dirname(log_path))
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
                         no_cache, tune, runner_profile, workers, '--pipeline-root')
  config = _resolve_auto(config, settings)
  with console.output_to(os.devnull):  # TensorFlow's and TFX's import and compile chatter
    from fakedetect.pipeline import runner  # pylint: disable=g-import-not-at-top
    path = runner.compile_kubeflow_v2(config, output, image)
  click.echo(f'Wrote {path}: pipeline {config.name!r}, image {image}, pipeline root '
             f'{config.pipeline_root}, data {config.data.data_dir}, Beam '
             f'{config_lib.describe_runner(config.runner)}.')
  if pipeline_root == config_lib.DEFAULT_KFP_ROOT:
    click.echo('Note: the pipeline root is a placeholder; compile again with --pipeline-root '
               'gs://YOUR-BUCKET/PATH before submitting.', err=True)


def _check_layout(data: config_lib.DataConfig) -> None:
  """Fails fast, before TFX starts, on a folder whose layout cannot be read."""
  from fakedetect.components.image_example_gen import layouts  # pylint: disable=g-import-not-at-top
  layouts.detect(data.data_dir, data.class_names())


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
