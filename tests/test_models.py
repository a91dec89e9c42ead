"""The push directory: versions, models.config (as TF Serving parses it), rollback and
`models list`."""

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from fakedetect.pipeline import names
from tests import serving_helpers as helpers

OLD, NEW = (version for version, _ in helpers.VERSIONS)


@pytest.fixture
def output(pushed, tmp_path):
  """A private copy of a run's output folder holding two pushed versions."""
  copy = tmp_path / 'output'
  shutil.copytree(pushed['output'], copy)
  return str(copy)


def _serving_config(root):
  """models.config parsed by TF Serving's own proto."""
  from google.protobuf import text_format
  from tensorflow_serving.config import model_server_config_pb2
  with open(os.path.join(root, 'models.config')) as f:
    return text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())


def test_write_config_lists_models_on_disk_and_parses_as_tf_serving_does(output):
  from fakedetect import registry
  root = os.path.join(output, names.SERVING_DIR)
  path = registry.write_config(root)
  assert path == os.path.join(root, 'models.config')
  (entry,) = _serving_config(root).model_config_list.config
  assert entry.name == 'fakedetect' and entry.model_platform == 'tensorflow'
  assert entry.base_path == os.path.join(root, 'fakedetect')
  assert not entry.HasField('model_version_policy')  # unpinned: the latest is served
  assert registry.served_version(root).version == NEW
  # For the tensorflow/serving container, where the root is mounted at /models.
  registry.write_config(root, base_path='/models')
  assert _serving_config(root).model_config_list.config[0].base_path == '/models/fakedetect'
  registry.write_config(root)  # the base path chosen is kept on regeneration
  assert _serving_config(root).model_config_list.config[0].base_path == '/models/fakedetect'


def test_half_written_version_is_never_served_or_pinned(output):
  from fakedetect import registry
  root = os.path.join(output, names.SERVING_DIR)
  partial = os.path.join(root, 'fakedetect', str(NEW + 100))
  shutil.copytree(os.path.join(root, 'fakedetect', str(NEW)), partial,
                  ignore=shutil.ignore_patterns('saved_model.pb'))  # a push still copying
  assert [v.version for v in registry.versions(os.path.dirname(partial)) if not v.complete] == [
      NEW + 100]
  assert registry.served_version(root).version == NEW
  with pytest.raises(registry.ModelsError, match='not a complete pushed model'):
    registry.rollback(root, NEW + 100)


def test_rollback_pins_through_the_version_policy_and_survives_new_pushes(output):
  from fakedetect import registry
  root = os.path.join(output, names.SERVING_DIR)
  registry.rollback(root, OLD)
  (entry,) = _serving_config(root).model_config_list.config
  assert list(entry.model_version_policy.specific.versions) == [OLD]
  assert registry.served_version(root).version == OLD
  assert registry.find_model(output) == os.path.join(root, 'fakedetect', str(OLD))
  # A new push (the lead's `run` calls write_config after it) keeps the pin.
  helpers.push(os.path.join(root, 'fakedetect', str(NEW)), os.path.join(root, 'fakedetect'),
               NEW + 1)
  registry.write_config(root)
  assert registry.served_version(root).version == OLD
  registry.unpin(root)
  assert not _serving_config(root).model_config_list.config[0].HasField('model_version_policy')
  assert registry.served_version(root).version == NEW + 1


def test_pin_on_a_deleted_version_is_dropped_not_kept_dangling(output):
  from fakedetect import registry
  root = os.path.join(output, names.SERVING_DIR)
  registry.rollback(root, OLD)
  shutil.rmtree(os.path.join(root, 'fakedetect', str(OLD)))
  registry.write_config(root)
  assert registry.read_config(root)[0].pinned is None
  with pytest.raises(registry.ModelsError, match='not a complete pushed model'):
    registry.rollback(root, 12345)


def test_find_model_from_any_level_and_a_clear_error_without_one(output, tmp_path):
  from fakedetect import registry
  version_dir = os.path.join(output, names.SERVING_DIR, 'fakedetect', str(NEW))
  for path in (output, os.path.join(output, names.SERVING_DIR),
               os.path.join(output, names.SERVING_DIR, 'fakedetect'), version_dir):
    assert registry.find_model(path) == version_dir
  with pytest.raises(registry.ModelsError, match='fakedetect run'):
    registry.find_model(str(tmp_path / 'empty'))


