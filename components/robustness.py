"""RobustnessGate: the candidate model scored under perturbations; the pipeline's final blessing.

Placed after the Evaluator (TFMA gate) and before the Pusher:

  Evaluator.blessing ─┐
  Trainer.model ──────┼─> RobustnessGate ─> robustness (robustness.json), blessing ─> Pusher
  ExampleGen.examples ┘

It loads the candidate SavedModel, scores the gate's split (gate.eval_split, never seen by
training) through `serving_default` on the raw file bytes, once untouched and once per perturbation
(components/perturb.py), and writes accuracy / precision / recall / AUC per perturbation. Its
`blessing` is a ModelBlessing that is blessed only if the Evaluator blessed the model AND accuracy
under the worst perturbation clears `gate.min_robust_accuracy` (0 = off). The Pusher reads this
blessing, and the latest-blessed-model Resolver reads only this blessing, so a model refused here
is neither pushed nor used as the next baseline.
"""

import json
import os
from typing import Any, Dict, List

import numpy as np
import tensorflow as tf
from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.annotations import OutputArtifact
from tfx.dsl.component.experimental.annotations import Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact as artifact_lib
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from fakedetect.components import features
from fakedetect.components import metrics
from fakedetect.components import perturb
from fakedetect.components import scoring

RESULT_FILE = 'robustness.json'
BLESSED_FILE, NOT_BLESSED_FILE = 'BLESSED', 'NOT_BLESSED'


class Robustness(artifact_lib.Artifact):
  """robustness.json: metrics per perturbation and the robustness verdict."""
  TYPE_NAME = 'fakedetect.Robustness'  # KFP v2 imports it by this name (fakedetect/__init__.py)


def read_examples(examples_uri: str, split: str) -> List[Dict[str, Any]]:
  """The raw examples of one split: {image_bytes, label, source, format, ...} per example."""
  pattern = os.path.join(examples_uri, f'Split-{split}', '*')
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise ValueError(f'No examples for split {split!r} under {examples_uri}.')
  spec = {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
          features.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
          features.PATH_KEY: tf.io.FixedLenFeature([], tf.string, default_value=''),
          features.SOURCE_KEY: tf.io.FixedLenFeature([], tf.string, default_value='')}
  rows = []
  for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
    parsed = tf.io.parse_single_example(record, spec)
    rows.append({'image_bytes': parsed[features.IMAGE_KEY].numpy(),
                 'label': int(parsed[features.LABEL_KEY].numpy()),
                 'path': parsed[features.PATH_KEY].numpy().decode('utf-8', 'replace'),
                 'source': parsed[features.SOURCE_KEY].numpy().decode('utf-8', 'replace')})
  return rows


def confident_mistakes(rows: List[Dict[str, Any]], probabilities: np.ndarray,
                       decisions: np.ndarray, per_class: int = 5) -> Dict[str, List[Dict]]:
  """The wrong verdicts the model was surest of, per true class ('real': reals called fake,
  highest P(fake) first; 'fake': fakes called real, lowest first): where it fails, by file."""
  mistakes = {}
  for label, name in enumerate(features.LABEL_NAMES):
    wrong = [i for i, row in enumerate(rows) if row['label'] == label and decisions[i] != label]
    wrong.sort(key=lambda i: -probabilities[i] if label == 0 else probabilities[i])
    mistakes[name] = [{'path': rows[i]['path'], 'source': rows[i]['source'],
                       'fake_probability': float(probabilities[i])} for i in wrong[:per_class]]
  return mistakes


