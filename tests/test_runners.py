"""Runner profiles: the Beam flags each one makes, as Beam itself reads them, the per-component
in-memory overrides in the built DAG, a real portable-runner job, and the messages a user sees."""

import pytest
from click.testing import CliRunner

from fakedetect import cli
from fakedetect.pipeline import config as config_lib

DATAFLOW = ['runner.profile=dataflow', 'runner.project=my-project', 'runner.region=europe-west4',
            'runner.temp_location=gs://bucket/tmp', 'runner.pipeline_root=gs://bucket/fd/tfx',
            'data.data_dir=gs://bucket/images']


def _config(*settings):
  return config_lib.PipelineConfig().with_overrides(list(settings))


def _options(args):
  from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
  return pipeline_options.PipelineOptions(args)


def _view(args, name):
  from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
  return _options(args).view_as(getattr(pipeline_options, name))


def test_in_memory_is_tfx_default_direct_runner():
  assert config_lib.beam_pipeline_args(config_lib.RunnerConfig()) == []
  assert config_lib.validate(config_lib.PipelineConfig()) is None


def test_multi_processing_sets_beam_direct_runner_flags():
  config = _config('runner.profile=multi-processing', 'runner.workers=2')
  args = config_lib.beam_pipeline_args(config.runner)
  direct = _view(args, 'DirectOptions')
  assert direct.direct_running_mode == 'multi_processing' and direct.direct_num_workers == 2
  assert _view(args, 'StandardOptions').runner is None  # Beam's default: the direct runner
  # The project's setup.py: TFX then skips building an sdist of itself for every component.
  assert _view(args, 'SetupOptions').setup_file == config_lib.SETUP_FILE


def test_dataflow_flags_are_beams_own():
  config = _config(*DATAFLOW, 'runner.sdk_container_image=gcr.io/p/fakedetect:1',
                   'runner.workers=8')
  assert config_lib.validate(config) is None
  args = config_lib.beam_pipeline_args(config.runner)
  gcp = _view(args, 'GoogleCloudOptions')
  assert (gcp.project, gcp.region, gcp.temp_location) == (
      'my-project', 'europe-west4', 'gs://bucket/tmp')
  assert _view(args, 'StandardOptions').runner == 'DataflowRunner'
  worker = _view(args, 'WorkerOptions')
  assert worker.sdk_container_image == 'gcr.io/p/fakedetect:1' and worker.max_num_workers == 8
  assert _view(args, 'SetupOptions').setup_file == config_lib.SETUP_FILE


@pytest.mark.parametrize('profile, runner', [('flink', 'FlinkRunner'), ('spark', 'SparkRunner')])
def test_portable_runner_flags(profile, runner):
  config = _config(f'runner.profile={profile}', 'runner.job_endpoint=jobs:8099',
                   'runner.sdk_container_image=my/beam-tfx:1', 'runner.workers=4')
  args = config_lib.beam_pipeline_args(config.runner)
  assert _view(args, 'StandardOptions').runner == runner
  portable = _view(args, 'PortableOptions')
  assert (portable.job_endpoint, portable.environment_type, portable.environment_config) == (
      'jobs:8099', 'DOCKER', 'my/beam-tfx:1')
  if profile == 'flink':
    assert _view(args, 'FlinkRunnerOptions').parallelism == 4


def test_extra_args_come_last_and_win():
  config = _config('runner.profile=multi-processing', 'runner.workers=2',
                   'runner.extra_args=["--direct_num_workers=3", "--experiments=a,b"]')
  args = config_lib.beam_pipeline_args(config.runner)
  assert args[-2:] == ['--direct_num_workers=3', '--experiments=a,b']
  assert _view(args, 'DirectOptions').direct_num_workers == 3


@pytest.mark.parametrize('settings, words', [
    (['runner.profile=dataflow'], '--set runner.project=PROJECT --set runner.region='),
    (['runner.profile=dataflow', 'runner.project=p', 'runner.region=r'],
     '--set runner.temp_location=gs://BUCKET/tmp'),
    (['runner.profile=flink'], '--set runner.job_endpoint=HOST:8099'),
    (['runner.profile=spark'], '--set runner.job_endpoint=HOST:8099'),
    (['runner.profile=ray'], 'runner.profile=\'ray\' is not one of in-memory, multi-processing'),
    (['runner.workers=-1'], 'runner.workers must be >= 0'),
    (['runner.environment_type=SSH'], 'not one of DOCKER, PROCESS, EXTERNAL, LOOPBACK'),
    (['runner.in_memory_components=Trainer,Evaluator'], 'not Beam components: Trainer'),
    (DATAFLOW[:4], 'Dataflow workers write the artifacts: --set runner.pipeline_root=gs://'),
    (DATAFLOW[:5], 'Dataflow workers read the images: --data gs://'),
    ([s for s in DATAFLOW if 'temp' not in s] + ['runner.temp_location=/tmp'],
     'Dataflow needs a gs:// folder'),
])
def test_profile_problems_say_what_to_set(settings, words):
  assert words in config_lib.validate(_config(*settings))


