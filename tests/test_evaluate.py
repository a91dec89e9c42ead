"""`fakedetect evaluate`: a pushed model scored on a labelled folder, through serving_default."""

import csv
import json

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
