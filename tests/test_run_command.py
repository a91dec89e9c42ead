"""`fakedetect run` under misuse (issue #16): one run per output folder, an output outside the
data and writable, `--set output_dir` that cannot contradict `--output`, and the epoch lines a
user sees during the Trainer and the Tuner.

No pipeline runs here: the CLI tests replace `runner.run` by a stand-in that records the call and
stops the command, so they check everything the command does before and around the pipeline.
"""

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from fakedetect import cli
from fakedetect.components import progress
from fakedetect.pipeline import output_folder

# Holds the lock of the folder argv[1] as a run does, says so, then sleeps argv[2] s; with argv[3]
# it first forks a child that shares the lock, as a worker forked by a run would.
HOLDER = ('import os, sys, time\n'
          'from fakedetect.pipeline import output_folder\n'
          'with output_folder.claim(sys.argv[1]):\n'
          '  if sys.argv[3:] and os.fork() == 0:\n'
          '    time.sleep(float(sys.argv[2])); os._exit(0)\n'
          '  print("held", flush=True)\n'
          '  time.sleep(float(sys.argv[2]))\n')


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  from fakedetect import demo_data  # pylint: disable=g-import-not-at-top
  folder = tmp_path_factory.mktemp('run_command') / 'images'
  demo_data.generate(str(folder), per_class=3, broken=False)
  return folder


@pytest.fixture
def pipeline_calls(monkeypatch):
  """The configs `fakedetect run` would have run; the command stops right after the call."""
  from fakedetect.pipeline import runner  # pylint: disable=g-import-not-at-top
  calls = []

  def stand_in(config, **kwargs):
    calls.append(config)
    raise RuntimeError('stopped by the test')

  monkeypatch.setattr(runner, 'run', stand_in)
  return calls


def _run(*args):
  return CliRunner().invoke(cli.main, ['run', *map(str, args)])


