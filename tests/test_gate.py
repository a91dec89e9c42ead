"""The gate on real pipeline runs: value bars, the change threshold against the last blessed
model, the robustness bar; and the perturbations and metrics the robustness gate is built on."""

import os

import numpy as np
import pytest


def _robustness(record):
  from fakedetect.components import robustness  # pylint: disable=g-import-not-at-top
  return robustness.read(record['robustness'])


def test_good_model_is_blessed_pushed_and_carries_a_model_card(runs):
  summary = runs['good']['summary']
  assert summary['blessed'] is True, summary['not_blessed_because']
  assert summary['pushed_model'] and os.path.isfile(
      os.path.join(summary['pushed_model'], 'saved_model.pb'))
  rob = _robustness(runs['good'])
  assert rob['blessed'] and rob['evaluator_blessed'] and rob['robust']
  assert list(rob['perturbations']) == ['none', 'jpeg_q95', 'jpeg_q75', 'jpeg_q50',
                                        'gaussian_blur', 'rescale_0.5']
  assert rob['perturbations']['none']['example_count'] == summary['metrics']['example_count']

  card_path = runs['good']['model_card']
  assert card_path == os.path.join(summary['pushed_model'], 'assets.extra', 'model_card.md')
  card = open(card_path, encoding='utf-8').read()
  for section in ('## Intended use', '## Training data', '## Training setup', '## Evaluation',
                  '### Per slice', '### Under perturbation', '### Most confident mistakes',
                  '## Limitations',
                  '## Ethical considerations', 'not proof'):
    assert section in card, section
  assert f"{summary['threshold']:.3f}" in card
  assert 'jpeg_q75' in card and 'source=' in card
  assert os.path.isfile(os.path.join(summary['pushed_model'], 'assets.extra', 'model_card.html'))


def test_robustness_names_the_files_of_the_most_confident_mistakes(runs):
  record = runs['worse_than_baseline']  # shuffled labels: refused for accuracy, so it errs
  rob = _robustness(record)
  data = os.path.join(os.path.dirname(record['output']), 'data')
  reals, fakes = rob['mistakes']['real'], rob['mistakes']['fake']
  assert reals or fakes
  assert len(reals) <= 5 and len(fakes) <= 5
  for mistake in reals + fakes:
    assert os.path.isfile(os.path.join(data, mistake['path'])), mistake
  assert all(m['fake_probability'] >= rob['threshold'] for m in reals)  # called fake
  assert all(m['fake_probability'] < rob['threshold'] for m in fakes)  # called real
  assert [m['fake_probability'] for m in reals] == sorted(
      (m['fake_probability'] for m in reals), reverse=True)
  assert [m['fake_probability'] for m in fakes] == sorted(m['fake_probability'] for m in fakes)


def test_model_worse_than_the_baseline_is_refused_by_the_change_threshold_only(runs):
  summary = runs['worse_than_baseline']['summary']
  assert summary['blessed'] is False
  assert summary['pushed_model'] is None
  assert 'blessed: NO' in runs['worse_than_baseline']['stdout']
  # Nothing new was pushed: the serving folder holds the good model's version alone.
  good = runs['good']['summary']['pushed_model']
  assert os.listdir(os.path.dirname(good)) == [os.path.basename(good)]
  reasons = summary['not_blessed_because']
  assert len(reasons) == 1 and reasons[0].startswith('binary_accuracy changed by -'), reasons
  assert 'against the last blessed model' in reasons[0]
  rob = _robustness(runs['worse_than_baseline'])
  assert rob['robust'] and not rob['evaluator_blessed'] and not rob['blessed']


def test_model_below_the_precision_or_recall_bar_is_refused_and_says_by_how_much(runs):
  summary = runs['below_bars']['summary']
  assert summary['blessed'] is False
  assert summary['pushed_model'] is None
  bars = [r for r in summary['not_blessed_because'] if r.startswith(('precision ', 'recall '))]
  assert any('below the bar 0.99 (short by ' in r for r in bars), summary
  # The robustness bar refuses it too, and says which perturbation fell short by how much.
  rob = _robustness(runs['below_bars'])
  assert not rob['robust'] and not rob['blessed']
  assert any('below the robustness bar 0.99 (short by' in f for f in rob['failures'])
  # Only fully blessed models are baselines: the refused shuffled models were compared with the
  # good one, so the change threshold still fails here.
  assert any(r.startswith('binary_accuracy changed by') for r in summary['not_blessed_because'])