def test_cli_refuses_an_incomplete_profile_with_a_message_not_a_traceback(tmp_path):
  (tmp_path / 'real').mkdir()
  result = CliRunner().invoke(cli.main, ['run', '--data', str(tmp_path), '--output',
                                         str(tmp_path / 'out'), '--runner', 'dataflow'])
  assert result.exit_code == 1
  assert 'runner.profile=dataflow needs: --set runner.project=PROJECT' in result.output
  assert 'Traceback' not in result.output
  result = CliRunner().invoke(cli.main, ['run', '--data', str(tmp_path), '--workers', '-2'])
  assert result.exit_code == 2 and 'Traceback' not in result.output


def test_runner_and_workers_options_are_shorthands_that_win_over_set():
  config = cli._build_config('d', 'o', ['runner.profile=flink', 'runner.workers=9'], False,
                             False, 'multi-processing', 2)
  assert (config.runner.profile, config.runner.workers) == ('multi-processing', 2)
  assert config_lib.describe_runner(config.runner) == (
      'multi-processing direct runner, 2 workers; in memory: StatisticsGen, Evaluator')


def test_paths_stay_uris_when_remote_and_become_absolute_when_local():
  config = _config('runner.pipeline_root=gs://b/root', 'output_dir=gs://b/out')
  assert config.pipeline_root == 'gs://b/root'
  assert config.serving_dir == 'gs://b/out/serving_model/fakedetect'
  local = _config('output_dir=rel')
  assert local.pipeline_root.startswith('/') and local.pipeline_root.endswith('rel/tfx')


def _modes(config):
  """{Beam component: Beam's direct running mode} in the DAG built from the config."""
  from fakedetect.pipeline import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  tfx_pipeline = pipeline_lib.create_pipeline(config)
  modes = {}
  for node in tfx_pipeline.components:
    if node.id in config_lib.BEAM_COMPONENTS:
      args = node.executor_spec.beam_pipeline_args  # the pipeline's, then the component's
      assert args[:len(tfx_pipeline.beam_pipeline_args)] == tfx_pipeline.beam_pipeline_args
      modes[node.id] = _view(args, 'DirectOptions').direct_running_mode
  return modes


def test_in_memory_components_override_the_profile_in_the_built_dag(tmp_path):
  """TFX puts the pipeline's args first and a component's after them: Beam keeps the last."""
  paths = [f'data.data_dir={tmp_path}', f'output_dir={tmp_path}']
  default = _config('runner.profile=multi-processing', *paths)
  assert _modes(default) == {'ImageExampleGen': 'multi_processing', 'StatisticsGen': 'in_memory',
                             'Transform': 'multi_processing', 'Evaluator': 'in_memory'}
  chosen = _config('runner.profile=multi-processing', 'runner.in_memory_components=Transform',
                   *paths)
  assert _modes(chosen) == {'ImageExampleGen': 'multi_processing',
                            'StatisticsGen': 'multi_processing', 'Transform': 'in_memory',
                            'Evaluator': 'multi_processing'}
  every = _config('runner.profile=multi-processing', 'runner.in_memory_components=[]', *paths)
  assert set(_modes(every).values()) == {'multi_processing'}
  # Remote profiles send every Beam component to the cluster.
  remote = _config('runner.profile=flink', 'runner.job_endpoint=h:1', *paths)
  assert all(not config_lib.component_beam_args(remote.runner, node)
             for node in config_lib.BEAM_COMPONENTS)


@pytest.mark.parametrize('profile', ['flink', 'spark'])
def test_portable_profile_runs_a_beam_job_through_a_job_service(profile):
  """Beam's embedded job service stands in for the cluster's: the profile's flags, the project
  staged from setup.py and LOOPBACK workers make a real portable job."""
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  from apache_beam.testing.util import assert_that, equal_to  # pylint: disable=g-import-not-at-top
  from fakedetect.components import features  # pylint: disable=g-import-not-at-top
  config = _config(f'runner.profile={profile}', 'runner.job_endpoint=embed',
                   'runner.environment_type=LOOPBACK')
  args = config_lib.beam_pipeline_args(config.runner)
  with beam.Pipeline(argv=args) as p:
    labels = p | beam.Create(['real', 'fake']) | beam.Map(features.LABEL_NAMES.index)
    assert_that(labels, equal_to([0, 1]))
  assert type(p.runner).__name__ == f'{profile.capitalize()}Runner'
