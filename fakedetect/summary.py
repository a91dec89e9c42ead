"""The run summary: what a run ingested, found, measured, decided and pushed.

Read back from ML Metadata through fakedetect/run_records.py (the latest pipeline run's
executions and their output artifacts), so the summary describes what the pipeline really did,
cached steps included. `fakedetect run` prints it and writes it as summary.json.
"""

import json
import os
import shutil
from typing import Any, Dict, List

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.types import artifact_utils

from fakedetect import output_files
from fakedetect import run_records
from fakedetect.components import evaluation_results
from fakedetect.components import metrics as metrics_lib
from fakedetect.components import views
from fakedetect.pipeline import config as config_lib
from fakedetect.pipeline import names
from fakedetect.pipeline.config import PipelineConfig


def _anomalies(artifact) -> Dict[str, List[str]]:
  if artifact is None:
    return {}
  split_names = artifact_utils.decode_split_names(
      artifact.properties['split_names'].string_value)
  found = {}
  for split in split_names:
    path = os.path.join(artifact.uri, f'Split-{split}', 'SchemaDiff.pb')
    if not tf.io.gfile.exists(path):
      continue
    anomalies = anomalies_pb2.Anomalies()
    anomalies.ParseFromString(tf.io.gfile.GFile(path, 'rb').read())
    problems = [f'{feature}: {info.short_description}'
                for feature, info in anomalies.anomaly_info.items()]
    if anomalies.HasField('dataset_anomaly_info'):
      problems.append(f'dataset: {anomalies.dataset_anomaly_info.short_description}')
    if problems:
      found[split] = problems
  return found


def _read_json(artifact, file_name: str) -> Dict[str, Any]:
  """A JSON file inside an artifact folder; {} when the run has no such artifact or file."""
  if artifact is None:
    return {}
  path = os.path.join(artifact.uri, file_name)
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path) as f:
    return json.loads(f.read())


