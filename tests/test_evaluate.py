"""`fakedetect evaluate`: a pushed model scored on a labelled folder, through serving_default."""

import csv
import dataclasses
import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from tests import serving_helpers as helpers
from tests.conftest import encode_image, random_image


@pytest.fixture(scope='module')
def cifake_like(tmp_path_factory):
  """CIFAKE's layout (train|test/REAL|FAKE), with a broken file and a stray one in test/."""
  root = tmp_path_factory.mktemp('cifake_like')
  for split, count in (('train', 2), ('test', 5)):
    for label, cls in enumerate(('REAL', 'FAKE')):
      (root / split / cls).mkdir(parents=True)
      for i in range(count):
        image = random_image(32, 32, seed=100 * label + 10 * (split == 'test') + i)
        (root / split / cls / f'{i}.jpg').write_bytes(encode_image(image, 'JPEG'))
  (root / 'test' / 'FAKE' / 'empty.jpg').write_bytes(b'')
  (root / 'test' / 'notes.txt').write_bytes(b'where these came from')
  return root


def test_reads_only_the_split_asked_and_says_why_a_file_was_not_scored(cifake_like):
  from fakedetect import evaluate
  labelled = evaluate.read_labelled(str(cifake_like), 'test')
  assert labelled.layout == 'cifake'
  assert sorted(row['path'] for row in labelled.rows) == sorted(
      f'test/{cls}/{i}.jpg' for cls in ('REAL', 'FAKE') for i in range(5))
  assert [row['label'] for row in labelled.rows].count(1) == 5
  reasons = dict(labelled.skipped)
  assert set(reasons) == {'test/FAKE/empty.jpg', 'test/notes.txt'}
  assert 'empty' in reasons['test/FAKE/empty.jpg']
  assert 'class folders' in reasons['test/notes.txt']
  assert labelled.files_found == 12
  assert len(evaluate.read_labelled(str(cifake_like)).rows) == 14  # every split


def test_metrics_match_serving_default_on_the_same_files(pushed, cifake_like):
  from fakedetect import evaluate
  from fakedetect.components import scoring
  labelled = evaluate.read_labelled(str(cifake_like), 'test')
  scorer = scoring.Scorer(pushed['model_dir'] + '/' + str(helpers.VERSIONS[1][0]))
  result = evaluate.evaluate(scorer, labelled, ['jpeg_q75'])
  probabilities, _ = scorer.score([row['image_bytes'] for row in labelled.rows])
  labels = np.array([row['label'] for row in labelled.rows])
  decisions = (probabilities >= scorer.threshold).astype(int)
  clean = result['perturbations']['none']
  assert clean['example_count'] == 10
  assert clean['accuracy'] == pytest.approx((decisions == labels).mean())
  assert clean['mean_fake_probability'] == pytest.approx(probabilities.mean(), rel=1e-5)
  assert list(result['perturbations']) == ['none', 'jpeg_q75']
  assert result['perturbations']['jpeg_q75']['example_count'] == 10
  assert set(result['by_source']) == {'real', 'fake'}
  assert sum(m['example_count'] for m in result['by_source'].values()) == 10
  assert len(result['skipped']) == 2


