"""Test-time flip averaging (train.flip_average) on one trained model: with it and without.

Takes a run's latest Trainer model, exports it once more with flip_average on, and scores the
run's eval and test splits through both exports' `serving_default` (the Scorer), so the two rows
differ only in the averaging, not in training noise. Each row's threshold is chosen on its own
eval scores, as the Trainer chooses it (train.threshold_metric=f1); the test rows show accuracy
at that threshold and at a fixed 0.5, and ROC AUC.

  .venv/bin/python benchmarks/flip_average.py --output /tmp/fakedetect-cifake/run-all
"""

import argparse
import os
import sys
import tempfile

import numpy as np
from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from fakedetect import run_records
from fakedetect.components import export, metrics, robustness, scoring
from fakedetect.pipeline import names


def trained_model(output: str):
  """(Format-Serving folder, transform graph uri, ExampleGen examples uri) of the latest run."""
  from tfx.utils import path_utils  # pylint: disable=g-import-not-at-top
  run = run_records.latest_run(output)
  trainer = run.execution_id(names.TRAINER)
  model = run.artifact(names.TRAINER, 'model')
  if model is None:
    sys.exit(f'The latest run in {output} has no trained model: run `fakedetect run` there first.')
  transform_graph = run.records.input(trainer, 'transform_graph')
  examples = run.records.source_examples(trainer)
  return path_utils.serving_model_path(model.uri), transform_graph.uri, examples.uri


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--output', required=True, help='a `fakedetect run --output` folder')
  args = parser.parse_args()

  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  served, transform_graph, examples = trained_model(args.output)
  metadata = export.read_metadata(served)
  plain = scoring.Scorer(served)
  averaged_dir = tempfile.mkdtemp(prefix='flip_average-')
  export.export(keras.models.load_model(os.path.join(served, export.KERAS_FILE), compile=False),
                tft.TFTransformOutput(transform_graph), averaged_dir, metadata['threshold'],
                plain.view, {'backbone': metadata['backbone']}, flip_average=True)
  splits = {split: robustness.read_examples(examples, split) for split in ('eval', 'test')}

  rows = []
  for name, scorer in (('plain', plain), ('flip_average', scoring.Scorer(averaged_dir))):
    scored = {}
    for split, examples_of_split in splits.items():
      probabilities, _ = scorer.score([r['image_bytes'] for r in examples_of_split], 256)
      scored[split] = (np.array([r['label'] for r in examples_of_split]), probabilities)
    threshold = metrics.best_threshold(*scored['eval'], 'f1')
    labels, probabilities = scored['test']
    rows.append([name, f'{threshold:.4f}', f'{np.mean((probabilities >= threshold) == labels):.4f}',
                 f'{np.mean((probabilities >= 0.5) == labels):.4f}',
                 f'{metrics.auc(labels, probabilities):.4f}'])
  print(f"test split: {len(splits['test'])} images")
  print(tabulate(rows, headers=['scores', 'threshold (eval F1)', 'accuracy', 'accuracy at 0.5',
                                'ROC AUC']))


if __name__ == '__main__':
  main()