def _lineage_store(path, destination, run_id):
  """A real MLMD store holding what TFX records: Evaluator -> blessing -> Pusher -> PushedModel."""
  from ml_metadata import metadata_store
  from ml_metadata.proto import metadata_store_pb2 as pb
  connection = pb.ConnectionConfig()
  connection.sqlite.filename_uri = path
  connection.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
  store = metadata_store.MetadataStore(connection)
  type_id = lambda name: store.put_artifact_type(pb.ArtifactType(name=name))
  blessing = pb.Artifact(type_id=type_id('ModelBlessing'), uri='/nowhere/blessing')
  blessing.custom_properties['blessed'].int_value = 1
  pushed = pb.Artifact(type_id=type_id('PushedModel'), uri='/nowhere/pushed')
  pushed.custom_properties['pushed'].int_value = 1
  pushed.custom_properties['pushed_destination'].string_value = destination
  pushed.custom_properties['pushed_version'].string_value = os.path.basename(destination)
  blessing_id, pushed_id = store.put_artifacts([blessing, pushed])
  evaluator_type = store.put_execution_type(pb.ExecutionType(name='Evaluator'))
  pusher_type = store.put_execution_type(pb.ExecutionType(name='Pusher'))
  evaluator_id, pusher_id = store.put_executions([pb.Execution(type_id=evaluator_type),
                                                  pb.Execution(type_id=pusher_type)])
  step = lambda key: pb.Event.Path(steps=[pb.Event.Path.Step(key=key),
                                          pb.Event.Path.Step(index=0)])
  store.put_events([
      pb.Event(artifact_id=blessing_id, execution_id=evaluator_id, type=pb.Event.OUTPUT,
               path=step('blessing')),
      pb.Event(artifact_id=blessing_id, execution_id=pusher_id, type=pb.Event.INPUT,
               path=step('model_blessing')),
      pb.Event(artifact_id=pushed_id, execution_id=pusher_id, type=pb.Event.OUTPUT,
               path=step('pushed_model'))])
  run_type = store.put_context_type(pb.ContextType(name='pipeline_run'))
  (run,) = store.put_contexts([pb.Context(type_id=run_type, name=run_id)])
  store.put_attributions_and_associations(
      [], [pb.Association(context_id=run, execution_id=evaluator_id),
           pb.Association(context_id=run, execution_id=pusher_id)])


def test_models_list_shows_versions_metadata_and_the_blessing_run(output):
  from fakedetect import cli, registry
  root = os.path.join(output, names.SERVING_DIR)
  old_dir, new_dir = (os.path.join(root, 'fakedetect', str(v)) for v in (OLD, NEW))
  _lineage_store(os.path.join(output, names.METADATA_STORE), old_dir, 'run-that-blessed-old')
  with open(os.path.join(output, names.SUMMARY_FILE), 'w') as f:  # the latest run's summary
    json.dump({'run_id': 'latest-run', 'pushed_model': new_dir,
               'metrics': {'accuracy': 0.91, 'precision': 0.9, 'recall': 0.8, 'auc': 0.95}}, f)
  rows = registry.describe(root)
  assert [r['version'] for r in rows] == [NEW, OLD]
  assert [r['threshold'] for r in rows] == pytest.approx([0.63, 0.37])
  assert rows[0]['hyperparameters'] == helpers.HPARAMS
  assert rows[0]['served'] and not rows[1]['served']
  assert rows[0]['run_id'] == 'latest-run' and rows[0]['metrics']['accuracy'] == 0.91
  assert rows[1]['run_id'] == 'run-that-blessed-old'

  runner = CliRunner()
  listed = runner.invoke(cli.main, ['models', 'list', '--output', output])
  assert listed.exit_code == 0, listed.output
  lines = listed.output.splitlines()
  assert lines[1].startswith(f'* {NEW}') and '0.6300' in lines[1] and '0.9100' in lines[1]
  assert 'latest-run' in lines[1] and 'run-that-blessed-old' in lines[2]
  rolled = runner.invoke(cli.main, ['models', 'rollback', str(OLD), '--output', output])
  assert rolled.exit_code == 0, rolled.output
  listed = runner.invoke(cli.main, ['models', 'list', '--output', output, '--json'])
  served = [r for r in json.loads(listed.output) if r['served']]
  assert [(r['version'], r['pinned']) for r in served] == [(OLD, True)]
  refused = runner.invoke(cli.main, ['models', 'rollback', '42', '--output', output])
  assert refused.exit_code == 1 and 'not a complete pushed model' in refused.stderr


def test_models_config_never_creates_a_missing_folder_and_names_it(output, tmp_path):
  from fakedetect import cli, output_files, registry
  runner = CliRunner()
  missing = tmp_path / 'typo'
  result = runner.invoke(cli.main, ['models', 'config', '--output', str(missing)])
  assert result.exit_code == 1 and 'Traceback' not in result.output
  assert f'the folder {missing} does not exist' in result.stderr and 'Nothing was written' in (
      result.stderr)
  assert not missing.exists()
  empty = tmp_path / 'not_a_run'  # a folder, but no run's: no config written into it either
  empty.mkdir()
  result = runner.invoke(cli.main, ['models', 'config', '--output', str(empty)])
  assert result.exit_code == 1 and 'No pushed model under' in result.stderr
  assert list(empty.iterdir()) == []
  with pytest.raises(output_files.OutputError, match='does not exist'):
    registry.write_config(str(missing / names.SERVING_DIR))
  assert not missing.exists()
  result = runner.invoke(cli.main, ['models', 'config', '--output', output])
  assert result.exit_code == 0, result.output
  root = os.path.join(output, names.SERVING_DIR)
  assert sorted(os.listdir(root)) == ['fakedetect', 'models.config']  # no temporary file left


def test_models_list_prints_an_undefined_auc_as_n_a(output):
  from fakedetect import registry
  root = os.path.join(output, names.SERVING_DIR)
  new_dir = os.path.join(root, 'fakedetect', str(NEW))
  with open(os.path.join(output, names.SUMMARY_FILE), 'w') as f:  # an eval split of one class
    f.write(json.dumps({'run_id': 'one-class', 'pushed_model': new_dir,
                        'metrics': {'accuracy': 0.9, 'precision': 1.0, 'recall': 0.9,
                                    'auc': float('nan')}}))
  rows = registry.describe(root)
  assert rows[0]['metrics']['auc'] is None  # `models list --json` writes null, not NaN
  line = registry.render_rows(rows).splitlines()[1]
  assert line.split()[-2] == 'n/a' and 'nan' not in line  # the auc column, before the run
