"""benchmarks/resolution.py without a pipeline run: its arguments, the CIFAKE subset it trains on
(placeholder files; layouts never decode) and the table it prints from run summaries."""

import importlib.util
import os
import sys

import pytest

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks',
                     'resolution.py')
_SPEC = importlib.util.spec_from_file_location('resolution_benchmark', _PATH)
resolution = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(resolution)


def _summary(view, accuracy, pushed=True):
  return {'model_input': {'view': view, 'image_size': 64, 'crop_size': 32, 'native_size': 128,
                          'backbone': 'resnet', 'filter': 'npr', 'weights': 'none'},
          'metrics': {'accuracy': accuracy, 'auc': 0.875, 'example_count': 300},
          'robustness': {'none': {'accuracy': 0.8125}},
          'component_seconds': {'Trainer': 120.4, 'Transform': 30.0},
          'wall_seconds': 400.2, 'train_images_per_second': 55.55, 'epochs_run': 3,
          'pushed_model': '/x/1' if pushed else None}


def test_arguments_refuse_unknown_configs_and_missing_folders(tmp_path, capsys):
  with pytest.raises(SystemExit):
    resolution.parse_args(['--data', str(tmp_path), '--configs', 'global-32-cnn', 'nope'])
  known = ', '.join(resolution.CONFIGS)
  assert f'unknown configuration(s) nope; known: {known}' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    resolution.parse_args(['--data', str(tmp_path), '--also', str(tmp_path / 'missing')])
  assert f'--also {tmp_path / "missing"}: not a folder' in capsys.readouterr().err
  args = resolution.parse_args(['--data', str(tmp_path), '--epochs', '2'])
  assert args.configs == list(resolution.CONFIGS) and args.epochs == 2 and args.also == []


def test_subset_keeps_the_cifake_layout_with_n_per_class_and_split(tmp_path):
  data = tmp_path / 'cifake'
  for split, count in (('train', 10), ('test', 4)):
    for cls in ('REAL', 'FAKE'):
      (data / split / cls).mkdir(parents=True)
      for i in range(count):
        (data / split / cls / f'{i:02d}.png').write_bytes(b'x')
  target = resolution.subset(str(data), str(tmp_path / 'work'), 3)
  for split in ('train', 'test'):
    for cls in ('REAL', 'FAKE'):
      names = sorted(os.listdir(os.path.join(target, split, cls)))
      assert len(names) == 3
      # The file itself (a hard link), not a link leaving the folder, which ingestion skips.
      assert all(os.path.samefile(os.path.join(target, split, cls, n), data / split / cls / n)
                 and not os.path.islink(os.path.join(target, split, cls, n)) for n in names)
  assert sorted(os.listdir(os.path.join(target, 'train', 'REAL'))) == ['00.png', '03.png',
                                                                      '06.png']  # spread out


def test_row_and_table_from_summaries():
  rows = [resolution.row('local-64', _summary('local', 0.75)),
          resolution.row('both-64', dict(_summary('both', 0.5, pushed=False))),
          {'config': 'broken', 'error': 'fakedetect run failed; see x.log'}]
  rows[0]['also'] = {'faces': {'accuracy': 0.625, 'auc': 0.7}}
  assert rows[0]['view'] == 'local 32/128' and rows[1]['view'] == 'both 64+32/128'
  assert rows[0]['trainer_seconds'] == 120.4 and rows[0]['accuracy_at_threshold'] == 0.8125
  lines = resolution.table(rows, ['faces']).splitlines()
  assert lines[0].split() == ['config', 'view', 'backbone', 'filter', 'test', 'acc', 'acc@thr',
                              'AUC', 'Trainer', 's', 'pipeline', 's', 'img/s', 'faces', 'acc',
                              'faces', 'AUC']
  assert lines[2].split() == ['local-64', 'local', '32/128', 'resnet', 'npr', '0.750', '0.812',
                              '0.875', '120', '400', '55.5', '0.625', '0.700']
  assert lines[3].split()[-4:] == ['55.5', 'not', 'pushed', '-']  # no model to score
  assert lines[4].split() == ['broken', 'FAILED'] + ['-'] * 10
  assert lines[5] == 'broken: fakedetect run failed; see x.log'


def test_short_names_number_folders_of_the_same_name():
  assert resolution.short_names(['/a/test', '/b/test/', '/c/faces']) == ['test#1', 'test#2',
                                                                          'faces']


def test_a_failed_command_says_its_last_line_and_a_slow_one_says_how_far(tmp_path, monkeypatch,
                                                                         capsys):
  log = str(tmp_path / 'run.log')
  with pytest.raises(RuntimeError, match=r'^x: fakedetect run failed: The pipeline failed: bad '
                     r'data \(all of its output: .*run\.log\)$'):
    resolution._stream([sys.executable, '-c', 'print("start"); print("The pipeline failed: bad '
                        'data"); raise SystemExit(1)'], log, 'x: fakedetect run', 0.0)
  monkeypatch.setattr(resolution, 'HEARTBEAT_SECONDS', 0.2)
  resolution._stream([sys.executable, '-c', 'import time; print("[ 3s] Trainer ...", '
                      'flush=True); time.sleep(1.5)'], log, 'y', 0.0)
  assert ': [ 3s] Trainer ...' in capsys.readouterr().out
