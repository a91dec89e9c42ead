"""The plots of `fakedetect inspect`: roc.png, pr.png, calibration.png, confusion_matrix.png,
slices.png and robustness.png, drawn with matplotlib from TFMA's plot data (confusion matrices at
1000 thresholds, calibration buckets) and the RobustnessGate's robustness.json.
"""

import os
from typing import Any, Dict, Optional

from fakedetect.components import evaluation_results


def _overall_plots(uri: str) -> Dict[str, Any]:
  """{'matrices': [...], 'buckets': [...]} of the overall slice (zero fields are left out)."""
  found: Dict[str, Any] = {'matrices': [], 'buckets': []}
  for slice_key, by_output in evaluation_results.load_candidate_result(uri).plots:
    if slice_key:
      continue
    for by_class in by_output.values():
      for plots in by_class.values():
        found['matrices'] = plots.get('confusionMatrixAtThresholds', {}).get('matrices', [])
        found['buckets'] = plots.get('calibrationHistogramBuckets', {}).get('buckets', [])
  return found


def _figure():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(plt, fig, path: str) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def _curves(matrices, out_dir: str, threshold: Optional[float]) -> Dict[str, str]:
  plt = _figure()
  get = lambda m, k: float(m.get(k, 0.0)) if m.get(k) != 'NaN' else float('nan')  # pylint: disable=g-long-lambda
  tp = [get(m, 'truePositives') for m in matrices]
  fp = [get(m, 'falsePositives') for m in matrices]
  tn = [get(m, 'trueNegatives') for m in matrices]
  fn = [get(m, 'falseNegatives') for m in matrices]
  tpr = [t / (t + f) if t + f else 0.0 for t, f in zip(tp, fn)]
  fpr = [f / (f + t) if f + t else 0.0 for f, t in zip(fp, tn)]
  precision = [t / (t + f) if t + f else 1.0 for t, f in zip(tp, fp)]
  paths = {}
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  ax.plot(fpr, tpr, label='model')
  ax.plot([0, 1], [0, 1], ':', color='grey', label='chance')
  ax.set(xlabel='false positive rate (real called fake)',
         ylabel='true positive rate (fakes caught)', title='ROC, overall', xlim=(0, 1),
         ylim=(0, 1.02))
  ax.legend(loc='lower right')
  paths['roc'] = _save(plt, fig, os.path.join(out_dir, 'roc.png'))
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  ax.plot(tpr, precision)
  ax.set(xlabel='recall', ylabel='precision', title='Precision-recall, overall', xlim=(0, 1),
         ylim=(0, 1.02))
  paths['pr'] = _save(plt, fig, os.path.join(out_dir, 'pr.png'))

  cut = 0.5 if threshold is None else threshold
  at = min(matrices, key=lambda m: abs(get(m, 'threshold') - cut))
  cells = [[get(at, 'trueNegatives'), get(at, 'falsePositives')],
           [get(at, 'falseNegatives'), get(at, 'truePositives')]]
  fig, ax = plt.subplots(figsize=(4.5, 4))
  ax.imshow(cells, cmap='Blues')
  for i in range(2):
    for j in range(2):
      ax.text(j, i, f'{int(cells[i][j])}', ha='center', va='center', fontsize=14)
  ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=['real', 'fake'], yticklabels=['real', 'fake'],
         xlabel='predicted', ylabel='true',
         title=f"Confusion matrix at {'the model threshold' if threshold is not None else 'cut'} "
         f"{get(at, 'threshold'):.3f}")
  paths['confusion_matrix'] = _save(plt, fig, os.path.join(out_dir, 'confusion_matrix.png'))
  return paths


