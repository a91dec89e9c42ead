"""The run summary: what a run ingested, found, measured, decided and pushed.

Read back from ML Metadata (the latest pipeline run's executions and their output artifacts), so
the summary describes what the pipeline really did, cached steps included.
"""

import json
import os
import shutil
from typing import Any, Dict, List, Optional

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.types import artifact_utils

from fakedetect.components import evaluation_results
from fakedetect.pipeline import config as config_lib
from fakedetect.pipeline.config import PipelineConfig



class RunOutputs:
  """Output artifacts per node of the latest pipeline run, from MLMD."""

  def __init__(self, config: PipelineConfig):
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = config.metadata_path
    connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    self._store = metadata_store.MetadataStore(connection)
    runs = [c for c in self._store.get_contexts_by_type('pipeline_run')]
    if not runs:
      raise LookupError(f'No pipeline run recorded in {config.metadata_path}.')
    self.run = max(runs, key=lambda c: (c.create_time_since_epoch, c.id))
    self.run_id = self.run.name
    self._by_node: Dict[str, metadata_store_pb2.Execution] = {}
    node_type = self._store.get_context_type('node')
    for execution in self._store.get_executions_by_context(self.run.id):
      for context in self._store.get_contexts_by_execution(execution.id):
        if context.type_id == node_type.id:
          node_id = context.name.split('.', 1)[-1]
          if node_id not in self._by_node or execution.id > self._by_node[node_id].id:
            self._by_node[node_id] = execution

  @property
  def node_ids(self) -> List[str]:
    return sorted(self._by_node, key=lambda node: self._by_node[node].id)

  def state(self, node_id: str) -> Optional[str]:
    execution = self._by_node.get(node_id)
    if execution is None:
      return None
    return metadata_store_pb2.Execution.State.Name(execution.last_known_state).lower()

  def seconds(self, node_id: str) -> Optional[float]:
    """Wall time of the node's execution in this run (near zero when it was cached)."""
    execution = self._by_node.get(node_id)
    if execution is None:
      return None
    return (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000

  def artifacts(self, node_id: str, output_key: str) -> List[metadata_store_pb2.Artifact]:
    execution = self._by_node.get(node_id)
    if execution is None:
      return []
    ids = []
    for event in self._store.get_events_by_execution_ids([execution.id]):
      if event.type != metadata_store_pb2.Event.OUTPUT:
        continue
      steps = [s.key for s in event.path.steps if s.HasField('key')]
      if output_key in steps:
        ids.append(event.artifact_id)
    return self._store.get_artifacts_by_id(ids) if ids else []

  def artifact(self, node_id: str, output_key: str) -> Optional[metadata_store_pb2.Artifact]:
    found = self.artifacts(node_id, output_key)
    return found[0] if found else None


def _int_property(artifact, name: str) -> Optional[int]:
  if artifact is None or name not in artifact.custom_properties:
    return None
  return artifact.custom_properties[name].int_value


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


def collect(config: PipelineConfig) -> Dict[str, Any]:
  outputs = RunOutputs(config)
  report_artifact = outputs.artifact('ImageExampleGen', 'report')
  report: Dict[str, Any] = {}
  if report_artifact is not None:
    with tf.io.gfile.GFile(os.path.join(report_artifact.uri, 'report.json')) as f:
      report = json.loads(f.read())

  summary: Dict[str, Any] = {
      'run_id': outputs.run_id,
      'data_dir': report.get('data_dir', os.path.abspath(config.data.data_dir)),
      'layout': report.get('layout'),
      'files_found': report.get('files_found'),
      'ingested': report.get('ingested'),
      'quarantined': report.get('quarantined', []),
      'counts': report.get('counts', {}),
      'data_warnings': report.get('warnings', []),
      'runner': {'profile': config.runner.profile, 'workers': config.runner.workers,
                 'description': config_lib.describe_runner(config.runner),
                 'beam_pipeline_args': config_lib.beam_pipeline_args(config.runner)},
      'components': {node: outputs.state(node) for node in outputs.node_ids},
      'component_seconds': {node: outputs.seconds(node) for node in outputs.node_ids},
      'anomalies': _anomalies(outputs.artifact('ExampleValidator', 'anomalies')),
      'eval_split': config.gate.eval_split,
      'metrics': {},
      'metrics_by_slice': {},
      'threshold': None,
      'blessed': False,
      'not_blessed_because': [],
      'pushed_model': None,
  }

  model_run = outputs.artifact('Trainer', 'model_run')
  if model_run is not None:
    history_path = os.path.join(model_run.uri, 'history.json')
    if tf.io.gfile.exists(history_path):
      history = json.loads(tf.io.gfile.GFile(history_path).read())
      summary['threshold'] = history.get('threshold')
      summary['epochs_run'] = history.get('epochs_run')
      summary['hyperparameters'] = history.get('hyperparameters')
      summary['train_images_per_second'] = history.get('train_images_per_second')
      summary['training_device'] = history.get('device')
      summary['training_precision'] = history.get('precision')
    curves = os.path.join(model_run.uri, 'training_curves.png')
    if tf.io.gfile.exists(curves):
      summary['training_curves'] = os.path.join(os.path.abspath(config.output_dir),
                                                'training_curves.png')
      shutil.copyfile(curves, summary['training_curves'])
    summary['tensorboard_logdir'] = model_run.uri

  evaluation = outputs.artifact('Evaluator', 'evaluation')
  if evaluation is not None:
    by_slice = evaluation_results.evaluation_metrics(evaluation.uri)
    summary['metrics'] = by_slice.get(evaluation_results.OVERALL, {})
    summary['metrics_by_slice'] = {k: v for k, v in by_slice.items() if k != evaluation_results.OVERALL}
    summary['evaluation'] = evaluation.uri

  blessing = outputs.artifact('Evaluator', 'blessing')
  # The RobustnessGate's blessing is the final one (TFMA gate AND robustness bar); the Pusher
  # reads it. Older runs without the gate fall back to the Evaluator's.
  final_blessing = outputs.artifact('RobustnessGate', 'blessing') or blessing
  summary['blessed'] = _int_property(final_blessing, 'blessed') == 1
  if (blessing is not None and _int_property(blessing, 'blessed') != 1
      and evaluation is not None):
    summary['not_blessed_because'] = evaluation_results.validation_failures(evaluation.uri)
  robustness_artifact = outputs.artifact('RobustnessGate', 'robustness')
  if robustness_artifact is not None:
    from fakedetect.components import robustness  # pylint: disable=g-import-not-at-top
    result = robustness.read(robustness_artifact.uri)
    summary['robustness'] = {name: {k: m[k] for k in ('accuracy', 'precision', 'recall', 'auc',
                                                      'flip_rate')}
                             for name, m in result['perturbations'].items()}
    summary['robustness_worst'] = result['worst']
    summary['min_robust_accuracy'] = result['min_accuracy']
    summary['not_blessed_because'] += result['failures']

  pushed = outputs.artifact('Pusher', 'pushed_model')
  if _int_property(pushed, 'pushed') == 1:
    summary['pushed_model'] = pushed.custom_properties['pushed_destination'].string_value
  return summary


def write(summary: Dict[str, Any], path: str) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(summary, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def render(summary: Dict[str, Any]) -> str:
  """The short human summary printed at the end of a run."""
  lines = ['', '== fakedetect run summary ==']
  lines.append(f"data: {summary['data_dir']} (layout: {summary.get('layout')})")
  if summary.get('runner'):
    lines.append(f"Beam: {summary['runner']['description']}")
  lines.append(f"files found {summary['files_found']}, ingested {summary['ingested']}, "
               f"quarantined {len(summary['quarantined'])}")
  for item in summary['quarantined'][:10]:
    lines.append(f"  quarantined {item['path']}: {item['reason']}")
  if len(summary['quarantined']) > 10:
    lines.append(f"  ... and {len(summary['quarantined']) - 10} more (see summary.json)")
  for split, by_class in sorted(summary['counts'].items()):
    counts = ', '.join(f'{name} {n}' for name, n in sorted(by_class.items()))
    lines.append(f'  {split}: {counts}')
  for warning in summary.get('data_warnings', []):
    lines.append(f'warning: {warning}')
  if summary['anomalies']:
    for split, problems in summary['anomalies'].items():
      lines.append(f'anomalies in {split}: ' + '; '.join(problems))
  else:
    lines.append('anomalies: none')
  metrics = summary['metrics']
  if metrics:
    shown = ', '.join(f'{name} {metrics[name]:.4f}'
                      for name in ('accuracy', 'precision', 'recall', 'f1', 'auc')
                      if name in metrics)
    lines.append(f"{summary['eval_split']} split ({int(metrics.get('example_count', 0))} "
                 f'images never seen in training): {shown}')
  if summary.get('robustness'):
    worst = summary['robustness_worst']
    bar = summary.get('min_robust_accuracy') or 0
    lines.append(f"under perturbation: worst {worst}, accuracy "
                 f"{summary['robustness'][worst]['accuracy']:.4f} "
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
