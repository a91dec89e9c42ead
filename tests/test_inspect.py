"""`fakedetect inspect` on real demo runs: the table, the verdict, the plots and the report."""

import math
import os
import re

from click.testing import CliRunner
import pytest

from fakedetect.pipeline import names

PLOTS = ('roc.png', 'pr.png', 'calibration.png', 'confusion_matrix.png', 'slices.png',
         'robustness.png')


def test_inspect_latest_run_prints_table_verdict_and_writes_plots_and_report(runs):
  from fakedetect import cli  # pylint: disable=g-import-not-at-top
  output = runs['below_bars']['output']  # the latest run of the folder: a refusal
  result = CliRunner().invoke(cli.main, ['inspect', output])
  assert result.exit_code == 0, result.output
  text = result.output
  for expected in ('slice', 'overall', 'source=', 'format=', 'size_bucket=', 'accuracy',
                   'under perturbation', 'jpeg_q75', 'gaussian_blur', 'rescale_0.5',
                   'blessed: NO', 'below the bar 0.99 (short by', 'below the robustness bar',
                   'surest mistakes, '):  # a shuffled-label model: it errs
    assert expected in text, expected
  report_dir = os.path.join(output, names.REPORT_DIR)
  for name in PLOTS + ('index.html',):
    path = os.path.join(report_dir, name)
    assert os.path.getsize(path) > 1000, path
  page = open(os.path.join(report_dir, 'index.html'), encoding='utf-8').read()
  for name in PLOTS:
    assert f'src="{name}"' in page
  assert '<table>' in page and 'source=' in page and 'short by' in page


def test_inspect_a_given_evaluation_finds_its_own_verdict_and_robustness(runs, tmp_path):
  from fakedetect import report as report_lib  # pylint: disable=g-import-not-at-top
  good = runs['good']['summary']
  inspection, text, report = report_lib.inspect(good['evaluation'], str(tmp_path / 'r'))
  assert inspection.blessed and inspection.failures == []
  assert inspection.robustness and inspection.robustness['blessed']
  assert inspection.threshold == pytest.approx(good['threshold'])
  assert inspection.slices['overall']['accuracy'] == pytest.approx(good['metrics']['accuracy'])
  assert 'blessed: yes' in text
  assert os.path.isfile(report) and os.path.isfile(tmp_path / 'r' / 'roc.png')


def test_inspect_without_a_run_says_what_to_do(tmp_path):
  from fakedetect import cli  # pylint: disable=g-import-not-at-top
  result = CliRunner().invoke(cli.main, ['inspect', str(tmp_path)])
  assert result.exit_code == 1
  assert 'No run in' in result.output and 'fakedetect run' in result.output


def test_an_undefined_metric_reads_n_a_in_the_table_and_the_page(tmp_path):
  """A source slice holds one class: its AUC is undefined, never a measured 0.0000."""
  from fakedetect import report as report_lib  # pylint: disable=g-import-not-at-top
  nan = float('nan')
  inspection = report_lib.Inspection(
      evaluation='evaluation', output_dir=str(tmp_path), blessed=True, failures=[],
      slices={'overall': {'example_count': 30.0, 'accuracy': 0.9, 'precision': 0.8,
                          'recall': 0.75, 'f1': 0.77, 'auc': 0.95, 'pr_auc': 0.93},
              'source=camera_a': {'example_count': 15.0, 'accuracy': 1.0, 'precision': nan,
                                  'recall': nan, 'f1': nan, 'auc': nan, 'pr_auc': nan}})
  lines = report_lib.render(inspection).splitlines()
  overall = next(line for line in lines if line.startswith('overall')).split()
  camera = next(line for line in lines if line.startswith('source=camera_a')).split()
  assert overall[1:] == ['30', '0.9000', '0.8000', '0.7500', '0.7700', '0.9500', '0.9300']
  assert camera[1:] == ['15', '1.0000'] + ['n/a'] * 5
  page = open(report_lib.write_report(inspection, str(tmp_path), {}), encoding='utf-8').read()
  assert re.search(r'<td[^>]*>\s*n/a</td>', page) and 'nan' not in page.lower()


def test_tfma_auc_of_a_one_class_slice_is_undefined_not_zero(monkeypatch):
  """TFMA says AUC 0.0 on a source slice (one class each): read back as NaN, so n/a."""
  import types  # pylint: disable=g-import-not-at-top
  from fakedetect.components import evaluation_results  # pylint: disable=g-import-not-at-top
  by_slice = {(): {'mean_label': 0.5, 'auc': 0.9, 'pr_auc': 0.8},
              (('source', 'camera_a'),): {'mean_label': 0.0, 'auc': 0.0, 'pr_auc': 0.0},
              (('source', 'gan'),): {'mean_label': 1.0, 'auc': 0.0, 'pr_auc': 1.0}}
  result = types.SimpleNamespace(slicing_metrics=[
      (key, {'': {'': {name: {'doubleValue': v} for name, v in values.items()}}})
      for key, values in by_slice.items()])
  monkeypatch.setattr(evaluation_results, 'load_candidate_result', lambda uri: result)
  slices = evaluation_results.evaluation_metrics('evaluation')
  assert slices['overall']['auc'] == 0.9 and slices['overall']['pr_auc'] == 0.8
  assert math.isnan(slices['source=camera_a']['auc'])
  assert math.isnan(slices['source=camera_a']['pr_auc'])
  assert math.isnan(slices['source=gan']['auc']) and slices['source=gan']['pr_auc'] == 1.0
