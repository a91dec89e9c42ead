"""Reads an Evaluator artifact: the candidate model's metrics per slice, why it was not blessed,
and the bars it was judged against, for the run summary, `fakedetect inspect` and the model card.
"""

import json
import math
import os
from typing import Dict, List

import tensorflow as tf
import tensorflow_model_analysis as tfma

OVERALL = 'overall'
# TFMA's metric names -> the names every report uses.
_METRIC_NAMES = {
    'binary_accuracy': 'accuracy', 'precision': 'precision', 'recall': 'recall',
    'f1_score': 'f1', 'auc': 'auc', 'pr_auc': 'pr_auc', 'example_count': 'example_count',
    'mean_label': 'mean_label',
}


def _slice_name(slice_key) -> str:
  if not slice_key:
    return OVERALL
  return ', '.join(f'{k}={v.decode() if isinstance(v, bytes) else v}' for k, v in slice_key)


def _eval_config(uri: str) -> Dict:
  """The evaluation's own eval_config.json (local or gs://), {} when it has none."""
  path = os.path.join(uri, 'eval_config.json')
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path) as f:
    return json.loads(f.read()).get('evalConfig', {})


def load_candidate_result(uri: str) -> tfma.EvalResult:
  """The TFMA EvalResult (metrics and plots) of the candidate model of an evaluation."""
  models = _eval_config(uri).get('modelSpecs') or [{}]
  # With a baseline the evaluation holds two models; the summary is about the candidate.
  name = next((m.get('name') for m in models if not m.get('isBaseline')), None)
  return tfma.load_eval_result(uri, model_name=name if len(models) > 1 else None)


def evaluation_metrics(uri: str) -> Dict[str, Dict[str, float]]:
  """{slice name: {metric: value}} for the candidate model."""
  result = load_candidate_result(uri)
  slices = {}
  for slice_key, by_output in result.slicing_metrics:
    values = {}
    for by_class in by_output.values():
      for metrics in by_class.values():
        for name, value in metrics.items():
          if name in _METRIC_NAMES and 'doubleValue' in value:
            values[_METRIC_NAMES[name]] = float(value['doubleValue'])
    slices[_slice_name(slice_key)] = _undefined_on_one_class(values)
  return slices


def _undefined_on_one_class(values: Dict[str, float]) -> Dict[str, float]:
  """TFMA reports AUC 0.0 on a slice of one class (every source slice; a split without fakes),
  where it is undefined: NaN there, as components/metrics.auc returns, so that no report prints
  a measured 0. PR-AUC too when the slice holds no fake (no precision-recall curve)."""
  label = values.get('mean_label')
  if label in (0.0, 1.0):
    values['auc'] = math.nan
    if label == 0.0:
      values['pr_auc'] = math.nan
  return values


def validation_failures(uri: str) -> List[str]:
  """Why the Evaluator refused to bless, one line per failed threshold."""
  result = tfma.load_validation_result(uri)
  reasons = []
  for per_slice in result.metric_validations_per_slice:
    for failure in per_slice.failures:
      reasons.append(_describe_failure(failure))
  if result.missing_thresholds:
    reasons.append('the gate has no thresholds (TFMA blesses nothing without one)')
  return reasons


def _describe_failure(failure) -> str:
  """E.g. 'precision 0.5278 is below the bar 0.8 (short by 0.2722)'."""
  name = failure.metric_key.name
  value = failure.metric_value.double_value.value
  threshold = failure.metric_threshold
  if failure.metric_key.is_diff:
    bound = threshold.change_threshold.absolute.value
    return (f'{name} changed by {value:+.4f} against the last blessed model; '
            f'the most it may drop is {-bound:.4f}')
  bounds = threshold.value_threshold
  if bounds.HasField('lower_bound') and math.isnan(value):
    return (f'{name} is undefined on this split (for precision: the model called no image fake) '
            f'and cannot clear the bar {bounds.lower_bound.value:g}')
  if bounds.HasField('lower_bound') and value < bounds.lower_bound.value:
    return (f'{name} {value:.4f} is below the bar {bounds.lower_bound.value:g} '
            f'(short by {bounds.lower_bound.value - value:.4f})')
  if bounds.HasField('upper_bound') and value > bounds.upper_bound.value:
    return f'{name} {value:.4f} is above the limit {bounds.upper_bound.value:g}'
  return f'{name} {value:.4f} failed {failure.message or "its threshold"}'


def gate_bars(evaluation_uri: str) -> List[str]:
  """The thresholds the Evaluator applied, in words, from the evaluation's own eval_config.json."""
  config = _eval_config(evaluation_uri)
  bars = []
  for spec in config.get('metricsSpecs', []):
    for metric in spec.get('metrics', []):
      name = json.loads(metric.get('config') or '{}').get('name') or metric.get('className')
      for per_slice in metric.get('perSliceThresholds', []):
        threshold = per_slice.get('threshold', {})
        lower = threshold.get('valueThreshold', {}).get('lowerBound')
        if lower is not None:
          bars.append(f'{name} >= {float(lower):g}')
        change = threshold.get('changeThreshold', {}).get('absolute')
        if change is not None:
          bars.append(f'{name} drops by at most {-float(change):g} against the last blessed '
                      'model')
  return bars
