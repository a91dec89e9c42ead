"""components/metrics.py: the metrics the gate, `evaluate` and the Trainer's threshold share."""

from fractions import Fraction

import numpy as np
import pytest

from fakedetect.components import metrics


def test_auc_and_metrics_at_the_models_own_verdicts():
  labels = np.array([0, 0, 1, 1])
  assert metrics.auc(labels, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
  assert metrics.auc(labels, np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.5)
  m = metrics.classification(labels, np.array([0.1, 0.6, 0.7, 0.2]), np.array([0, 1, 1, 0]))
  assert m['accuracy'] == 0.5 and m['precision'] == 0.5 and m['recall'] == 0.5
  assert m['f1'] == 0.5 and m['auc'] == pytest.approx(0.75) and m['example_count'] == 4
  assert m['mean_fake_probability'] == pytest.approx(0.4)


def test_a_one_class_slice_gets_a_row_with_undefined_rates_at_zero():
  # evaluate's by-source table: every source holds one class only.
  real = metrics.classification([0, 0, 0], [0.1, 0.6, 0.2], [0, 1, 0])
  assert real['accuracy'] == pytest.approx(2 / 3)
  assert real['precision'] == real['recall'] == real['f1'] == 0.0 and np.isnan(real['auc'])
  fake = metrics.classification([1, 1], [0.1, 0.6], [0, 1])
  assert fake['recall'] == 0.5 and fake['precision'] == 1.0 and np.isnan(fake['auc'])
  empty = metrics.classification([], [], [])
  assert empty['example_count'] == 0 and np.isnan(empty['accuracy'])


def test_best_threshold_maximises_f1_and_balanced_accuracy():
  labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
  probs = np.array([0.1, 0.2, 0.3, 0.65, 0.6, 0.7, 0.8, 0.9])
  # Cutting between 0.3 and 0.6 gets every fake and one false positive: F1 = 8/9.
  t = metrics.best_threshold(labels, probs, 'f1')
  assert 0.3 < t <= 0.6
  t = metrics.best_threshold(labels, probs, 'balanced_accuracy')
  predictions = (probs >= t).astype(int)
  assert (predictions == labels).mean() >= 7 / 8
  # one class only: no information
  assert metrics.best_threshold(np.ones(4), probs[:4], 'f1') == 0.5
  with pytest.raises(ValueError, match='balanced_accuracy'):
    metrics.best_threshold(labels, probs, 'accuracy')


def _exact(labels, probs, metric, cut):
  decided, fake = probs >= cut, labels.astype(bool)
  tp, fp = int((decided & fake).sum()), int((decided & ~fake).sum())
  pos, neg = int(fake.sum()), int((~fake).sum())
  if metric == 'f1':
    return Fraction(2 * tp, tp + fp + pos)
  return (Fraction(tp, pos) + Fraction(neg - fp, neg)) / 2


@pytest.mark.parametrize('metric', metrics.THRESHOLD_METRICS)
def test_best_threshold_is_the_best_cut_halfway_to_the_next_score_ties_to_the_highest(metric):
  rng = np.random.default_rng(7)
  for trial in range(200):
    n = int(rng.integers(4, 40))
    labels = np.r_[0, 1, rng.integers(0, 2, n - 2)]
    probs = np.round(rng.random(n), 1 + trial % 3)  # coarse scores: many ties
    cuts = sorted(set(probs.tolist()), reverse=True)
    values = [_exact(labels, probs, metric, cut) for cut in cuts]
    best = values.index(max(values))  # the highest cut of the best
    below = cuts[best + 1] if best + 1 < len(cuts) else 0.0
    assert metrics.best_threshold(labels, probs, metric) == pytest.approx(
        (cuts[best] + below) / 2), (labels, probs)


def test_an_undefined_metric_becomes_none_never_a_number():
  """What the tables print as n/a and JSON writes as null: AUC of one class is NaN, not 0."""
  undefined = metrics.classification([0, 0], [0.2, 0.7], [0, 1])['auc']
  assert metrics.defined(undefined) is None and metrics.UNDEFINED == 'n/a'
  assert metrics.defined(0.0) == 0.0 and metrics.defined(15) == 15
