"""benchmarks/train_speed.py: its FLOP count, its table, and one tiny run end to end (a few
hundred synthetic CIFAKE-like images through the real Transform, a process per row)."""

import importlib.util
import json
import os

import pytest

from tests import conftest

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks',
                     'train_speed.py')
_SPEC = importlib.util.spec_from_file_location('train_speed_benchmark', _PATH)
train_speed = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(train_speed)


def test_training_flops_are_six_per_multiply_add_of_every_conv_and_dense_layer():
  from fakedetect.components import model as model_lib
  from fakedetect.components import views
  model = model_lib.build(views.View(views.GLOBAL, 32), width=16, depth=2)
  # Block 1 at 32x32: 3 -> 16 -> 16 channels, 3x3; block 2 at 16x16: 16 -> 32 -> 32; head 32 -> 1.
  macs = 32 * 32 * 9 * (3 * 16 + 16 * 16) + 16 * 16 * 9 * (16 * 32 + 32 * 32) + 32
  assert train_speed.training_flops(model) == 6 * macs


def _lines(text: str):
  """The table's data rows, split on runs of two or more spaces."""
  import re
  rows = text.strip().splitlines()[2:]
  return {cells[0]: cells for cells in (re.split(r'\s{2,}', row.strip()) for row in rows)}


def test_table_shows_medians_ratios_to_today_and_the_best_matmul_of_the_rows_dtype():
  results = {
      'today': [{'images_per_second': 100, 'mean_images_per_second': 80, 'gflops': 20,
                 'onednn': False},
                {'images_per_second': 120, 'mean_images_per_second': 100, 'gflops': 24,
                 'onednn': False}],
      'in-memory': [{'images_per_second': 210, 'mean_images_per_second': 180, 'gflops': 45,
                     'cpu_ms_per_image': 4.5, 'first_pass_seconds': 7.0, 'onednn': False}],
      'input-today': [{'images_per_second': 1000, 'onednn': False}],
      'input-memory': [{'images_per_second': 3000, 'onednn': False}],
      'matmul-f32': [{'gflops': 100, 'onednn': False}, {'gflops': 80, 'onednn': False}],
      'matmul-f32-onednn': [{'gflops': 150, 'onednn': True}],
      'model-alone': [{'images_per_second': 500, 'gflops': 120, 'onednn': True,
                       'precision': 'mixed_bfloat16'}],
      'matmul-bf16': [{'gflops': 600, 'onednn': True}],
  }
  rows = _lines(train_speed.table(results))
  assert list(rows) == list(results)
  assert rows['today'][2:6] == ['110', '1.00', '90', '1.00']
  # in-memory: 210 images/s = 1.91x today's median, 180 on the mean of its passes = 2.00x
  # today's; 45 GFLOP/s = 30 % of the best float32 matmul (150).
  assert rows['in-memory'][2:] == ['210', '1.91', '180', '2.00', '4.50', '45.0', '30', '7.0',
                                   'off']
  assert rows['input-memory'][3] == '3.00'  # input rows against today's input
  assert rows['matmul-f32'][-4:-2] == ['90.0', '60'] and rows['matmul-f32-onednn'][-1] == 'on'
  assert rows['model-alone'][-4:-2] == ['120.0', '20']  # a bfloat16 row against the bf16 matmul


def test_arguments_refuse_unknown_rows_and_empty_runs(capsys):
  with pytest.raises(SystemExit):
    train_speed.parse_args(['--rows', 'today', 'fastest'])
  assert 'unknown row(s) fastest; known: today, streamed, in-memory' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    train_speed.parse_args(['--images', '1'])
  assert '--images needs at least 2' in capsys.readouterr().err
  assert train_speed.parse_args([]).rows == list(train_speed.ROWS)


@pytest.mark.pipeline  # builds the Transform's examples with a real pipeline: not in test-fast
def test_a_tiny_run_prints_a_row_per_measurement_with_positive_figures(tmp_path, capsys):
  data = tmp_path / 'cifake'
  for label, cls in enumerate(('REAL', 'FAKE')):
    (data / 'train' / cls).mkdir(parents=True)
    for i in range(100):
      (data / 'train' / cls / f'{i:03d}.jpg').write_bytes(conftest.encode_image(
          conftest.random_image(32, 32, seed=1000 * label + i), 'JPEG', quality=75))
  rows = ['today', 'input-memory', 'onednn', 'matmul-f32']  # one of each kind: a process each
  record = tmp_path / 'results.json'
  train_speed.main(['--data', str(data), '--workdir', str(tmp_path / 'work'), '--images', '200',
                    '--repeats', '1', '--passes', '1', '--rows', *rows, '--json', str(record)])
  printed = capsys.readouterr().out
  table = _lines(printed.split('==\n', 1)[1].split('\nbfloat16')[0])
  assert list(table) == rows and all(len(cells) == 11 for cells in table.values())
  assert table['today'][3] == '1.00' and table['onednn'][-1] == 'on'
  results = json.loads(record.read_text())
  for row in rows[:-1]:
    (found,) = results[row]
    assert found['images_per_second'] > 0 and found['cpu_ms_per_image'] > 0
    assert found['mean_images_per_second'] > 0
    assert found['images_per_pass'] == 200
  assert all(results[row][0]['gflops'] > 0 for row in rows if row != 'input-memory')
  assert results['today'][0]['training_flops_per_image'] == pytest.approx(231_801_600)
