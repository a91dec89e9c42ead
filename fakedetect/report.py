"""`fakedetect inspect`: the TFMA slice table, the blessing verdict, plots and one HTML report.

Reads a run back through fakedetect/run_records.py (the latest run's Evaluator and RobustnessGate
outputs, or the gate that judged a given evaluation), the evaluation through
components/evaluation_results.py and the gate's robustness.json, then writes into
`<run output>/report/` the PNGs of report_plots.py and index.html (templates/report.html.j2:
the tables, the verdict, the plots).
"""

import dataclasses
import os
from typing import Any, Dict, List, Optional

import jinja2
import markupsafe
from tabulate import tabulate

from fakedetect import output_files
from fakedetect import report_plots
from fakedetect import run_records
from fakedetect.components import errors
from fakedetect.components import evaluation_results
from fakedetect.components import metrics
from fakedetect.pipeline import names

TABLE_METRICS = ('example_count', 'accuracy', 'precision', 'recall', 'f1', 'auc', 'pr_auc')
ROBUSTNESS_METRICS = ('accuracy', 'precision', 'recall', 'auc', 'flip_rate')


class InspectError(errors.UserError):
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


def _read_robustness(artifact) -> Optional[Dict[str, Any]]:
  if artifact is None:
    return None
  from fakedetect.components import robustness  # pylint: disable=g-import-not-at-top
  try:
    return robustness.read(artifact.uri)
  except Exception:  # pylint: disable=broad-except  (a failed or older run: no file)
    return None


def _run_folder_of(evaluation: str) -> Optional[str]:
  """The run output folder an evaluation folder lies in (<output>/tfx/Evaluator/evaluation/<id>),
  when it holds the run's records; None for an evaluation copied elsewhere."""
  output_dir = evaluation
  for _ in range(4):
    output_dir = os.path.dirname(output_dir)
  return output_dir if os.path.isfile(os.path.join(output_dir, names.METADATA_STORE)) else None


def load(target: str = 'outputs') -> Inspection:
  """The latest evaluation of a run's output folder, or the evaluation folder `target` itself."""
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
  target = os.path.abspath(target)
  if os.path.isfile(os.path.join(target, 'eval_config.json')):  # TFMA's evaluation folder
    evaluation, run_id = target, None
    output_dir = _run_folder_of(evaluation)
    if output_dir is not None:
      records = run_records.RunRecords.of_output(output_dir)
      robustness_artifact, final_blessing = records.gate_after(records.artifact_at(evaluation))
    else:  # the report goes beside the evaluation
      output_dir, robustness_artifact, final_blessing = evaluation, None, None
    evaluator_ok = tfma.load_validation_result(evaluation).validation_ok
  else:
    if not os.path.isfile(os.path.join(target, names.METADATA_STORE)):
      raise InspectError(f'No run in {target} (no {names.METADATA_STORE}). Pass a run\'s '
                         '--output folder or an Evaluator evaluation folder, or run '
                         '`fakedetect run` first.')
    run = run_records.latest_run(target)
    artifact = run.artifact(names.EVALUATOR, 'evaluation')
    if artifact is None:
      raise InspectError(f'The latest run in {target} ({run.run_id}) has no evaluation: it '
                         f'stopped before the Evaluator. See its log in {names.LOGS_DIR}/.')
    evaluation, output_dir, run_id = artifact.uri, target, run.run_id
    robustness_artifact = run.artifact(names.ROBUSTNESS_GATE, 'robustness')
    final_blessing = run.artifact(names.ROBUSTNESS_GATE, 'blessing')
    evaluator_ok = run_records.is_blessed(run.artifact(names.EVALUATOR, 'blessing'))
    if evaluator_ok is None:
      evaluator_ok = tfma.load_validation_result(evaluation).validation_ok

  robustness = _read_robustness(robustness_artifact)
  failures = [] if evaluator_ok else evaluation_results.validation_failures(evaluation)
  if robustness:
    failures += robustness.get('failures', [])
  blessed = run_records.is_blessed(final_blessing)
  if blessed is None:
    blessed = bool(evaluator_ok) and not failures
  return Inspection(evaluation=evaluation, output_dir=output_dir,
                    slices=evaluation_results.evaluation_metrics(evaluation), blessed=blessed,
                    failures=failures, robustness=robustness,
                    threshold=(robustness or {}).get('threshold'), run_id=run_id)


# -- Tables ----------------------------------------------------------------------------------

def _cell(value: Any, count: bool = False) -> Any:
  """A metric as the tables take it: None (n/a) when missing or undefined (NaN)."""
  value = metrics.defined(value)
  return int(value) if count and value is not None else value