def evaluate(scorer: scoring.Scorer, rows: List[Dict[str, Any]], perturbations=(),
             batch_size: int = 64) -> Dict[str, Any]:
  """{'perturbations': {name: metrics}, 'worst': name, 'mistakes': confident_mistakes, ...}
  for the model on these examples."""
  labels = np.array([row['label'] for row in rows])
  by_name: Dict[str, Dict[str, float]] = {}
  clean_decisions = None
  for name in perturb.names(perturbations):
    images = [perturb.perturb(row['image_bytes'], name) for row in rows]
    probabilities, decisions = scorer.score(images, batch_size)
    by_name[name] = metrics.classification(labels, probabilities, decisions)
    if clean_decisions is None:
      clean_decisions = decisions
      mistakes = confident_mistakes(rows, probabilities, decisions)
    # How often the perturbation alone changes the model's verdict on the same image.
    by_name[name]['flip_rate'] = float((decisions != clean_decisions).mean())
    by_name[name]['accuracy_drop'] = by_name[perturb.NONE]['accuracy'] - by_name[name]['accuracy']
    by_name[name]['description'] = perturb.DESCRIPTIONS[name]
  perturbed = [n for n in by_name if n != perturb.NONE]
  worst = min(perturbed, key=lambda n: by_name[n]['accuracy']) if perturbed else perturb.NONE
  return {'perturbations': by_name, 'worst': worst,
          'worst_accuracy': by_name[worst]['accuracy'], 'mistakes': mistakes}


def verdict(result: Dict[str, Any], min_accuracy: float) -> List[str]:
  """Why the model fails the robustness bar, one line per perturbation below it (empty: passes)."""
  if min_accuracy <= 0:
    return []
  return [f"accuracy under {name} {m['accuracy']:.4f} is below the robustness bar "
          f"{min_accuracy:g} (short by {min_accuracy - m['accuracy']:.4f})"
          for name, m in result['perturbations'].items()
          if name != perturb.NONE and m['accuracy'] < min_accuracy]


def read(uri: str) -> Dict[str, Any]:
  """robustness.json, perturbations in the order of perturb.PERTURBATIONS (`none` first)."""
  with tf.io.gfile.GFile(os.path.join(uri, RESULT_FILE)) as f:
    result = json.loads(f.read())
  by_name = result.get('perturbations', {})
  order = list(perturb.PERTURBATIONS)
  result['perturbations'] = {name: by_name[name] for name in sorted(
      by_name, key=lambda n: order.index(n) if n in order else len(order))}
  return result


@component
def RobustnessGate(  # pylint: disable=invalid-name
    examples: InputArtifact[standard_artifacts.Examples],
    model: InputArtifact[standard_artifacts.Model],
    model_blessing: InputArtifact[standard_artifacts.ModelBlessing],
    robustness: OutputArtifact[Robustness],
    blessing: OutputArtifact[standard_artifacts.ModelBlessing],
    split: Parameter[str] = 'test',
    perturbations: Parameter[str] = '[]',
    min_accuracy: Parameter[float] = 0.0,
    batch_size: Parameter[int] = 64,
) -> None:
  """Scores `split` under each perturbation; blessed = Evaluator blessed AND robust enough."""
  rows = read_examples(examples.uri, split)
  scorer = scoring.Scorer(path_utils.serving_model_path(model.uri))
  result = evaluate(scorer, rows, json.loads(perturbations), batch_size)
  failures = verdict(result, min_accuracy)
  evaluator_blessed = model_blessing.get_int_custom_property('blessed') == 1
  result.update({
      'split': split,
      'min_accuracy': min_accuracy,
      'robust': not failures,
      'failures': failures,
      'evaluator_blessed': evaluator_blessed,
      'blessed': evaluator_blessed and not failures,
      'model': model.uri,
      'threshold': scorer.threshold,  # the one its verdicts were made at
  })
  with tf.io.gfile.GFile(os.path.join(robustness.uri, RESULT_FILE), 'w') as f:
    f.write(json.dumps(result, indent=2))  # perturbations in run order
  robustness.set_int_custom_property('robust', int(not failures))
  robustness.set_float_custom_property('worst_accuracy', float(result['worst_accuracy']))

  # The same properties the Evaluator sets, so the Pusher and LatestBlessedModelStrategy read it.
  blessing.set_string_custom_property('current_model', model.uri)
  blessing.set_int_custom_property('current_model_id', model.id)
  blessing.set_int_custom_property('blessed', int(result['blessed']))
  with tf.io.gfile.GFile(os.path.join(
      blessing.uri, BLESSED_FILE if result['blessed'] else NOT_BLESSED_FILE), 'w') as f:
    f.write('')
