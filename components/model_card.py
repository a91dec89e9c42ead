"""ModelCardGenerator: the model card of every run, written after the Pusher.

  ImageExampleGen.report ──────────────┐
  ArtifactSimulator.simulation ────────┤ (when simulate.enabled)
  Evaluator.evaluation ────────────────┤
  RobustnessGate.robustness, .blessing ┼─> ModelCardGenerator ─> model_card (model_card.md, .html)
  Trainer.model, .model_run ───────────┤     and, when pushed, <pushed version>/assets.extra/
  Pusher.pushed_model ─────────────────┘

Everything the card says is read from those artifacts (no ML Metadata query, no summary.json), so
a Kubeflow / Vertex run gets the same card as a local one. TF Serving loads only saved_model.pb
and variables/, so assets.extra/ travels with the pushed model unseen. Where the data cannot
support a claim, the card says so instead of making it. Python reads and formats the facts
(tables through tabulate), templates/model_card.md.j2 holds the text, the markdown library makes
the HTML.
"""

import dataclasses
import json
import math
import os
from typing import Any, Dict, List, Optional

import jinja2
import markdown
import tabulate
import tensorflow as tf
from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.annotations import OutputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact as artifact_lib
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from fakedetect.components import artifact_simulator
from fakedetect.components import evaluation_results
from fakedetect.components import export
from fakedetect.components import metrics
from fakedetect.components import perturb
from fakedetect.components import robustness as robustness_lib
from fakedetect.components import views
from fakedetect.components.image_example_gen import component as example_gen
from fakedetect.components.image_example_gen import report as ingest_report
from fakedetect.pipeline import names

MARKDOWN_FILE, HTML_FILE = 'model_card.md', 'model_card.html'
# Beside the pushed model, where export.METADATA_FILE is.
CARD_FILE = os.path.join(os.path.dirname(export.METADATA_FILE), MARKDOWN_FILE)
_METRICS = ('accuracy', 'precision', 'recall', 'f1', 'auc', 'pr_auc')
_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(os.path.join(os.path.dirname(__file__), 'templates')),
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    autoescape=jinja2.select_autoescape(['html.j2'], default_for_string=False),
    keep_trailing_newline=True)


class ModelCard(artifact_lib.Artifact):
  """model_card.md and model_card.html: the model card of the run's candidate model."""
  TYPE_NAME = 'fakedetect.ModelCard'  # KFP v2 imports it by this name (fakedetect/__init__.py)


@dataclasses.dataclass
class Facts:
  """What a card is built from, read from one run's artifacts by `read_facts`."""
  report: Dict[str, Any]  # the ingest report
  metrics: Dict[str, Dict[str, float]]  # TFMA metrics per slice, evaluation_results.OVERALL too
  bars: List[str]  # the Evaluator's thresholds, in words
  robustness: Dict[str, Any]  # robustness.json
  metadata: Dict[str, Any]  # the model's export.METADATA_FILE
  history: Dict[str, Any]  # the Trainer's history.json
  blessed: bool  # the RobustnessGate's (final) blessing
  refusals: List[str]  # why the gate refused the model; empty when blessed
  model_uri: str
  pushed_dir: Optional[str] = None  # the version folder the Pusher wrote; None: not pushed
  simulation: Optional[Dict[str, Any]] = None  # simulation.json, when the ArtifactSimulator ran


def wilson_interval(successes: float, n: float, z: float = 1.96):
  """95% Wilson score interval of a proportion: how far a small test set can be trusted."""
  if not n:
    return float('nan'), float('nan')
  p = successes / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return max(0.0, centre - half), min(1.0, centre + half)


def _json(path: str) -> Dict[str, Any]:
  with tf.io.gfile.GFile(path) as f:
    return json.loads(f.read())


def read_facts(report_uri: str, evaluation_uri: str, robustness_uri: str, model_uri: str,
               model_run_uri: str, blessed: bool, pushed_dir: Optional[str] = None,
               simulation_uri: Optional[str] = None) -> Facts:
  """The facts of a card from the URIs of the run's artifacts (the component's inputs)."""
  # Here, not at the top: train imports Keras and keras-tuner, which building the DAG need not.
  from fakedetect.components import train  # pylint: disable=g-import-not-at-top
  rob = robustness_lib.read(robustness_uri)
  refusals = [] if blessed else (evaluation_results.validation_failures(evaluation_uri)
                                 + rob.get('failures', []))
  return Facts(
      report=_json(os.path.join(report_uri, ingest_report.REPORT_FILE)),
      metrics=evaluation_results.evaluation_metrics(evaluation_uri),
      bars=evaluation_results.gate_bars(evaluation_uri), robustness=rob,
      metadata=export.read_metadata(path_utils.serving_model_path(model_uri)),
      history=_json(os.path.join(model_run_uri, train.HISTORY_FILE)), blessed=blessed,
      refusals=refusals, model_uri=model_uri, pushed_dir=pushed_dir,
      simulation=artifact_simulator.read(simulation_uri) if simulation_uri else None)