def _calibration(buckets, out_dir: str) -> str:
  plt = _figure()
  # TFMA's 1000 fine buckets, merged into 10 so small evaluations still show a curve.
  merged = [[0.0, 0.0, 0.0] for _ in range(10)]
  for b in buckets:
    n = float(b.get('numWeightedExamples', 0.0))
    if not n:
      continue
    lower = b.get('lowerThresholdInclusive', 0.0)
    lower = 0.0 if lower == '-Infinity' else float(lower)
    i = min(9, max(0, int(lower * 10)))
    merged[i][0] += n
    merged[i][1] += float(b.get('totalWeightedRefinedPrediction', 0.0))
    merged[i][2] += float(b.get('totalWeightedLabel', 0.0))
  points = [(p / n, y / n, n) for n, p, y in merged if n]
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  ax.plot([0, 1], [0, 1], ':', color='grey', label='perfectly calibrated')
  if points:
    ax.plot([p[0] for p in points], [p[1] for p in points], 'o-', label='model')
  ax.set(xlabel='mean predicted fake probability', ylabel='fraction actually fake',
         title='Calibration, overall (10 bins)', xlim=(0, 1), ylim=(0, 1.02))
  ax.legend(loc='upper left')
  return _save(plt, fig, os.path.join(out_dir, 'calibration.png'))


def _slice_bars(slices: Dict[str, Dict[str, float]], out_dir: str) -> str:
  plt = _figure()
  shown = list(slices)  # as the caller orders them
  accuracy = [slices[n].get('accuracy', float('nan')) for n in shown]
  counts = [int(slices[n].get('example_count', 0)) for n in shown]
  fig, ax = plt.subplots(figsize=(7, 0.35 * len(shown) + 1.2))
  ax.barh(range(len(shown)), accuracy,
          color=['#555' if n == evaluation_results.OVERALL else '#4c72b0' for n in shown])
  ax.set_yticks(range(len(shown)))
  ax.set_yticklabels([f'{n} (n={c})' for n, c in zip(shown, counts)])
  ax.invert_yaxis()
  ax.set(xlim=(0, 1), xlabel='accuracy (TFMA, cut 0.5)', title='Accuracy per slice')
  return _save(plt, fig, os.path.join(out_dir, 'slices.png'))


def _robustness_curve(robustness: Dict[str, Any], out_dir: str) -> str:
  plt = _figure()
  by_name = robustness['perturbations']
  perturbations = list(by_name)
  fig, ax = plt.subplots(figsize=(7, 4))
  for metric in ('accuracy', 'auc', 'recall', 'precision'):
    ax.plot(range(len(perturbations)), [by_name[n].get(metric, float('nan'))
                                        for n in perturbations], 'o-', label=metric)
  if robustness.get('min_accuracy'):
    ax.axhline(robustness['min_accuracy'], color='red', ls='--', label='accuracy bar')
  ax.set_xticks(range(len(perturbations)))
  ax.set_xticklabels(perturbations, rotation=20)
  ax.set(ylim=(0, 1.02), title=f"Under perturbation ({robustness.get('split')} split)")
  ax.legend(loc='lower left')
  return _save(plt, fig, os.path.join(out_dir, 'robustness.png'))


def write_plots(evaluation: str, slices: Dict[str, Dict[str, float]], out_dir: str,
                threshold: Optional[float] = None,
                robustness: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
  """PNG files: roc, pr, confusion_matrix, calibration, slices, robustness -> path.

  evaluation: the TFMA evaluation folder; slices: {slice: {metric: value}} in the order shown;
  threshold: the model's own (the confusion matrix is drawn there); robustness: robustness.json.
  """
  os.makedirs(out_dir, exist_ok=True)
  plots = _overall_plots(evaluation)
  paths: Dict[str, str] = {}
  if plots['matrices']:
    paths.update(_curves(plots['matrices'], out_dir, threshold))
  if plots['buckets']:
    paths['calibration'] = _calibration(plots['buckets'], out_dir)
  paths['slices'] = _slice_bars(slices, out_dir)
  if robustness and robustness.get('perturbations'):
    paths['robustness'] = _robustness_curve(robustness, out_dir)
  return paths
