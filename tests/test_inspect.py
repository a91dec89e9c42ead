"""`fakedetect inspect` on real demo runs: the table, the verdict, the plots and the report."""

import os

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