def _table(header: List[str], rows: List[List[Any]]) -> str:
  """A Markdown (pipe) table; floats to 3 decimals, missing and undefined values (NaN: AUC on a
  one-class slice) as n/a, as every other report prints them."""
  rows = [[metrics.defined(c) for c in row] for row in rows]
  return tabulate.tabulate(rows, headers=header, tablefmt='github', floatfmt='.3f',
                           missingval=metrics.UNDEFINED)


def _data(report: Dict[str, Any]) -> Dict[str, Any]:
  """The training data section: counts, sources and formats per class, size profiles."""
  counts = report.get('counts') or {}
  classes = sorted({c for by_class in counts.values() for c in by_class})
  tables = [('Images per split and class', _table(
      ['split'] + classes, [[split] + [counts[split].get(c, 0) for c in classes]
                            for split in sorted(counts)]))] if counts else []
  for title, key in (('Sources (camera or generator) per class', 'sources'),
                     ('File formats per class', 'formats')):
    by_class = report.get(key) or {}
    if by_class:
      tables.append((title, _table(['class', key[:-1], 'images'],
                                   [[c, name, n] for c, names in sorted(by_class.items())
                                    for name, n in sorted(names.items())])))
  profiles = []
  for cls, profile in sorted((report.get('profile') or {}).items()):
    width, height = profile.get('width', {}), profile.get('height', {})
    profiles.append(
        f"{cls}: width {width.get('min')}-{width.get('max')} px (median {width.get('median')}), "
        f"height {height.get('min')}-{height.get('max')} px; size buckets " + ', '.join(
            f'{b} {v:.0%}' for b, v in sorted(profile.get('size_bucket_shares', {}).items())))
  return {
      'data_dir': report.get('data_dir'), 'layout': report.get('layout'),
      'files_found': report.get('files_found'), 'ingested': report.get('ingested'),
      'quarantined': len(report.get('quarantined') or []),
      'quarantine_reasons': ', '.join(
          f'{r}: {n}' for r, n in sorted((report.get('quarantine_reasons') or {}).items())),
      'split_ratios': ', '.join(f'{k} {v}%' for k, v in (report.get('split_ratios') or {}).items()),
      'data_tables': tables, 'profiles': profiles, 'data_warnings': report.get('warnings') or []}


def _evaluation(facts: Facts) -> Dict[str, Any]:
  """The evaluation section: TFMA metrics overall and per slice, robustness, mistakes."""
  overall = facts.metrics.get(evaluation_results.OVERALL, {})
  by_slice = {k: v for k, v in facts.metrics.items() if k != evaluation_results.OVERALL}
  n = int(overall.get('example_count') or 0)
  rob = facts.robustness
  bars = list(facts.bars)
  if rob.get('min_accuracy'):
    bars.append(f"accuracy under every perturbation >= {rob['min_accuracy']:g}")
  mistakes = None
  if rob.get('mistakes') is not None:
    mistakes = [(title, _table(['path', 'source', 'P(fake)'],
                               [[f"`{m['path']}`", m['source'], m['fake_probability']]
                                for m in rob['mistakes'].get(cls) or []]) if
                 rob['mistakes'].get(cls) else None)
                for cls, title in (('real', 'Real images called fake'),
                                   ('fake', 'Fake images called real'))]
  interval = (wilson_interval(overall['accuracy'] * n, n)
              if n and 'accuracy' in overall else None)
  return {
      'example_count': n, 'bars': bars or ['none'],
      'metrics_table': _table(['metric', 'value'],
                              [[m, overall[m]] for m in _METRICS if m in overall]),
      'interval': f'{interval[0]:.3f}-{interval[1]:.3f}' if interval else None,
      'slice_table': _table(['slice', 'images'] + list(_METRICS),
                            [[name, int(m.get('example_count', 0))] + [m.get(k) for k in _METRICS]
                             for name, m in sorted(by_slice.items())]) if by_slice else None,
      'small_slices': sorted(name for name, m in by_slice.items()
                             if m.get('example_count', 0) < 30),
      'robustness_table': _table(
          ['perturbation', 'what', 'accuracy', 'precision', 'recall', 'auc', 'flip_rate'],
          [[name, m.get('description'), m.get('accuracy'), m.get('precision'), m.get('recall'),
            m.get('auc'), m.get('flip_rate')] for name, m in rob['perturbations'].items()]),
      'mistakes': mistakes}


