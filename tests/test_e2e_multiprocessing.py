"""End to end on Beam's multi-processing direct runner, 2 workers, through the real CLI.

ImageExampleGen and Transform hand their work to SDK worker processes (StatisticsGen and
Evaluator stay in memory, the profile's default); the Transform and Trainer module code runs from
the wheels TFX builds under the pipeline root (`_wheels/`), as on a remote runner. The optional
ArtifactSimulator is on (tiny), so the whole DAG, optional node included, runs from the CLI.
"""

import glob
import json
import os
import subprocess
import sys
import zipfile

import pytest

from tests import demo_runs

pytestmark = [pytest.mark.e2e, pytest.mark.pipeline]

FAKEDETECT = [sys.executable, '-m', 'fakedetect']
PER_CLASS = 60  # the smallest set whose splits hold both classes; the runner is under test
SIMULATED = 20
SETTINGS = ['--set', 'train.epochs=2', '--set', 'gate.min_precision=0',
            '--set', 'gate.min_recall=0', '--set', 'simulate.enabled=true',
            '--set', f'simulate.images={SIMULATED}', '--set', 'simulate.epochs=1']


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  root = tmp_path_factory.mktemp('multiprocessing')
  data, output = root / 'data', root / 'out'
  demo_runs.write_demo_data(data, PER_CLASS)
  result = subprocess.run(
      FAKEDETECT + ['run', '--data', str(data), '--output', str(output),
                    '--runner', 'multi-processing', '--workers', '2'] + SETTINGS,
      capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, f'{result.stdout}\n{result.stderr}'
  [log] = glob.glob(str(output / 'logs' / 'run-*.log'))
  return {'result': result, 'output': output, 'log': open(log, encoding='utf-8').read(),
          'summary': json.loads((output / 'summary.json').read_text())}


def test_run_completes_and_the_summary_names_the_runner(run):
  summary = run['summary']
  assert summary['runner']['profile'] == 'multi-processing'
  assert summary['runner']['workers'] == 2
  assert '--direct_running_mode=multi_processing' in summary['runner']['beam_pipeline_args']
  assert set(summary['components'].values()) == {'complete'}, summary['components']
  assert summary['blessed'] and summary['pushed_model']
  assert 'Beam: multi-processing direct runner, 2 workers' in run['result'].stdout
  # The console keeps to progress: the workers' output goes to the log.
  assert 'Transform done' in run['result'].stderr
  assert 'Worker:' not in run['result'].stderr


def test_the_summary_and_the_model_card_say_what_was_simulated(run):
  summary = run['summary']
  assert summary['components']['ArtifactSimulator'] == 'complete'
  simulation = summary['simulation']
  assert (simulation['simulated'], simulation['mode'], simulation['source']) == (
      SIMULATED, 'add', 'simulated/transposed')
  assert os.path.getsize(simulation['pairs']) > 0
  assert (f'simulated: {SIMULATED} training fakes as simulated/transposed (mode add'
          in run['result'].stdout)
  card = open(os.path.join(summary['pushed_model'], 'assets.extra', 'model_card.md')).read()
  assert f'the training split also held {SIMULATED} fakes' in ' '.join(card.split())


def test_beam_work_ran_in_two_sdk_worker_processes(run):
  """The workers report their options back to the runner, which logs them."""
  reports = [line.replace('\\', '') for line in run['log'].splitlines()
             if 'Worker:' in line and 'Pipeline_options' in line]
  assert len(reports) >= 2, 'no SDK worker processes reported'
  for line in reports:
    assert "'direct_running_mode': 'multi_processing'" in line
    assert "'direct_num_workers': 2" in line


def test_module_code_ran_from_the_user_code_wheels_tfx_built(run):
  from ml_metadata import metadata_store  # pylint: disable=g-import-not-at-top
  from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
  wheels = os.path.join(str(run['output']), 'tfx', '_wheels')
  connection = metadata_store_pb2.ConnectionConfig()
  connection.sqlite.filename_uri = str(run['output'] / 'metadata.sqlite')
  store = metadata_store.MetadataStore(connection)
  types = {t.id: t.name for t in store.get_execution_types()}
  for component, module in (('Transform', 'transform'), ('Trainer', 'train')):
    [execution] = [e for e in store.get_executions()
                   if types[e.type_id].endswith(f'.{component}')]
    # TFX rewrites module_file to `module@wheel` and installs the wheel for the executor.
    name, _, wheel = execution.custom_properties['module_path'].string_value.partition('@')
    assert name == module and os.path.dirname(wheel) == wheels
    with zipfile.ZipFile(wheel) as archive:
      files = set(archive.namelist())
    # TFX packs every *.py of the module's folder; the `components` package they import comes
    # with the project (installed here, --setup_file for remote workers).
    assert {f'{module}.py', 'features.py', 'model.py', 'distribute.py'} <= files, files