# -- The building blocks, without a pipeline --------------------------------------------------

def test_every_perturbation_yields_a_decodable_image_of_the_same_size():
  from fakedetect.components import perturb  # pylint: disable=g-import-not-at-top
  from tests.conftest import encode_image, random_image  # pylint: disable=g-import-not-at-top
  rng_image = random_image(37, 52, seed=3)
  for source in (encode_image(rng_image, 'PNG'), encode_image(rng_image, 'JPEG', quality=90),
                 encode_image(rng_image[..., 0], 'PNG'), encode_image(rng_image, 'GIF')):
    for name in perturb.names():
      out = perturb.perturb(source, name)
      assert perturb.decode_rgb(out).shape == (37, 52, 3), name
  assert perturb.perturb(b'abc', 'none') == b'abc'
  with pytest.raises(ValueError, match='Unknown perturbation'):
    perturb.names(['jpeg_q10'])
  assert perturb.names(['jpeg_q75']) == ['none', 'jpeg_q75']


def test_robustness_verdict():
  # Its metrics (components/metrics.py) are tested in tests/test_metrics.py.
  from fakedetect.components import robustness  # pylint: disable=g-import-not-at-top
  result = {'perturbations': {'none': {'accuracy': 0.9}, 'jpeg_q50': {'accuracy': 0.6},
                              'gaussian_blur': {'accuracy': 0.85}}}
  assert robustness.verdict(result, 0.0) == []
  assert robustness.verdict(result, 0.8) == [
      'accuracy under jpeg_q50 0.6000 is below the robustness bar 0.8 (short by 0.2000)']


def test_confident_mistakes_are_the_surest_wrong_verdicts_per_class():
  from fakedetect.components import robustness  # pylint: disable=g-import-not-at-top
  rows = [{'label': label, 'path': f'{i}.png', 'source': 'cam' if label == 0 else 'gen'}
          for i, label in enumerate([0, 0, 0, 1, 1, 1])]
  probabilities = np.array([0.9, 0.6, 0.1, 0.2, 0.05, 0.8])
  decisions = (probabilities >= 0.5).astype(int)
  mistakes = robustness.confident_mistakes(rows, probabilities, decisions)
  assert [m['path'] for m in mistakes['real']] == ['0.png', '1.png']  # surest first
  assert [m['path'] for m in mistakes['fake']] == ['4.png', '3.png']
  assert mistakes['fake'][0] == {'path': '4.png', 'source': 'gen', 'fake_probability': 0.05}
  assert robustness.confident_mistakes(rows, probabilities, decisions, per_class=1)['real'] == [
      mistakes['real'][0]]


def test_a_bar_of_zero_is_no_bar_and_an_undefined_metric_is_said_in_words():
  """A model that calls no image fake has no precision (NaN): with the bar at 0 it must pass
  (TFMA would fail NaN against any bound), with a bar the refusal says what happened."""
  from tensorflow_model_analysis.proto import validation_result_pb2
  from fakedetect.components import evaluation_results
  from fakedetect.pipeline import config as config_lib, pipeline
  config = config_lib.PipelineConfig().with_overrides(['gate.min_precision=0'])
  specs = {m.class_name: m for m in pipeline.eval_config(config).metrics_specs[0].metrics}
  assert not specs['Precision'].per_slice_thresholds
  assert specs['Recall'].per_slice_thresholds  # the default bar, 0.8
  assert specs['ExampleCount'].per_slice_thresholds  # the one bar always there
  failure = validation_result_pb2.ValidationFailure()
  failure.metric_key.name = 'precision'
  failure.metric_value.double_value.value = float('nan')
  failure.metric_threshold.value_threshold.lower_bound.value = 0.99
  assert evaluation_results._describe_failure(failure) == (  # pylint: disable=protected-access
      'precision is undefined on this split (for precision: the model called no image fake) '
      'and cannot clear the bar 0.99')
