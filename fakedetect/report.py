"""`fakedetect inspect`: the TFMA slice table, the blessing verdict, plots and one HTML report.

Reads a run back from ML Metadata (fakedetect/summary.py's RunOutputs, evaluation_metrics and
validation_failures) and the RobustnessGate's robustness.json, then writes into
`<run output>/report/`: roc.png, pr.png, calibration.png, confusion_matrix.png, slices.png,
robustness.png and index.html (the tables, the verdict and the plots).
"""

import dataclasses
import html
import json
import math
import os
from typing import Any, Dict, List, Optional

from fakedetect import summary as summary_lib
from fakedetect.components import evaluation_results
from fakedetect.pipeline.config import PipelineConfig

REPORT_DIR = 'report'
TABLE_METRICS = ('example_count', 'accuracy', 'precision', 'recall', 'f1', 'auc', 'pr_auc')
ROBUSTNESS_METRICS = ('accuracy', 'precision', 'recall', 'auc', 'flip_rate')
GATE_ID = 'RobustnessGate'


class InspectError(ValueError):
  """The run or evaluation cannot be inspected; the message says what to do."""


@dataclasses.dataclass
class Inspection:
  """What one evaluation measured and decided."""
  evaluation: str  # the TFMA evaluation folder
  output_dir: str  # where report/ goes
  slices: Dict[str, Dict[str, float]]  # {'overall' | 'source=x' ...: {metric: value}}
  blessed: bool
  failures: List[str]  # why not blessed, one line per failed threshold
  robustness: Optional[Dict[str, Any]] = None  # robustness.json, when the run has one
  threshold: Optional[float] = None  # the model's own decision threshold
  run_id: Optional[str] = None


def _store(metadata_path: str):
  from ml_metadata import metadata_store  # pylint: disable=g-import-not-at-top
  from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
  connection = metadata_store_pb2.ConnectionConfig()
  connection.sqlite.filename_uri = metadata_path
  connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
  return metadata_store.MetadataStore(connection)


def _robustness_of_evaluation(metadata_path: str, evaluation_uri: str):
  """Lineage: evaluation -> its Evaluator's blessing -> the RobustnessGate that read it."""
  from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
  event_types = metadata_store_pb2.Event
  store = _store(metadata_path)

  def keyed(events, kind, key):
    return [e for e in events
            if e.type == kind and key in [s.key for s in e.path.steps if s.HasField('key')]]

  found = store.get_artifacts_by_uri(evaluation_uri)
  if not found:
    return None, None
  produced = [e for e in store.get_events_by_artifact_ids([found[0].id])
              if e.type == event_types.OUTPUT]
  if not produced:
    return None, None
  evaluator_events = store.get_events_by_execution_ids([produced[0].execution_id])
  blessings = keyed(evaluator_events, event_types.OUTPUT, 'blessing')
  if not blessings:
    return None, None
  readers = [e.execution_id for e in store.get_events_by_artifact_ids([blessings[0].artifact_id])
             if e.type == event_types.INPUT]
  for execution_id in sorted(readers, reverse=True):
    events = store.get_events_by_execution_ids([execution_id])
    robustness, blessing = (keyed(events, event_types.OUTPUT, key) for key in
                            ('robustness', 'blessing'))
    if robustness:
      ids = [robustness[0].artifact_id] + ([blessing[0].artifact_id] if blessing else [])
      by_id = {a.id: a for a in store.get_artifacts_by_id(ids)}  # not in the order asked
      return by_id[ids[0]], (by_id[ids[1]] if len(ids) > 1 else None)
  return None, None


def _read_robustness(artifact) -> Optional[Dict[str, Any]]:
  if artifact is None:
    return None
  from fakedetect.components import robustness  # pylint: disable=g-import-not-at-top
  try:
    return robustness.read(artifact.uri)
  except Exception:  # pylint: disable=broad-except  (a failed or older run: no file)
    return None


def _blessed(artifact) -> Optional[bool]:
  if artifact is None or 'blessed' not in artifact.custom_properties:
    return None
  return artifact.custom_properties['blessed'].int_value == 1


