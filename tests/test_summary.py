"""The run summary with an undefined metric: AUC of a split with one class (#16 item 12)."""

import json
import math

from fakedetect import summary


def _summary(**metrics):
  return {'data_dir': '/d', 'layout': 'plain', 'files_found': 4, 'ingested': 4, 'quarantined': [],
          'counts': {'test': {'real': 4}}, 'anomalies': {}, 'eval_split': 'test',
          'metrics': {'example_count': 4.0, **metrics}, 'blessed': False,
          'not_blessed_because': [], 'pushed_model': None,
          'metrics_by_slice': {'source=camera': {'auc': math.nan, 'accuracy': 1.0}}}


def test_an_undefined_auc_prints_n_a_and_is_null_in_summary_json(tmp_path):
  result = _summary(accuracy=0.75, auc=math.nan)
  lines = summary.render(result).splitlines()
  assert 'test split (4 images never seen in training): accuracy 0.7500, auc n/a' in lines
  path = tmp_path / 'summary.json'
  summary.write(result, str(path))
  written = json.loads(path.read_text(), parse_constant=lambda name: 1 / 0)  # NaN: not JSON
  assert written['metrics']['auc'] is None and written['metrics']['accuracy'] == 0.75
  assert written['metrics_by_slice']['source=camera']['auc'] is None


def test_a_measured_auc_of_zero_stays_a_number():
  lines = summary.render(_summary(accuracy=0.0, auc=0.0)).splitlines()
  assert 'test split (4 images never seen in training): accuracy 0.0000, auc 0.0000' in lines
