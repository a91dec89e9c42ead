"""Binary classification metrics, fake being the positive class, from scikit-learn.

One home for what the RobustnessGate, `fakedetect evaluate` and the Trainer's threshold choice
compute from labels and scores, so a metric means the same thing in robustness.json, evaluate's
table and the exported threshold. TFMA computes the Evaluator's own metrics; this module is for
the code that scores outside TFMA.
"""

import math
from typing import Any, Dict, Optional

import numpy as np

THRESHOLD_METRICS = ('f1', 'balanced_accuracy')  # what train.threshold_metric may name
# What a table shows for a metric that is undefined (AUC on one class, recall without a fake)
# or absent: never a number, which would read as a measured 0.
UNDEFINED = 'n/a'


def defined(value: Any) -> Optional[Any]:
  """The value, or None where it is undefined (NaN): tables print None as UNDEFINED
  (tabulate's missingval) and JSON writes it as null, where NaN is not JSON."""
  return None if isinstance(value, float) and math.isnan(value) else value


def json_safe(value: Any) -> Any:
  """value with every undefined number inside its dicts and lists made None (JSON's null)."""
  if isinstance(value, dict):
    return {key: json_safe(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(item) for item in value]
  return defined(value)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """ROC AUC (ties count half); NaN without both classes, where it is undefined."""
  from sklearn import metrics as sk_metrics  # pylint: disable=g-import-not-at-top
  labels = np.asarray(labels).astype(bool)
  if labels.all() or not labels.any():
    return float('nan')
  return float(sk_metrics.roc_auc_score(labels, np.asarray(scores, dtype=np.float64)))


def classification(labels: np.ndarray, probabilities: np.ndarray, decisions: np.ndarray
                   ) -> Dict[str, float]:
  """example_count; accuracy, precision, recall and F1 of `decisions` (the model's own
  is_fake, so they hold at its threshold); AUC and mean P(fake) of `probabilities`. Precision,
  recall and F1 are 0 where undefined (no fake predicted, or none present), so a one-source
  slice still gets a row."""
  from sklearn import metrics as sk_metrics  # pylint: disable=g-import-not-at-top
  labels = np.asarray(labels).astype(int)
  decisions = np.asarray(decisions).astype(int)
  probabilities = np.asarray(probabilities, dtype=np.float64)
  if not len(labels):
    nan = float('nan')
    return {'example_count': 0, 'accuracy': nan, 'precision': 0.0, 'recall': 0.0, 'f1': 0.0,
            'auc': nan, 'mean_fake_probability': nan}
  precision, recall, f1, _ = sk_metrics.precision_recall_fscore_support(
      labels, decisions, average='binary', pos_label=1, zero_division=0.0)
  return {
      'example_count': int(len(labels)),
      'accuracy': float(sk_metrics.accuracy_score(labels, decisions)),
      'precision': float(precision),
      'recall': float(recall),
      'f1': float(f1),
      'auc': auc(labels, probabilities),
      'mean_fake_probability': float(probabilities.mean()),
  }


def best_threshold(labels: np.ndarray, probabilities: np.ndarray, metric: str) -> float:
  """The decision threshold (fake when P(fake) >= it) that maximises `metric` on these labels.

  Every distinct score is a candidate cut (scikit-learn's ROC curve, nothing dropped); the
  threshold returned lies halfway between the best cut and the next lower score, so a score
  that moves a little on re-export does not flip its verdict. 0.5 when one class is missing:
  the split then says nothing about where to cut.
  """
  from sklearn import metrics as sk_metrics  # pylint: disable=g-import-not-at-top
  if metric not in THRESHOLD_METRICS:
    raise ValueError(f'threshold metric must be one of {", ".join(THRESHOLD_METRICS)}, '
                     f'not {metric!r}.')
  labels = np.asarray(labels).astype(int).ravel()
  probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
  positives = int(labels.sum())
  negatives = len(labels) - positives
  if positives == 0 or negatives == 0:
    return 0.5
  fpr, tpr, cuts = sk_metrics.roc_curve(labels, probabilities, drop_intermediate=False)
  # Index 0 is scikit-learn's "nothing is fake" point (cut +inf): not a candidate. Counts, not
  # rates, so that equal scores are equal floats and a tie goes to the highest cut.
  true_pos, false_pos = np.rint(tpr[1:] * positives), np.rint(fpr[1:] * negatives)
  cuts = cuts[1:]
  if metric == 'f1':  # 2 TP / (2 TP + FP + FN)
    score = 2 * true_pos / (true_pos + false_pos + positives)
  else:  # (TP / P + TN / N) / 2, over one denominator
    true_neg = negatives - false_pos
    score = (true_pos * negatives + true_neg * positives) / (2 * positives * negatives)
  best = int(np.argmax(score))
  below = cuts[best + 1] if best + 1 < len(cuts) else 0.0
  return float((cuts[best] + below) / 2)
