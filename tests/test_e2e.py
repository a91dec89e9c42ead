"""End to end: the real pipeline, through the real CLI, on tiny demo data, as a user's would run.

  1. a good model: blessed under the default bars and pushed (tests/demo_runs.py's `good` run,
     shared with the gate, inspect, model card and notebook tests; a worse model refused after it
     is test_gate's);
  2. a run killed during the Trainer, then started again: it completes, reusing what finished,
     and the push directory never holds a half-written version.
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import time

import pytest

from fakedetect.pipeline import names
from tests import demo_runs

pytestmark = [pytest.mark.e2e, pytest.mark.pipeline]


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
def good(runs):
  record = runs['good']
  return dict(record, push_dir=os.path.join(record['output'], names.SERVING_DIR, 'fakedetect'))


def test_first_run_is_blessed_and_pushed_in_tf_serving_layout(good):
  summary = good['summary']
  assert summary['blessed'] is True, summary['not_blessed_because']
  pushed = summary['pushed_model']
  assert pushed and os.path.dirname(pushed) == good['push_dir']
  assert os.path.basename(pushed).isdigit()
  assert os.path.isfile(os.path.join(pushed, 'saved_model.pb'))
  _assert_complete_versions(good['push_dir'])
  # The console told the user what ran and how it ended.
  assert 'Trainer' in good['stderr']
  assert 'blessed: yes' in good['stdout']
  # And how training went while it waited: one line an epoch, with the validation and time left.
  epochs = re.findall(
      rf'^\[ *\d+s\] Trainer epoch (\d+)/{demo_runs.GOOD_EPOCHS}: loss \d.*val_loss \d.* left\)$',
      good['stderr'], re.M)
  assert epochs and epochs == [str(k) for k in range(1, len(epochs) + 1)], good['stderr']


def test_first_run_accounts_for_every_file_and_measures_the_model(good):
  summary = good['summary']
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


def test_pushed_model_scores_images_through_serving_default(good):
  import numpy as np
  import tensorflow as tf
  loaded = tf.saved_model.load(good['summary']['pushed_model'])
  real = sorted((pathlib.Path(good['data']) / 'real').rglob('img_*'))[:5]
  fake = sorted((pathlib.Path(good['data']) / 'fake').rglob('img_*'))[:5]
  images = tf.constant([p.read_bytes() for p in real + fake])
  out = loaded.signatures['serving_default'](image_bytes=images)
  probs = out['fake_probability'].numpy()
  assert probs.shape == (10,) and np.all((probs >= 0) & (probs <= 1))
  assert set(out['is_fake'].numpy().tolist()) <= {0, 1}


def test_run_killed_in_trainer_resumes_and_never_exposes_a_half_version(tmp_path_factory):
  data = demo_runs.workspace(tmp_path_factory) / 'data'
  output = tmp_path_factory.mktemp('killed') / 'out'
  push_dir = os.path.join(str(output), names.SERVING_DIR, 'fakedetect')
  # The model's quality is not under test here.
  args = demo_runs.FAKEDETECT + ['run', '--data', str(data), '--output', str(output),
                                 '--set', 'train.epochs=2'] + demo_runs.CHEAPEST_MODEL
  process = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                             start_new_session=True)
  deadline = time.monotonic() + 600
  try:
    for line in process.stderr:
      if 'Trainer epoch 1/' in line:  # inside training, whatever the machine's speed
        break
      assert time.monotonic() < deadline, 'the Trainer never started'
    else:
      raise AssertionError('the run ended before its first epoch')
  finally:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
  _assert_complete_versions(push_dir)

  result = subprocess.run(args, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, f'{result.stdout}\n{result.stderr}'
  summary = json.loads((output / names.SUMMARY_FILE).read_text())
  for node in ('ImageExampleGen', 'StatisticsGen', 'Transform'):
    assert summary['components'][node] == 'cached', summary['components']
  assert summary['components']['Trainer'] == 'complete'
  assert summary['components']['Evaluator'] == 'complete'
  _assert_complete_versions(push_dir)