def test_cli_prints_the_table_writes_json_and_explains_user_mistakes(pushed, cifake_like, tmp_path):
  from fakedetect import cli
  runner = CliRunner()
  out = tmp_path / 'result.json'
  per_file = tmp_path / 'predictions.csv'
  result = runner.invoke(cli.main, ['evaluate', str(cifake_like), '--model', pushed['output'],
                                    '--split', 'test', '--perturb', 'jpeg_q75', '--json',
                                    str(out), '--predictions', str(per_file)])
  assert result.exit_code == 0, result.output
  assert '10 of 12 files scored (cifake layout' in result.stdout
  assert 'jpeg_q75' in result.stdout and 'test/FAKE/empty.jpg' in result.stdout
  saved = json.loads(out.read_text())
  assert saved['perturbations']['none']['example_count'] == 10
  assert 'per_file' not in saved

  # The per-file CSV: every file of the split once, scored ones agreeing with the totals.
  rows = list(csv.DictReader(per_file.open()))
  assert sorted(row['path'] for row in rows) == sorted(
      [f'test/{cls}/{i}.jpg' for cls in ('REAL', 'FAKE') for i in range(5)]
      + ['test/FAKE/empty.jpg', 'test/notes.txt'])
  scored = [row for row in rows if not row['error']]
  assert len(scored) == 10
  threshold = saved['threshold']
  for row in scored:
    assert row['label'] == ('fake' if '/FAKE/' in row['path'] else 'real')
    assert int(row['is_fake']) == (float(row['fake_probability']) >= threshold)
    assert int(row['correct']) == (int(row['is_fake']) == (row['label'] == 'fake'))
    assert 0.0 <= float(row['fake_probability_jpeg_q75']) <= 1.0
  assert np.mean([int(row['correct']) for row in scored]) == pytest.approx(
      saved['perturbations']['none']['accuracy'])
  assert 'empty' in next(row for row in rows if row['path'].endswith('empty.jpg'))['error']

  plain = tmp_path / 'plain'
  for cls in ('real', 'fake'):
    (plain / cls).mkdir(parents=True)
    (plain / cls / 'a.png').write_bytes(encode_image(random_image(16, 16, 1), 'PNG'))
  wrong_split = runner.invoke(cli.main, ['evaluate', str(plain), '--model', pushed['output'],
                                         '--split', 'test'])
  assert wrong_split.exit_code == 1
  assert 'no split folders; leave out --split' in wrong_split.stderr
  unknown = tmp_path / 'unknown'
  (unknown / 'cats').mkdir(parents=True)
  (unknown / 'cats' / 'a.png').write_bytes(encode_image(random_image(16, 16, 2), 'PNG'))
  no_layout = runner.invoke(cli.main, ['evaluate', str(unknown), '--model', pushed['output']])
  assert no_layout.exit_code == 1 and 'Traceback' not in no_layout.output
  assert 'real' in no_layout.stderr.lower()  # the message lists the layouts understood


def _trained_on(output, version_dir, hashes, run_id='run-that-trained'):
  """What a run records in <output>/metadata.sqlite, and the ExampleGen's train split holding
  examples with these content hashes: ExampleGen -> examples -> Transform -> transformed
  examples -> Trainer -> model -> Pusher -> PushedModel at version_dir."""
  import tensorflow as tf
  from ml_metadata import metadata_store
  from ml_metadata.proto import metadata_store_pb2 as pb
  from fakedetect.components import features
  examples_uri = os.path.join(output, 'tfx', 'ImageExampleGen', 'examples', '1')
  os.makedirs(os.path.join(examples_uri, 'Split-train'))
  with tf.io.TFRecordWriter(os.path.join(examples_uri, 'Split-train', 'data_tfrecord-00000.gz'),
                            options='GZIP') as writer:
    for value in hashes:
      example = tf.train.Example()
      example.features.feature[features.HASH_KEY].bytes_list.value.append(value.encode())
      writer.write(example.SerializeToString())
  connection = pb.ConnectionConfig()
  connection.sqlite.filename_uri = os.path.join(output, 'metadata.sqlite')
  connection.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
  store = metadata_store.MetadataStore(connection)
  artifact = lambda kind, uri: pb.Artifact(
      type_id=store.put_artifact_type(pb.ArtifactType(name=kind)), uri=uri)
  pushed = artifact('PushedModel', '/nowhere/pushed')
  pushed.custom_properties['pushed'].int_value = 1
  pushed.custom_properties['pushed_destination'].string_value = version_dir
  examples, transformed, model, pushed = store.put_artifacts([
      artifact('Examples', examples_uri), artifact('Examples', '/nowhere/transformed'),
      artifact('Model', '/nowhere/model'), pushed])
  trainer = pb.Execution(type_id=store.put_execution_type(pb.ExecutionType(name='Trainer')))
  trainer.custom_properties['train_args'].string_value = '{}'  # TFX's default: the train split
  gen, transform, trainer, pusher = store.put_executions(
      [pb.Execution(type_id=store.put_execution_type(pb.ExecutionType(name=name)))
       for name in ('ImageExampleGen', 'Transform')] + [trainer] + [
           pb.Execution(type_id=store.put_execution_type(pb.ExecutionType(name='Pusher')))])
  event = lambda artifact_id, execution_id, kind, key: pb.Event(
      artifact_id=artifact_id, execution_id=execution_id, type=kind,
      path=pb.Event.Path(steps=[pb.Event.Path.Step(key=key), pb.Event.Path.Step(index=0)]))
  store.put_events([
      event(examples, gen, pb.Event.OUTPUT, 'examples'),
      event(examples, transform, pb.Event.INPUT, 'examples'),
      event(transformed, transform, pb.Event.OUTPUT, 'transformed_examples'),
      event(transformed, trainer, pb.Event.INPUT, 'examples'),
      event(model, trainer, pb.Event.OUTPUT, 'model'),
      event(model, pusher, pb.Event.INPUT, 'model'),
      event(pushed, pusher, pb.Event.OUTPUT, 'pushed_model')])
  (run,) = store.put_contexts([pb.Context(
      type_id=store.put_context_type(pb.ContextType(name='pipeline_run')), name=run_id)])
  store.put_attributions_and_associations(
      [], [pb.Association(context_id=run, execution_id=trainer)])


