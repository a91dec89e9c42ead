"""End to end: the real pipeline, through the real CLI, on tiny demo data.

One output folder lives through three runs, as a user's would:
  1. a good model: blessed and pushed;
  2. a deliberately worse model (shuffled labels): refused, nothing new pushed;
  3. a run killed during the Trainer, then started again: it completes, reusing what finished,
     and the push directory never holds a half-written version.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from fakedetect.pipeline import names
from tests import demo_runs

pytestmark = [pytest.mark.e2e, pytest.mark.pipeline]

FAKEDETECT = [sys.executable, '-m', 'fakedetect']
# Small enough for CI, large enough that a real CNN clears the default bars on the demo task.
PER_CLASS = 200
COMMON = ['--set', 'train.epochs=20', '--set', 'train.early_stopping_patience=8']


def _run(data, output, *extra, check=True):
  result = subprocess.run(FAKEDETECT + ['run', '--data', str(data), '--output', str(output)] +
                          COMMON + list(extra), capture_output=True, text=True, timeout=900)
  if check and result.returncode != 0:
    raise AssertionError(f'run failed ({result.returncode}):\n{result.stdout}\n{result.stderr}')
  return result


def _versions(push_dir):
  if not os.path.isdir(push_dir):
    return set()
  return {name for name in os.listdir(push_dir) if name.isdigit()}


def _assert_complete_versions(push_dir):
  for version in _versions(push_dir):
    path = os.path.join(push_dir, version)
    assert os.path.isfile(os.path.join(path, 'saved_model.pb')), f'half-written version {path}'
    assert os.path.isdir(os.path.join(path, 'variables')), f'no variables in {path}'


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
  root = tmp_path_factory.mktemp('e2e')
  data, output = root / 'data', root / 'out'
  demo_runs.write_demo_data(data, PER_CLASS)
  first = _run(data, output)
  summary = json.loads((output / names.SUMMARY_FILE).read_text())
  return {'data': data, 'output': output, 'first': first, 'summary': summary,
          'push_dir': os.path.join(str(output), names.SERVING_DIR, 'fakedetect')}


def test_first_run_is_blessed_and_pushed_in_tf_serving_layout(workspace):
  summary = workspace['summary']
  assert summary['blessed'] is True, summary['not_blessed_because']
  pushed = summary['pushed_model']
  assert pushed and os.path.dirname(pushed) == workspace['push_dir']
  assert os.path.basename(pushed).isdigit()
  assert os.path.isfile(os.path.join(pushed, 'saved_model.pb'))
  _assert_complete_versions(workspace['push_dir'])
  # The console told the user what ran and how it ended.
  assert 'Trainer' in workspace['first'].stderr
  assert 'blessed: yes' in workspace['first'].stdout
  # And how training went while it waited: one line an epoch, with the validation and time left.
  epochs = re.findall(r'^\[ *\d+s\] Trainer epoch (\d+)/20: loss \d.*val_loss \d.* left\)$',
                      workspace['first'].stderr, re.M)
  assert epochs and epochs == [str(k) for k in range(1, len(epochs) + 1)], workspace['first'].stderr


def test_first_run_accounts_for_every_file_and_measures_the_model(workspace):
  summary = workspace['summary']
  assert summary['anomalies'] == {}
  assert summary['ingested'] + len(summary['quarantined']) == summary['files_found']
  reasons = {os.path.basename(q['path']): q['reason'] for q in summary['quarantined']}
  assert any(name.startswith('broken') for name in reasons), reasons
  assert sum(sum(c.values()) for c in summary['counts'].values()) == summary['ingested']
  metrics = summary['metrics']
  for name in ('accuracy', 'precision', 'recall', 'f1', 'auc', 'example_count'):
    assert name in metrics, metrics
  assert metrics['precision'] >= 0.8 and metrics['recall'] >= 0.8
  assert metrics['example_count'] == sum(summary['counts']['test'].values())
  assert any(key.startswith('source=') for key in summary['metrics_by_slice'])
  assert 0.0 < summary['threshold'] < 1.0


def test_pushed_model_scores_images_through_serving_default(workspace):
  import numpy as np
  import tensorflow as tf
  loaded = tf.saved_model.load(workspace['summary']['pushed_model'])
  data = workspace['data']
  real = sorted((data / 'real').rglob('img_*'))[:5]
  fake = sorted((data / 'fake').rglob('img_*'))[:5]
  images = tf.constant([p.read_bytes() for p in real + fake])
  out = loaded.signatures['serving_default'](image_bytes=images)
  probs = out['fake_probability'].numpy()
  assert probs.shape == (10,) and np.all((probs >= 0) & (probs <= 1))
  assert set(out['is_fake'].numpy().tolist()) <= {0, 1}


def test_worse_model_is_refused_and_nothing_new_is_pushed(workspace):
  before = _versions(workspace['push_dir'])
  result = _run(workspace['data'], workspace['output'], '--set', 'train.shuffle_labels=true')
  summary = json.loads((workspace['output'] / names.SUMMARY_FILE).read_text())
  assert summary['blessed'] is False
  assert summary['not_blessed_because'], 'a refusal must say why'
  assert summary['pushed_model'] is None
  assert _versions(workspace['push_dir']) == before
  # Nothing upstream of the Trainer changed, so it was all reused.
  for node in ('ImageExampleGen', 'StatisticsGen', 'Transform'):
    assert summary['components'][node] == 'cached', summary['components']
  assert 'blessed: NO' in result.stdout


def test_run_killed_in_trainer_resumes_and_never_exposes_a_half_version(workspace):
  args = FAKEDETECT + ['run', '--data', str(workspace['data']), '--output',
                       str(workspace['output'])] + COMMON + ['--set', 'train.seed=7']
  process = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                             start_new_session=True)
  deadline = time.monotonic() + 600
  try:
    for line in process.stderr:
      if 'Trainer ...' in line:
        time.sleep(8)  # well inside training
        break
      assert time.monotonic() < deadline, 'the Trainer never started'
  finally:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
  _assert_complete_versions(workspace['push_dir'])

  _run(workspace['data'], workspace['output'], '--set', 'train.seed=7')
  summary = json.loads((workspace['output'] / names.SUMMARY_FILE).read_text())
  for node in ('ImageExampleGen', 'StatisticsGen', 'Transform'):
    assert summary['components'][node] == 'cached', summary['components']
  assert summary['components']['Trainer'] == 'complete'
  assert summary['components']['Evaluator'] == 'complete'
  _assert_complete_versions(workspace['push_dir'])