def collect(config: PipelineConfig) -> Dict[str, Any]:
  """The summary of the latest run in config.output_dir, as summary.json keeps it."""
  # The modules that write the files inside these artifacts name them; they import TF and Keras.
  from fakedetect.components import robustness  # pylint: disable=g-import-not-at-top
  from fakedetect.components import train  # pylint: disable=g-import-not-at-top
  from fakedetect.components.image_example_gen import report as ingest_report  # pylint: disable=g-import-not-at-top
  run = run_records.RunRecords(config.metadata_path).latest_run()
  report = _read_json(run.artifact(names.IMAGE_EXAMPLE_GEN, 'report'), ingest_report.REPORT_FILE)

  summary: Dict[str, Any] = {
      'run_id': run.run_id,
      'data_dir': report.get('data_dir', os.path.abspath(config.data.data_dir)),
      'layout': report.get('layout'),
      'class_folders': report.get('class_folders', {}),
      'links_not_followed': report.get('links_not_followed', 0),
      'files_found': report.get('files_found'),
      'ingested': report.get('ingested'),
      'quarantined': report.get('quarantined', []),
      'counts': report.get('counts', {}),
      'data_warnings': report.get('warnings', []),
      'runner': {'profile': config.runner.profile, 'workers': config.runner.workers,
                 'description': config_lib.describe_runner(config.runner),
                 'beam_pipeline_args': config_lib.beam_pipeline_args(config.runner)},
      'components': {node: run.state(node) for node in run.node_ids},
      'component_seconds': {node: run.seconds(node) for node in run.node_ids},
      'anomalies': _anomalies(run.artifact(names.EXAMPLE_VALIDATOR, 'anomalies')),
      'eval_split': config.gate.eval_split,
      'model_input': {'view': config.image.view, 'image_size': config.image.size,
                      'crop_size': config.image.crop_size,
                      'native_size': config.image.native_size,
                      'backbone': config.model.backbone, 'filter': config.model.filter,
                      'weights': config.model.weights},
      'metrics': {},
      'metrics_by_slice': {},
      'threshold': None,
      'blessed': False,
      'not_blessed_because': [],
      'pushed_model': None,
  }

  simulation = run.artifact(names.ARTIFACT_SIMULATOR, 'simulation')
  if simulation is not None:
    from fakedetect.components import artifact_simulator  # pylint: disable=g-import-not-at-top
    result = artifact_simulator.read(simulation.uri)
    summary['simulation'] = {key: result.get(key) for key in (
        'mode', 'decoder', 'source', 'simulated', 'requested', 'too_large', 'epochs',
        'dropped_real_fakes', 'final_l1')}
    summary['simulation']['pairs'] = os.path.join(simulation.uri, artifact_simulator.PAIRS_FILE)

  model_run = run.artifact(names.TRAINER, 'model_run')
  if model_run is not None:
    history = _read_json(model_run, train.HISTORY_FILE)
    if history:
      summary['threshold'] = history.get('threshold')
      summary['epochs_run'] = history.get('epochs_run')
      summary['hyperparameters'] = history.get('hyperparameters')
      summary['train_images_per_second'] = history.get('train_images_per_second')
      summary['training_device'] = history.get('device')
      summary['training_precision'] = history.get('precision')
    curves = os.path.join(model_run.uri, train.CURVES_FILE)
    if tf.io.gfile.exists(curves):
      summary['training_curves'] = os.path.join(os.path.abspath(config.output_dir),
                                                train.CURVES_FILE)
      shutil.copyfile(curves, summary['training_curves'])
    summary['tensorboard_logdir'] = model_run.uri

  evaluation = run.artifact(names.EVALUATOR, 'evaluation')
  if evaluation is not None:
    by_slice = evaluation_results.evaluation_metrics(evaluation.uri)
    summary['metrics'] = by_slice.get(evaluation_results.OVERALL, {})
    summary['metrics_by_slice'] = {k: v for k, v in by_slice.items()
                                   if k != evaluation_results.OVERALL}
    summary['evaluation'] = evaluation.uri

  blessing = run.artifact(names.EVALUATOR, 'blessing')
  # The RobustnessGate's blessing is the final one (TFMA gate AND robustness bar); the Pusher
  # reads it. Older runs without the gate fall back to the Evaluator's.
  final_blessing = run.artifact(names.ROBUSTNESS_GATE, 'blessing') or blessing
  summary['blessed'] = bool(run_records.is_blessed(final_blessing))
  if blessing is not None and not run_records.is_blessed(blessing) and evaluation is not None:
    summary['not_blessed_because'] = evaluation_results.validation_failures(evaluation.uri)
  robustness_artifact = run.artifact(names.ROBUSTNESS_GATE, 'robustness')
  if robustness_artifact is not None:
    result = robustness.read(robustness_artifact.uri)
    summary['robustness'] = {name: {k: m[k] for k in ('accuracy', 'precision', 'recall', 'auc',
                                                      'flip_rate')}
                             for name, m in result['perturbations'].items()}
    summary['robustness_worst'] = result['worst']
    summary['min_robust_accuracy'] = result['min_accuracy']
    summary['not_blessed_because'] += result['failures']

  pushed = run.artifact(names.PUSHER, 'pushed_model')
  if run_records.int_property(pushed, 'pushed') == 1:
    summary['pushed_model'] = pushed.custom_properties['pushed_destination'].string_value
  return summary


def write(summary: Dict[str, Any], path: str) -> None:
  """summary.json, written whole; an undefined metric (AUC on one class) is null."""
  with output_files.atomic_write(path) as f:
    json.dump(metrics_lib.json_safe(summary), f, indent=2, sort_keys=True)