def test_evaluate_warns_when_the_model_was_trained_on_the_images(pushed, cifake_like, tmp_path):
  from fakedetect import cli
  output = tmp_path / 'output'
  shutil.copytree(pushed['output'], output)
  version_dir = os.path.join(output, 'serving_model', 'fakedetect', str(helpers.VERSIONS[1][0]))
  seen = sorted(cifake_like.glob('test/*/[01].jpg'))  # 2 real and 2 fake test images
  _trained_on(str(output), version_dir,
              [hashlib.sha256(path.read_bytes()).hexdigest() for path in seen]
              + [hashlib.sha256(b'another image').hexdigest()])
  runner = CliRunner()
  out = tmp_path / 'result.json'
  result = runner.invoke(cli.main, ['evaluate', str(cifake_like), '--model', str(output),
                                    '--split', 'test', '--json', str(out)])
  assert result.exit_code == 0, result.output
  assert result.stdout.startswith("warning: 4 of 10 images were in the model's training split: "
                                  'these figures overstate accuracy.')
  assert json.loads(out.read_text())['seen_in_training'] == {
      'count': 4, 'of': 10, 'splits': ['train'], 'run_id': 'run-that-trained'}

  # A model away from its run's records: no warning, and the JSON says it was not checked.
  result = runner.invoke(cli.main, ['evaluate', str(cifake_like), '--model', pushed['output'],
                                    '--split', 'test', '--json', str(out)])
  assert result.exit_code == 0, result.output
  assert 'warning' not in result.stdout
  unchecked = json.loads(out.read_text())['seen_in_training']
  assert unchecked['count'] is None and 'no records' in unchecked['note']


def test_an_undefined_auc_is_printed_n_a_and_written_null(pushed, cifake_like, tmp_path):
  from fakedetect import cli, evaluate
  from fakedetect.components import scoring
  labelled = evaluate.read_labelled(str(cifake_like), 'test')
  reals = dataclasses.replace(labelled, rows=[r for r in labelled.rows if r['label'] == 0])
  result = evaluate.evaluate(scoring.Scorer(pushed['model_dir'] + '/' +
                                            str(helpers.VERSIONS[1][0])), reals)
  assert np.isnan(result['perturbations']['none']['auc'])  # one class: AUC is undefined
  header, row = evaluate.format_result(result).splitlines()[2:4]
  assert header.split()[-1] == 'auc' and row.split()[-1] == 'n/a'
  assert 'nan' not in evaluate.format_result(result) and '0.0000' not in row.split()[-1]
  out = tmp_path / 'result.json'
  evaluate.write_json(str(out), result)
  assert json.loads(out.read_text())['perturbations']['none']['auc'] is None  # not NaN: not JSON

  # A --json or --predictions file that cannot be written is refused before anything is scored.
  for flag in ('--json', '--predictions'):
    refused = CliRunner().invoke(cli.main, ['evaluate', str(cifake_like), '--model',
                                            pushed['output'], flag,
                                            str(tmp_path / 'missing' / 'out')])
    assert refused.exit_code == 1 and 'Traceback' not in refused.output
    assert f'the folder {tmp_path / "missing"} does not exist' in refused.stderr
    assert 'perturbations' not in refused.stderr  # the progress bar of the scoring
  image = str(cifake_like / 'test' / 'REAL' / '0.jpg')
  refused = CliRunner().invoke(cli.main, ['evaluate', str(cifake_like), '--model',
                                          pushed['output'], '--json', image])
  assert refused.exit_code == 1 and 'one of the inputs' in refused.stderr