def _holder(folder, seconds, *fork):
  """A second process that holds `folder` (started, and holding, when this returns)."""
  process = subprocess.Popen([sys.executable, '-c', HOLDER, str(folder), str(seconds), *fork],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
  assert process.stdout.readline().strip() == 'held'
  return process


def test_a_second_run_on_the_same_output_stops_and_names_the_first(data, tmp_path,
                                                                  pipeline_calls):
  out = tmp_path / 'out'
  holder = _holder(out, 60)
  try:
    result = _run('--data', data, '--output', out)
  finally:
    holder.kill()
    holder.wait()
  assert result.exit_code == 1, result.output
  assert 'Another fakedetect run is using the output folder' in result.stderr
  assert f'pid {holder.pid} on {socket.gethostname()}, started ' in result.stderr
  assert 'Traceback' not in result.stderr
  assert pipeline_calls == []  # nothing ran, and the first run's folder got no log of this one
  assert not (out / 'logs').exists()


def test_a_killed_runs_lock_is_taken_over_with_a_note(data, tmp_path, pipeline_calls):
  out = tmp_path / 'out'
  holder = _holder(out, 60)
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  result = _run('--data', data, '--output', out)
  assert f'Took over the output folder from a run that did not finish (pid {holder.pid} ' in (
      result.stderr)
  assert len(pipeline_calls) == 1 and 'stopped by the test' in result.stderr
  # The run ended (failed, but not killed): it leaves nothing for the next one to report.
  with output_folder.claim(str(out)) as note:
    assert note is None


def test_a_killed_run_whose_child_still_holds_the_folder_is_not_taken_over(data, tmp_path,
                                                                        pipeline_calls):
  """The kernel keeps the lock while a process the run forked lives: it may still write."""
  out = tmp_path / 'out'
  holder = _holder(out, 60, 'fork')
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  try:
    result = _run('--data', data, '--output', out)
  finally:
    os.killpg(holder.pid, signal.SIGKILL)  # the child, in the holder's session
  assert result.exit_code == 1 and pipeline_calls == []
  assert (f'pid {holder.pid} on {socket.gethostname()}, started ' in result.stderr and
          f'that process has ended but a process it started still holds {out}/run.lock' in
          result.stderr), result.stderr


def test_wait_waits_for_the_other_run_to_end(data, tmp_path, pipeline_calls):
  out = tmp_path / 'out'
  holder = _holder(out, 3)
  started = time.monotonic()
  result = _run('--data', data, '--output', out, '--wait')
  holder.wait()
  assert f'Waiting for the run using {out}: pid {holder.pid}' in result.stderr
  assert time.monotonic() - started > 1 and len(pipeline_calls) == 1
  assert 'Took over' not in result.stderr  # the other run ended cleanly


@pytest.mark.parametrize('where', ['data/outputs', 'data', 'data/real', 'default in data'])
def test_output_inside_the_data_is_refused(data, monkeypatch, pipeline_calls, where):
  if where == 'default in data':  # `fakedetect run --data .` with the default --output outputs
    monkeypatch.chdir(data)
    result = _run('--data', '.')
  else:
    output = os.path.join(str(data), where.partition('/')[2])
    result = _run('--data', data, '--output', output)
  assert result.exit_code == 1
  assert 'inside --data' in result.stderr or 'is --data' in result.stderr, result.stderr
  assert f'--output {data}-outputs' in result.stderr  # what to do instead
  assert pipeline_calls == []
  assert sorted(os.listdir(data)) == ['.fakedetect_demo.json', 'fake', 'real']  # none written


def test_data_inside_the_output_only_where_the_run_writes_is_refused(data, tmp_path,
                                                                    pipeline_calls):
  out = tmp_path / 'out'
  (out / 'serving_model').mkdir(parents=True)
  result = _run('--data', out / 'serving_model', '--output', out)
  assert result.exit_code == 1
  assert f'holds {out}/serving_model, which the run writes' in result.stderr
  # Images the user keeps in the output folder, where no run writes, are fine.
  os.symlink(data, out / 'my_images')
  result = _run('--data', out / 'my_images', '--output', out)
  assert len(pipeline_calls) == 1 and 'stopped by the test' in result.stderr


def test_set_output_dir_cannot_contradict_output(data, tmp_path, pipeline_calls):
  out, other = tmp_path / 'out', tmp_path / 'other'
  result = _run('--data', data, '--output', out, '--set', f'output_dir={other}')
  assert result.exit_code == 1
  assert (f'--set output_dir={other} contradicts --output {out}: give the folder once, with '
          '--output.') in result.stderr
  assert not out.exists() and not other.exists() and pipeline_calls == []
  # Saying the same folder twice is no contradiction.
  _run('--data', data, '--output', out, '--set', f'output_dir={out}/.')
  assert [config.output_dir for config in pipeline_calls] == [f'{out}/.']
  result = CliRunner().invoke(cli.main, [
      'compile', '--pipeline-root', 'gs://b/root', '--set', 'output_dir=gs://b/other',
      '--output', str(tmp_path / 'p.json')])
  assert result.exit_code == 1
  assert 'contradicts --pipeline-root gs://b/root' in result.stderr
  assert not (tmp_path / 'p.json').exists()
  # The other folders a command names by option: --data, and compile's --pipeline-root.
  result = _run('--data', data, '--output', out, '--set', f'data.data_dir={other}')
  assert f'--set data.data_dir={other} contradicts --data {data}' in result.stderr
  result = CliRunner().invoke(cli.main, [
      'compile', '--pipeline-root', 'gs://b/root', '--set', 'runner.pipeline_root=gs://b/x',
      '--output', str(tmp_path / 'p.json')])
  assert result.exit_code == 1 and ('--set runner.pipeline_root=gs://b/x contradicts '
                                    '--pipeline-root gs://b/root') in result.stderr
  assert len(pipeline_calls) == 1 and not (tmp_path / 'p.json').exists()


@pytest.mark.parametrize('kind', ['parent is a file', 'read-only folder'])
def test_unwritable_output_is_a_message_not_a_traceback(data, tmp_path, pipeline_calls, kind):
  if kind == 'parent is a file':
    (tmp_path / 'file').write_text('x')
    out = tmp_path / 'file' / 'out'
  else:
    if os.geteuid() == 0:
      pytest.skip('root writes into a mode 0o555 folder; the file-parent case covers this')
    out = tmp_path / 'ro'
    out.mkdir(mode=0o555)
  result = _run('--data', data, '--output', out)
  assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # not a traceback
  assert f'Cannot write into the output folder {out}: ' in result.stderr
  assert 'Give --output a folder you can write' in result.stderr
  assert pipeline_calls == []


def _tiny_model():
  """A real Keras model and 32 random 8x8 images (4 batches) to fit it on."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  inputs = keras.Input((8, 8, 3), name='image')
  model = keras.Model(inputs, keras.layers.Dense(1, activation='sigmoid')(
      keras.layers.Flatten()(inputs)))
  model.compile(optimizer='adam', loss='binary_crossentropy',
                metrics=[keras.metrics.BinaryAccuracy(name='accuracy'),
                         keras.metrics.AUC(name='auc')])
  x = np.random.default_rng(0).random((32, 8, 8, 3)).astype('float32')
  y = (x.mean(axis=(1, 2, 3)) > 0.5).astype('float32')
  dataset = tf.data.Dataset.from_tensor_slices(({'image': x}, y)).batch(8)
  return model, dataset


EPOCH_LINE = (r'^{what} epoch {k}/{n}: loss \d\.\d{{4}}, accuracy \d\.\d{{4}}, '
              r'val_loss \d\.\d{{4}}, val_accuracy \d\.\d{{4}}, val_auc \d\.\d{{4}} '
              r'\(\d+s elapsed, up to \d+s left\)$')


def test_trainer_callback_writes_one_line_per_epoch_to_the_progress_file(tmp_path, monkeypatch,
                                                                         caplog):
  from fakedetect.components import train  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'progress.log'
  monkeypatch.setenv(progress.ENV, str(path))
  model, dataset = _tiny_model()
  model.fit(dataset, validation_data=dataset, epochs=3, verbose=0,
            callbacks=[train.EpochProgress('Trainer', 3, 'val_auc')])
  lines = path.read_text().splitlines()
  assert len(lines) == 3, lines  # per epoch, never per batch (4 batches an epoch)
  for k, line in enumerate(lines, 1):
    assert re.match(EPOCH_LINE.format(what='Trainer', k=k, n=3), line), line
  assert lines[-1].endswith('up to 0s left)')
  # Without the variable (Kubeflow, a notebook) the lines go to the log.
  monkeypatch.delenv(progress.ENV)
  with caplog.at_level('INFO'):
    model.fit(dataset, validation_data=dataset, epochs=1, verbose=0,
              callbacks=[train.EpochProgress('Trainer', 1, 'val_auc')])
  assert re.search(EPOCH_LINE.format(what='Trainer', k=1, n=1)[1:], caplog.text, re.M)
  assert len(path.read_text().splitlines()) == 3


def test_tuner_trials_are_numbered_in_the_epoch_lines(tmp_path, monkeypatch):
  import keras_tuner  # pylint: disable=g-import-not-at-top
  from fakedetect.components import train  # pylint: disable=g-import-not-at-top
  from fakedetect.components import views  # pylint: disable=g-import-not-at-top
  from fakedetect.components import model as model_lib  # pylint: disable=g-import-not-at-top
  from fakedetect.pipeline import config as config_lib  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'progress.log'
  monkeypatch.setenv(progress.ENV, str(path))
  settings = config_lib.TrainConfig(early_stopping_metric='val_auc')
  hypermodel = train._HyperModel(views.View('global', 8), model_lib.Architecture(), settings,
                                 max_trials=2)
  for _ in range(2):  # keras-tuner fits the hypermodel once per trial
    model, dataset = _tiny_model()
    hypermodel.fit(keras_tuner.HyperParameters(), model, dataset, validation_data=dataset,
                   epochs=2, verbose=0, callbacks=[])
  lines = path.read_text().splitlines()
  assert [line.split(':')[0] for line in lines] == [
      'Tuner trial 1/2 epoch 1/2', 'Tuner trial 1/2 epoch 2/2',
      'Tuner trial 2/2 epoch 1/2', 'Tuner trial 2/2 epoch 2/2']
  assert re.match(EPOCH_LINE.format(what='Tuner trial 2/2', k=2, n=2), lines[-1]), lines[-1]


def test_the_run_relays_epoch_lines_from_another_process_to_the_console(tmp_path, monkeypatch):
  """The Trainer may run in a Beam worker or another process: what it appends to the progress
  file reaches the console, stamped like the component lines, and the file goes away."""
  from fakedetect.pipeline import runner  # pylint: disable=g-import-not-at-top
  console = io.StringIO()
  monkeypatch.setattr(runner._ProgressNodeDoFn, 'console', console)
  emit = ('from fakedetect.components import progress\n'
          'progress.emit("Trainer epoch 1/2: loss 0.6931")\n'
          'progress.emit("Trainer epoch 2/2: loss 0.5000")\n')
  with runner.relayed_progress(str(tmp_path), poll_seconds=0.05) as path:
    subprocess.run([sys.executable, '-c', emit], check=True)
  assert re.findall(r'^\[ +\d+s\] (Trainer epoch .*)$', console.getvalue(), re.M) == [
      'Trainer epoch 1/2: loss 0.6931', 'Trainer epoch 2/2: loss 0.5000']
  assert not os.path.exists(path) and os.listdir(tmp_path) == []
  assert progress.ENV not in os.environ


def test_class_folder_settings_reach_the_layout_check_and_the_auto_sample(data, tmp_path,
                                                                           pipeline_calls):
  """`--set data.fake_dirs=...` names folders no built-in name covers: the command's own layout
  check and auto's sample read the folder with them, so the pipeline gets to run."""
  import shutil  # pylint: disable=g-import-not-at-top
  own = tmp_path / 'own_names'
  shutil.copytree(data / 'real', own / 'camera')
  shutil.copytree(data / 'fake', own / 'gan_out')
  result = _run('--data', own, '--output', tmp_path / 'out')
  assert result.exit_code == 1 and 'Unrecognised layout' in result.stderr
  result = _run('--data', own, '--output', tmp_path / 'out', '--set', 'data.fake_dirs=gan_out',
                '--set', 'data.real_dirs=camera')
  assert len(pipeline_calls) == 1 and 'stopped by the test' in result.stderr, result.stderr
  assert pipeline_calls[0].data.fake_dirs == ['gan_out']
  assert 'auto settings for a folder of photos (median' in result.stderr  # auto read the sample