def render(summary: Dict[str, Any]) -> str:
  """The short human summary printed at the end of a run."""
  lines = ['', '== fakedetect run summary ==']
  lines.append(f"data: {summary['data_dir']} (layout: {summary.get('layout')})")
  if summary.get('class_folders'):  # which folder became which class
    lines.append('classes: ' + ', '.join(
        f"{name} <- {', '.join(paths[:4])}{' ...' if len(paths) > 4 else ''}"
        for name, paths in summary['class_folders'].items()))
  if summary.get('runner'):
    lines.append(f"Beam: {summary['runner']['description']}")
  lines.append(f"files found {summary['files_found']}, ingested {summary['ingested']}, "
               f"quarantined {len(summary['quarantined'])}")
  for item in summary['quarantined'][:10]:
    lines.append(f"  quarantined {item['path']}: {item['reason']}")
  if len(summary['quarantined']) > 10:
    lines.append(f"  ... and {len(summary['quarantined']) - 10} more (see {names.SUMMARY_FILE})")
  links = summary.get('links_not_followed')
  if links:
    lines.append(f"{links} link{'s' if links > 1 else ''} leaving the data folder not followed; "
                 'set data.follow_outside_links=true to read them')
  for split, by_class in sorted(summary['counts'].items()):
    counts = ', '.join(f'{name} {n}' for name, n in sorted(by_class.items()))
    lines.append(f'  {split}: {counts}')
  simulation = summary.get('simulation')
  if simulation:
    lines.append(_simulation_line(simulation))
  for warning in summary.get('data_warnings', []):
    lines.append(f'warning: {warning}')
  if summary['anomalies']:
    for split, problems in summary['anomalies'].items():
      lines.append(f'anomalies in {split}: ' + '; '.join(problems))
  else:
    lines.append('anomalies: none')
  model_input = summary.get('model_input')
  if model_input and model_input['view'] in (views.GLOBAL, views.LOCAL, views.BOTH):
    view = views.View(model_input['view'], model_input['image_size'], model_input['crop_size'],
                      model_input['native_size'])
    lines.append(f"model: {model_input['backbone']} backbone, filter {model_input['filter']}, "
                 f"weights {model_input['weights']}; view {view.name}: {view.describe()}")
  metrics = summary['metrics']
  if metrics:
    shown = ', '.join(f'{name} {_number(metrics[name])}'
                      for name in ('accuracy', 'precision', 'recall', 'f1', 'auc')
                      if name in metrics)
    lines.append(f"{summary['eval_split']} split ({int(metrics.get('example_count', 0))} "
                 f'images never seen in training): {shown}')
  if summary.get('robustness'):
    worst = summary['robustness_worst']
    bar = summary.get('min_robust_accuracy') or 0
    lines.append(f"under perturbation: worst {worst}, accuracy "
                 f"{_number(summary['robustness'][worst]['accuracy'])} "
                 + (f'(bar {bar:g})' if bar else '(no bar; `fakedetect inspect` shows all)'))
  if summary.get('threshold') is not None:
    lines.append(f"decision threshold: {summary['threshold']:.4f} (chosen on the eval split)")
  if summary['blessed']:
    lines.append('blessed: yes (cleared every threshold)')
  else:
    reasons = '; '.join(summary['not_blessed_because']) or 'see the evaluation'
    lines.append(f'blessed: NO ({reasons})')
  lines.append(f"pushed: {summary['pushed_model'] or 'nothing (not blessed)'}")
  if summary.get('training_curves'):
    lines.append(f"training curves: {summary['training_curves']}")
  return '\n'.join(lines)


def _simulation_line(simulation: Dict[str, Any]) -> str:
  """What the ArtifactSimulator added to (or took from) the training split."""
  line = (f"simulated: {simulation['simulated']} training fakes as {simulation['source']} "
          f"(mode {simulation['mode']}, {simulation['epochs']} epochs of GAN training)")
  if simulation['mode'] == 'only':
    line += f"; {simulation['dropped_real_fakes']} real fakes left out of training"
  if simulation['simulated'] < simulation['requested']:
    line += f" ({simulation['requested']} asked for: the training split has fewer reals"
    line += (f", {simulation['too_large']} too large)" if simulation['too_large'] else ')')
  return line + f"; real/simulated pairs: {simulation['pairs']}"


def _number(value: Any) -> str:
  """A metric as printed: four decimals, or n/a where it is undefined (AUC on one class)."""
  value = metrics_lib.defined(value)
  return metrics_lib.UNDEFINED if value is None else f'{value:.4f}'