def _limitations(facts: Facts) -> Dict[str, Any]:
  """What the data cannot support: sources per class, format imbalance, robustness measured."""
  report, rob = facts.report, facts.robustness
  shares = [p.get('format_shares', {}) for p in (report.get('profile') or {}).values()]
  gap = (max(abs(shares[0].get(f, 0) - shares[1].get(f, 0)) for f in {*shares[0], *shares[1]})
         if len(shares) == 2 and (shares[0] or shares[1]) else 0)
  drop = rob['perturbations'].get(rob.get('worst'), {}).get('accuracy_drop')
  perturbed = len([name for name in rob['perturbations'] if name != perturb.NONE])
  return {
      'sources': [(cls, sorted(names)) for cls, names in sorted(
          (report.get('sources') or {}).items())],
      'format_gap': f'{gap:.0%}' if gap > 0.1 else None,
      'perturbed': perturbed, 'worst': rob.get('worst'),
      'worst_drop': f'{drop:.3f}' if perturbed and drop is not None else None}


def context(facts: Facts) -> Dict[str, Any]:
  """Every value templates/model_card.md.j2 shows, formatted."""
  meta, history = facts.metadata, facts.history
  pushed = facts.pushed_dir
  evaluation = _evaluation(facts)
  precision = history.get('precision')
  return {
      'title': (f'{os.path.basename(os.path.dirname(pushed))} version {os.path.basename(pushed)}'
                if pushed else 'candidate model (not pushed)'),
      'node': names.MODEL_CARD_GENERATOR, 'pushed_dir': pushed, 'model_uri': facts.model_uri,
      'blessed': facts.blessed, 'refusals': facts.refusals,
      'threshold': f"{meta['threshold']:.3f}", 'eval_split': facts.robustness.get('split'),
      **_data(facts.report),
      'device': history.get('device') or 'CPU',
      'precision': precision if precision not in (None, 'float32') else None,
      'epochs_run': history.get('epochs_run') or meta.get('epochs_run'),
      'hyperparameters': ', '.join(f'{k}={v}' for k, v in sorted(
          (history.get('hyperparameters') or meta.get('hyperparameters') or {}).items())),
      'input_view': views.from_metadata(meta).describe(), 'view': views.from_metadata(meta).name,
      'backbone': meta.get('backbone', 'cnn'), 'filter': meta.get('filter', 'none'),
      'weights': meta.get('weights', 'none'),
      'early_stopping': meta.get('early_stopping_metric', 'val_loss'),
      'threshold_metric': meta.get('threshold_metric', 'f1'),
      'simulation': facts.simulation,
      **evaluation, **_limitations(facts)}


def render(facts: Facts) -> str:
  """The card in Markdown."""
  return _TEMPLATES.get_template('model_card.md.j2').render(context(facts))


def to_html(card: str) -> str:
  """The card as an HTML page. Raw HTML in the Markdown is shown as text, not passed through:
  folder, source and file names in the card are the user's data."""
  converter = markdown.Markdown(extensions=['tables'], output_format='html')
  converter.preprocessors.deregister('html_block')
  converter.inlinePatterns.deregister('html')
  title = card.splitlines()[0].lstrip('# ') if card else 'model card'
  return _TEMPLATES.get_template('model_card.html.j2').render(
      title=title, body=converter.convert(card))


def write(directory: str, card: str) -> str:
  """Writes model_card.md and .html into `directory`, each whole or not at all (written beside,
  then renamed); returns the .md path."""
  tf.io.gfile.makedirs(directory)
  for name, text in ((HTML_FILE, to_html(card)), (MARKDOWN_FILE, card)):
    path = os.path.join(directory, name)
    with tf.io.gfile.GFile(path + '.tmp', 'w') as f:
      f.write(text)
    tf.io.gfile.rename(path + '.tmp', path, overwrite=True)
  return os.path.join(directory, MARKDOWN_FILE)


def card_path(pushed_dir: str) -> Optional[str]:
  """The card beside a pushed model, or None when there is none."""
  path = os.path.join(pushed_dir, CARD_FILE)
  return path if tf.io.gfile.exists(path) else None


@component
def ModelCardGenerator(  # pylint: disable=invalid-name
    report: InputArtifact[example_gen.IngestReport],
    evaluation: InputArtifact[standard_artifacts.ModelEvaluation],
    robustness: InputArtifact[robustness_lib.Robustness],
    blessing: InputArtifact[standard_artifacts.ModelBlessing],
    model: InputArtifact[standard_artifacts.Model],
    model_run: InputArtifact[standard_artifacts.ModelRun],
    pushed_model: InputArtifact[standard_artifacts.PushedModel],
    model_card: OutputArtifact[ModelCard],
    simulation: InputArtifact[artifact_simulator.Simulation] = None,
) -> None:
  """Writes the card into its output; when the model was pushed, beside it too."""
  pushed = pushed_model.get_int_custom_property('pushed') == 1
  pushed_dir = pushed_model.get_string_custom_property('pushed_destination') if pushed else None
  facts = read_facts(report.uri, evaluation.uri, robustness.uri, model.uri, model_run.uri,
                     blessing.get_int_custom_property('blessed') == 1, pushed_dir,
                     simulation.uri if simulation else None)
  card = render(facts)
  write(model_card.uri, card)
  if pushed_dir:
    write(os.path.join(pushed_dir, os.path.dirname(CARD_FILE)), card)