def load(target: str = 'outputs') -> Inspection:
  """The latest evaluation of a run's output folder, or the evaluation folder `target` itself."""
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
  target = os.path.abspath(target)
  if os.path.isfile(os.path.join(target, 'eval_config.json')):  # an evaluation folder
    evaluation = target
    # <output>/tfx/Evaluator/evaluation/<id>: the run's output folder is four levels up.
    output_dir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(target))))
    metadata_path = os.path.join(output_dir, 'metadata.sqlite')
    robustness_artifact, final_blessing = (
        _robustness_of_evaluation(metadata_path, evaluation)
        if os.path.isfile(metadata_path) else (None, None))
    if not os.path.isfile(metadata_path):
      output_dir = target
    run_id = None
    evaluator_ok = tfma.load_validation_result(evaluation).validation_ok
  else:
    config = PipelineConfig(output_dir=target)
    if not os.path.isfile(config.metadata_path):
      raise InspectError(f'No run in {target} (no metadata.sqlite). Pass a run\'s --output '
                         'folder or an Evaluator evaluation folder, or run `fakedetect run` first.')
    try:
      outputs = summary_lib.RunOutputs(config)
    except LookupError as e:
      raise InspectError(str(e)) from None
    artifact = outputs.artifact('Evaluator', 'evaluation')
    if artifact is None:
      raise InspectError(f'The latest run in {target} ({outputs.run_id}) has no evaluation: it '
                         'stopped before the Evaluator. See its log in logs/.')
    evaluation, output_dir, run_id = artifact.uri, target, outputs.run_id
    robustness_artifact = outputs.artifact(GATE_ID, 'robustness')
    final_blessing = outputs.artifact(GATE_ID, 'blessing')
    evaluator_ok = _blessed(outputs.artifact('Evaluator', 'blessing'))
    if evaluator_ok is None:
      evaluator_ok = tfma.load_validation_result(evaluation).validation_ok

  robustness = _read_robustness(robustness_artifact)
  failures = [] if evaluator_ok else evaluation_results.validation_failures(evaluation)
  if robustness:
    failures += robustness.get('failures', [])
  blessed = _blessed(final_blessing)
  if blessed is None:
    blessed = bool(evaluator_ok) and not failures
  return Inspection(evaluation=evaluation, output_dir=output_dir,
                    slices=evaluation_results.evaluation_metrics(evaluation), blessed=blessed,
                    failures=failures, robustness=robustness,
                    threshold=(robustness or {}).get('threshold'), run_id=run_id)


# -- Text ------------------------------------------------------------------------------------

def _fmt(value: Any, count: bool = False) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return '-'
  if count:
    return str(int(value))
  return f'{value:.4f}' if isinstance(value, float) else str(value)


def _rows(inspection: Inspection) -> List[List[str]]:
  names = sorted(inspection.slices, key=lambda n: (n != evaluation_results.OVERALL, n))
  return [[name] + [_fmt(inspection.slices[name].get(m), m == 'example_count') for m in TABLE_METRICS]
          for name in names]


def _robustness_rows(inspection: Inspection) -> List[List[str]]:
  by_name = (inspection.robustness or {}).get('perturbations', {})
  return [[name] + [_fmt(by_name[name].get(m)) for m in ROBUSTNESS_METRICS] for name in by_name]


def _text_table(header: List[str], rows: List[List[str]]) -> str:
  widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
  line = lambda r: '  '.join(c.ljust(w) if i == 0 else c.rjust(w)  # pylint: disable=g-long-lambda
                             for i, (c, w) in enumerate(zip(r, widths)))
  return '\n'.join([line(header), line(['-' * w for w in widths])] + [line(r) for r in rows])


def verdict(inspection: Inspection) -> str:
  if inspection.blessed:
    return 'blessed: yes (cleared every threshold)'
  return 'blessed: NO (' + ('; '.join(inspection.failures) or 'see the evaluation') + ')'


def render(inspection: Inspection) -> str:
  """The slice table, the robustness table and the verdict, as `fakedetect inspect` prints them."""
  lines = [f'evaluation: {inspection.evaluation}' +
           (f' (run {inspection.run_id})' if inspection.run_id else ''), '',
           _text_table(['slice'] + list(TABLE_METRICS), _rows(inspection))]
  if inspection.robustness:
    rob = inspection.robustness
    lines += ['', f"under perturbation ({rob.get('split')} split, at the model's threshold "
              f"{_fmt(rob.get('threshold'))}):",
              _text_table(['perturbation'] + list(ROBUSTNESS_METRICS), _robustness_rows(inspection)),
              f"worst: {rob.get('worst')} (accuracy {_fmt(rob.get('worst_accuracy'))}); bar "
              f"{_fmt(rob.get('min_accuracy')) if rob.get('min_accuracy') else 'off'}"]
    for cls, title in (('real', 'reals called fake'), ('fake', 'fakes called real')):
      mistakes = (rob.get('mistakes') or {}).get(cls)
      if mistakes:
        lines += [f'surest mistakes, {title}:'] + [
            f"  {m['path']}  P(fake) {_fmt(m['fake_probability'])}" for m in mistakes]
  lines += ['', verdict(inspection)]
  return '\n'.join(lines)


# -- Plots -----------------------------------------------------------------------------------

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
  ax.set(xlabel='false positive rate (real called fake)', ylabel='true positive rate (fakes caught)',
         title='ROC, overall', xlim=(0, 1), ylim=(0, 1.02))
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
  names = [n for n in sorted(slices) if n != evaluation_results.OVERALL]
  overall = evaluation_results.OVERALL
  names = [overall] + names if overall in slices else names
  accuracy = [slices[n].get('accuracy', float('nan')) for n in names]
  counts = [int(slices[n].get('example_count', 0)) for n in names]
  fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
  ax.barh(range(len(names)), accuracy, color=['#555' if n == evaluation_results.OVERALL else '#4c72b0'
                                              for n in names])
  ax.set_yticks(range(len(names)))
  ax.set_yticklabels([f'{n} (n={c})' for n, c in zip(names, counts)])
  ax.invert_yaxis()
  ax.set(xlim=(0, 1), xlabel='accuracy (TFMA, cut 0.5)', title='Accuracy per slice')
  return _save(plt, fig, os.path.join(out_dir, 'slices.png'))


