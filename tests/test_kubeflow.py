"""`fakedetect compile --target kubeflow-v2`: the KFP v2 JSON holds every component of the DAG with
its parameters, runs in the given image, compiles without network, and KFP can load it."""

import json
import socket

import pytest
from click.testing import CliRunner

from fakedetect import cli
from fakedetect.pipeline import config as config_lib

ROOT = 'gs://bucket/fakedetect'
DATA = 'gs://bucket/images'
IMAGE = 'europe-docker.pkg.dev/p/r/fakedetect:1'
DATAFLOW = ['--set', 'runner.project=p', '--set', 'runner.region=europe-west4',
            '--set', 'runner.temp_location=gs://bucket/tmp']


@pytest.fixture
def offline(monkeypatch):
  """Any attempt to reach the network fails the compile."""
  real_connect = socket.socket.connect

  def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
      raise OSError(f'network access attempted: {address}')
    return real_connect(self, address)

  monkeypatch.setattr(socket.socket, 'connect', connect)


def _compile(tmp_path, name, *extra):
  output = tmp_path / name
  result = CliRunner().invoke(cli.main, ['compile', '--target', 'kubeflow-v2', '--output',
                                         str(output), *extra])
  assert result.exit_code == 0, result.output
  return output, result


@pytest.fixture(scope='module')
def compiled(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp('kfp')
  output, result = _compile(
      tmp_path, 'pipeline.json', '--pipeline-root', ROOT, '--data', DATA, '--image', IMAGE,
      '--tune', '--runner', 'dataflow', '--workers', '4', *DATAFLOW,
      '--set', 'train.strategy=mirrored', '--set', 'gate.min_robust_accuracy=0.7')
  job = json.loads(output.read_text())
  spec = job['pipelineSpec']
  params = {name: {key: _value(value)
                   for key, value in task.get('inputs', {}).get('parameters', {}).items()}
            for name, task in spec['root']['dag']['tasks'].items()}
  return {'job': job, 'spec': spec, 'params': params, 'stdout': result.output}


def _value(parameter):
  constant = parameter['runtimeValue']['constantValue']
  [(kind, value)] = constant.items()
  return int(value) if kind == 'intValue' else value


def _expected_ids():
  from fakedetect.pipeline import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.PipelineConfig(output_dir=ROOT)
  config.tuner.enabled = True
  config.data.data_dir = DATA
  return {node.id for node in pipeline_lib.create_components(config, packaged_modules=False)}


def test_every_component_of_the_dag_is_a_task(compiled):
  tasks = set(compiled['spec']['root']['dag']['tasks'])
  expected = _expected_ids()
  assert expected >= {'ImageExampleGen', 'StatisticsGen', 'ImportSchemaGen', 'ExampleValidator',
                      'Transform', 'Tuner', 'Trainer', 'Evaluator', 'RobustnessGate', 'Pusher',
                      'ModelCardGenerator', 'latest_blessed_model_resolver'}
  # KFP resolves the latest blessed model with two artifact queries instead of one node.
  resolver = 'latest_blessed_model_resolver'
  assert tasks == (expected - {resolver}) | {f'{resolver}-model-resolver',
                                             f'{resolver}-model-blessing-resolver'}
  dag = compiled['spec']['root']['dag']['tasks']
  assert set(dag['Pusher']['dependentTasks']) == {'RobustnessGate', 'Trainer'}
  assert 'Evaluator' in dag['RobustnessGate']['dependentTasks']
  assert 'Pusher' in dag['ModelCardGenerator']['dependentTasks']  # the card runs after the push


def test_component_parameters_are_the_configs(compiled):
  params = compiled['params']
  gen = params['ImageExampleGen']
  assert gen['data_dir'] == DATA
  assert json.loads(gen['split_ratios']) == {'train': 70, 'eval': 15, 'test': 15}
  assert gen['max_pixels'] == config_lib.DataConfig().max_pixels
  schema_file = f'{config_lib.IMAGE_ROOT}/schema/schema.pbtxt'  # the image's copy
  assert params['ImportSchemaGen']['schema_file'] == schema_file
  # The module code comes from the image by import path; nothing is uploaded at compile time.
  assert params['Transform']['preprocessing_fn'] == (
      'fakedetect.components.transform.preprocessing_fn')
  assert params['Trainer']['run_fn'] == 'fakedetect.components.train.run_fn'
  assert params['Tuner']['tuner_fn'] == 'fakedetect.components.train.tuner_fn'
  custom = json.loads(params['Trainer']['custom_config'])
  assert custom['train']['strategy'] == 'mirrored'
  assert custom['train']['epochs'] == config_lib.TrainConfig().epochs
  assert json.loads(params['Transform']['custom_config']) == {'image': custom['image']}
  # The module code rebuilds the typed config from what the pipeline compiled in.
  assert config_lib.ModuleConfig.from_custom_config(custom).train.strategy == 'mirrored'
  eval_config = json.loads(params['Evaluator']['eval_config'])
  metrics = {m['class_name']: m for m in eval_config['metrics_specs'][0]['metrics']}
  assert {'Precision', 'Recall', 'BinaryAccuracy', 'AUC'} <= set(metrics)
  bar = metrics['Precision']['per_slice_thresholds'][0]['threshold']['value_threshold']
  assert bar['lower_bound'] == config_lib.GateConfig().min_precision
  assert params['Evaluator']['example_splits'] == '["test"]'
  gate = params['RobustnessGate']
  assert gate['split'] == 'test' and gate['min_accuracy'] == 0.7
  assert 'jpeg_q50' in json.loads(gate['perturbations'])
  destination = json.loads(params['Pusher']['push_destination'])
  assert destination['filesystem']['base_directory'] == f'{ROOT}/serving_model/fakedetect'
  assert compiled['job']['runtimeConfig']['gcsOutputDirectory'] == ROOT


def test_every_container_runs_the_image_and_beam_components_get_the_profile(compiled):
  executors = compiled['spec']['deploymentSpec']['executors']
  containers = {label[:-len('_executor')]: e['container'] for label, e in executors.items()
                if 'container' in e}
  assert set(containers) == _expected_ids() - {'latest_blessed_model_resolver'}
  for container in containers.values():
    assert container['image'] == IMAGE
  assert containers['ImageExampleGen']['args'][1] == (
      'fakedetect.components.image_example_gen.executor.Executor')
  assert containers['RobustnessGate']['args'][1].startswith('fakedetect.components.robustness.')
  for node in config_lib.BEAM_COMPONENTS:
    args = containers[node]['args']
    assert '--runner=DataflowRunner' in args and '--project=p' in args, node
    assert '--max_num_workers=4' in args and '--temp_location=gs://bucket/tmp' in args
    assert f'--setup_file={config_lib.IMAGE_ROOT}/setup.py' in args  # the image's, not ours


def test_custom_artifact_types_are_importable_by_their_kfp_title(compiled):
  """The container rebuilds each artifact from its schema title, an import path."""
  from tfx.utils import import_utils  # pylint: disable=g-import-not-at-top
  titles = set()
  for component in compiled['spec']['components'].values():
    for artifact in component.get('outputDefinitions', {}).get('artifacts', {}).values():
      titles.add(artifact['artifactType']['instanceSchema'].split('\n')[0][len('title: '):])
  custom = {title for title in titles if not title.startswith('tfx.')}
  assert custom == {'fakedetect.IngestReport', 'fakedetect.Robustness', 'fakedetect.ModelCard'}
  for title in custom:
    assert import_utils.import_class_by_path(title).TYPE_NAME == title


def test_compiles_offline_to_yaml_for_the_kfp_client(tmp_path, offline):
  """.yaml: the PipelineSpec alone, which kfp.Client().create_run_from_pipeline_package loads."""
  del offline
  import yaml  # pylint: disable=g-import-not-at-top
  from google.protobuf import json_format  # pylint: disable=g-import-not-at-top
  from kfp.pipeline_spec import pipeline_spec_pb2  # pylint: disable=g-import-not-at-top
  output, result = _compile(tmp_path, 'pipeline.yaml', '--pipeline-root', ROOT)
  assert 'Wrote' in result.output
  spec = json_format.ParseDict(yaml.safe_load(output.read_text()),
                               pipeline_spec_pb2.PipelineSpec())
  assert 'Trainer' in spec.root.dag.tasks
  assert spec.deployment_spec  # the executors


def test_default_compile_works_and_says_the_root_is_a_placeholder(tmp_path, offline):
  del offline
  output, result = _compile(tmp_path, 'pipeline.json')
  job = json.loads(output.read_text())
  assert job['runtimeConfig']['gcsOutputDirectory'] == config_lib.DEFAULT_KFP_ROOT
  assert 'placeholder' in result.output


def test_user_errors_are_messages(tmp_path, monkeypatch):
  result = CliRunner().invoke(cli.main, ['compile', '--pipeline-root', str(tmp_path)])
  assert result.exit_code == 1 and 'is not a URI' in result.output
  result = CliRunner().invoke(cli.main, ['compile', '--pipeline-root', ROOT, '--runner',
                                         'dataflow'])
  assert result.exit_code == 1 and '--set runner.project=PROJECT' in result.output
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  monkeypatch.delattr(tfx.orchestration.experimental, 'KubeflowV2DagRunner')  # as without kfp
  result = CliRunner().invoke(cli.main, ['compile', '--output', str(tmp_path / 'p.json')])
  assert result.exit_code == 1
  assert 'pip install "fakedetect[kubeflow]"' in result.output
  assert 'Traceback' not in result.output