def _fmt(value: Any) -> str:
  """A number in a sentence, as the tables show it."""
  value = _cell(value)
  if value is None:
    return metrics.UNDEFINED
  return f'{value:.4f}' if isinstance(value, float) else str(value)


def _slice_order(slices: Dict[str, Any]) -> List[str]:
  """Overall first, then the slices by name."""
  return sorted(slices, key=lambda name: (name != evaluation_results.OVERALL, name))


def _rows(inspection: Inspection) -> List[List[Any]]:
  return [[name] + [_cell(inspection.slices[name].get(m), m == 'example_count')
                    for m in TABLE_METRICS] for name in _slice_order(inspection.slices)]


def _robustness_rows(inspection: Inspection) -> List[List[Any]]:
  by_name = (inspection.robustness or {}).get('perturbations', {})
  return [[name] + [_cell(by_name[name].get(m)) for m in ROBUSTNESS_METRICS] for name in by_name]


def _table(header: List[str], rows: List[List[Any]], tablefmt: str = 'simple') -> str:
  """Names left, numbers right with four decimals, n/a where a metric is undefined."""
  return str(tabulate(rows, headers=header, tablefmt=tablefmt, floatfmt='.4f',
                      missingval=metrics.UNDEFINED,
                      colalign=('left',) + ('right',) * (len(header) - 1)))


def verdict(inspection: Inspection) -> str:
  if inspection.blessed:
    return 'blessed: yes (cleared every threshold)'
  return 'blessed: NO (' + ('; '.join(inspection.failures) or 'see the evaluation') + ')'


def render(inspection: Inspection) -> str:
  """The slice table, the robustness table and the verdict, as `fakedetect inspect` prints them."""
  lines = [f'evaluation: {inspection.evaluation}' +
           (f' (run {inspection.run_id})' if inspection.run_id else ''), '',
           _table(['slice', *TABLE_METRICS], _rows(inspection))]
  if inspection.robustness:
    rob = inspection.robustness
    lines += ['', f"under perturbation ({rob.get('split')} split, at the model's threshold "
              f"{_fmt(rob.get('threshold'))}):",
              _table(['perturbation', *ROBUSTNESS_METRICS], _robustness_rows(inspection)),
              f"worst: {rob.get('worst')} (accuracy {_fmt(rob.get('worst_accuracy'))}); bar "
              f"{_fmt(rob.get('min_accuracy')) if rob.get('min_accuracy') else 'off'}"]
    for cls, title in (('real', 'reals called fake'), ('fake', 'fakes called real')):
      mistakes = (rob.get('mistakes') or {}).get(cls)
      if mistakes:
        lines += [f'surest mistakes, {title}:'] + [
            f"  {m['path']}  P(fake) {_fmt(m['fake_probability'])}" for m in mistakes]
  lines += ['', verdict(inspection)]
  return '\n'.join(lines)


# -- HTML ------------------------------------------------------------------------------------

_TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader('fakedetect', 'templates'),
                                autoescape=True, trim_blocks=True, lstrip_blocks=True)


def _html_table(header: List[str], rows: List[List[Any]]) -> markupsafe.Markup:
  return markupsafe.Markup(_table(header, rows, tablefmt='html'))  # tabulate escapes the cells


def write_report(inspection: Inspection, out_dir: str, plots: Dict[str, str]) -> str:
  """index.html: verdict, slice table, robustness table and the PNGs (relative links)."""
  page = _TEMPLATES.get_template('report.html.j2').render(
      inspection=inspection, verdict=verdict(inspection), threshold=_fmt(inspection.threshold),
      slice_table=_html_table(['slice', *TABLE_METRICS], _rows(inspection)),
      robustness_table=(_html_table(['perturbation', *ROBUSTNESS_METRICS],
                                    _robustness_rows(inspection))
                        if inspection.robustness else None),
      plots={name: os.path.relpath(path, out_dir) for name, path in plots.items()})
  path = os.path.join(out_dir, 'index.html')
  with output_files.atomic_write(path) as f:
    f.write(page)
  return path


def inspect(target: str = 'outputs', out_dir: Optional[str] = None):
  """Loads, writes the plots and the report; returns (Inspection, printed text, report path)."""
  inspection = load(target)
  out_dir = out_dir or os.path.join(inspection.output_dir, names.REPORT_DIR)
  plots = report_plots.write_plots(
      inspection.evaluation, {name: inspection.slices[name] for name in
                              _slice_order(inspection.slices)},
      out_dir, threshold=inspection.threshold, robustness=inspection.robustness)
  report = write_report(inspection, out_dir, plots)
  return inspection, render(inspection), report