def _robustness_curve(robustness: Dict[str, Any], out_dir: str) -> str:
  plt = _figure()
  by_name = robustness['perturbations']
  names = list(by_name)
  fig, ax = plt.subplots(figsize=(7, 4))
  for metric in ('accuracy', 'auc', 'recall', 'precision'):
    ax.plot(range(len(names)), [by_name[n].get(metric, float('nan')) for n in names], 'o-',
            label=metric)
  if robustness.get('min_accuracy'):
    ax.axhline(robustness['min_accuracy'], color='red', ls='--', label='accuracy bar')
  ax.set_xticks(range(len(names)))
  ax.set_xticklabels(names, rotation=20)
  ax.set(ylim=(0, 1.02), title=f"Under perturbation ({robustness.get('split')} split)")
  ax.legend(loc='lower left')
  return _save(plt, fig, os.path.join(out_dir, 'robustness.png'))


def write_plots(inspection: Inspection, out_dir: str) -> Dict[str, str]:
  """PNG files: roc, pr, confusion_matrix, calibration, slices, robustness -> path."""
  os.makedirs(out_dir, exist_ok=True)
  plots = _overall_plots(inspection.evaluation)
  paths: Dict[str, str] = {}
  if plots['matrices']:
    paths.update(_curves(plots['matrices'], out_dir, inspection.threshold))
  if plots['buckets']:
    paths['calibration'] = _calibration(plots['buckets'], out_dir)
  paths['slices'] = _slice_bars(inspection.slices, out_dir)
  if inspection.robustness and inspection.robustness.get('perturbations'):
    paths['robustness'] = _robustness_curve(inspection.robustness, out_dir)
  return paths


# -- HTML ------------------------------------------------------------------------------------

def _html_table(header: List[str], rows: List[List[str]]) -> str:
  head = ''.join(f'<th>{html.escape(h)}</th>' for h in header)
  body = ''.join('<tr>' + ''.join(f'<td>{html.escape(c)}</td>' for c in row) + '</tr>'
                 for row in rows)
  return f'<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def write_report(inspection: Inspection, out_dir: str, plots: Dict[str, str]) -> str:
  """index.html: verdict, slice table, robustness table and the PNGs (relative links)."""
  status = 'ok' if inspection.blessed else 'no'
  parts = [
      '<!doctype html><html><head><meta charset="utf-8"><title>fakedetect evaluation</title>',
      '<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}'
      'table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;'
      'text-align:right}td:first-child{text-align:left}.ok{color:#176317}.no{color:#a40000}'
      'img{max-width:100%;margin:8px 0}</style></head><body>',
      '<h1>fakedetect evaluation</h1>',
      f'<p>Evaluation: <code>{html.escape(inspection.evaluation)}</code>'
      + (f' (run {html.escape(inspection.run_id)})' if inspection.run_id else '') + '</p>',
      f'<p class="{status}"><b>{html.escape(verdict(inspection))}</b></p>',
  ]
  if inspection.failures:
    parts.append('<ul>' + ''.join(f'<li>{html.escape(f)}</li>' for f in inspection.failures)
                 + '</ul>')
  parts += ['<h2>Metrics per slice</h2>',
            '<p>TFMA on the held-out split; precision, recall and accuracy at a 0.5 cut. '
            'On a slice holding one class only (a camera, a generator), AUC is undefined and '
            'TFMA reports 0, and precision is undefined (-) when nothing is called fake.</p>',
            _html_table(['slice'] + list(TABLE_METRICS), _rows(inspection))]
  if inspection.robustness:
    parts += ['<h2>Under perturbation</h2>',
              f"<p>The same split re-scored through <code>serving_default</code> after each "
              f"perturbation, at the model's threshold {_fmt(inspection.threshold)}.</p>",
              _html_table(['perturbation'] + list(ROBUSTNESS_METRICS),
                          _robustness_rows(inspection))]
  parts.append('<h2>Plots</h2>')
  for name, path in plots.items():
    link = html.escape(os.path.relpath(path, out_dir))
    parts.append(f'<h3>{html.escape(name)}</h3><a href="{link}"><img src="{link}" '
                 f'alt="{html.escape(name)}"></a>')
  parts.append('</body></html>')
  path = os.path.join(out_dir, 'index.html')
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(parts))
  return path


def inspect(target: str = 'outputs', out_dir: Optional[str] = None):
  """Loads, writes the plots and the report; returns (Inspection, printed text, report path)."""
  inspection = load(target)
  out_dir = out_dir or os.path.join(inspection.output_dir, REPORT_DIR)
  plots = write_plots(inspection, out_dir)
  report = write_report(inspection, out_dir, plots)
  return inspection, render(inspection), report
