"""Scores a pushed model on a labelled folder it never saw: CIFAKE's official test split, a new
generator's images, a newsroom's own collection.

The folder is read as the ExampleGen reads one (any layout of layouts.py: labels and sources from
the path); each file goes through `serving_default` on its raw bytes, as TF Serving would receive
it, and is labelled by the model's own threshold. Optional perturbations (components/perturb.py)
measure what a platform's re-encoding costs. A file that cannot be scored is counted with its
reason, never dropped silently. Files the model was trained on (same content hash as an example
of its run's training split) are counted, and the figures flagged as optimistic.
"""

import csv
import dataclasses
import hashlib
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
from tabulate import tabulate

from fakedetect import output_files
from fakedetect import run_records
from fakedetect.components import errors
from fakedetect.components import features
from fakedetect.components import image_checks
from fakedetect.components import metrics
from fakedetect.components import perturb
from fakedetect.components import scoring
from fakedetect.components.image_example_gen import folders
from fakedetect.components.image_example_gen import layouts


class EvaluateError(errors.UserError):
  """A user mistake: the message says what to change."""


@dataclasses.dataclass
class Labelled:
  rows: List[Dict[str, Any]]  # {'path', 'image_bytes', 'label', 'source'}
  skipped: List[Tuple[str, str]]  # (path, reason)
  layout: str
  files_found: int


def read_labelled(data_dir: str, split: Optional[str] = None,
                  limits: image_checks.Limits = image_checks.Limits()) -> Labelled:
  """Every file of `data_dir` (only `split`'s, if given) as a row to score, or skipped with why."""
  layout = layouts.detect(data_dir)  # a LayoutError (a UserError) names the layouts it reads
  if split is not None and split not in layout.splits:
    raise EvaluateError(
        f'--split {split}: the {layout.name} layout of {data_dir} has '
        + (f'the splits {", ".join(layout.splits)}.' if layout.splits else
           'no split folders; leave out --split to score every file.'))
  rows, skipped, found = [], [], 0
  for rel_path, problem in layout.list_files(data_dir):
    labelled = None if problem else layout.parse(rel_path)
    if split is not None and labelled is not None and labelled.split != split:
      continue  # another split's file
    found += 1
    if problem:
      skipped.append((rel_path, folders.problem_reason(problem)[1]))
      continue
    if labelled is None:
      skipped.append((rel_path, f'outside the class folders of the {layout.name} layout'))
      continue
    try:
      data = image_checks.read_checked(folders.join(data_dir, rel_path), limits)
    except image_checks.ImageRejected as rejected:
      skipped.append((rel_path, str(rejected)))
      continue
    rows.append({'path': rel_path, 'image_bytes': data, 'label': labelled.label,
                 'source': labelled.source})
  if not rows:
    raise EvaluateError(f'No file of {data_dir}{f" (split {split})" if split else ""} can be '
                        f'scored: {found} found, {len(skipped)} skipped'
                        + (f', e.g. {skipped[0][0]}: {skipped[0][1]}.' if skipped else '.'))
  return Labelled(rows, skipped, layout.name, found)


def evaluate(scorer: scoring.Scorer, labelled: Labelled, perturbations: Sequence[str] = (),
             batch_size: int = 64, progress: bool = False,
             keep_per_file: bool = False) -> Dict[str, Any]:
  """Metrics at the model's threshold, per perturbation ('none' first) and per source.

  keep_per_file adds each file's serving outputs per perturbation under 'per_file' ({name:
  {'fake_probability': [...], 'is_fake': [...]}}), for write_predictions; left out by default.
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  labels = np.array([row['label'] for row in labelled.rows])
  sources = np.array([row['source'] for row in labelled.rows])
  names = perturb.names(list(perturbations) or [perturb.NONE])
  result: Dict[str, Any] = {
      'model': scorer.model_dir, 'threshold': scorer.threshold,
      'layout': labelled.layout, 'files_found': labelled.files_found,
      'scored': len(labelled.rows),
      'skipped': [{'path': path, 'reason': reason} for path, reason in labelled.skipped],
      'perturbations': {}, 'by_source': {}}
  result['seen_in_training'] = training_overlap(scorer.model_dir, labelled)
  if keep_per_file:
    result['per_file'] = {}
  for name in tqdm(names, desc='perturbations', unit='pass', disable=not progress):
    images = [perturb.perturb(row['image_bytes'], name) for row in labelled.rows]
    probabilities, decisions = scorer.score(images, batch_size)
    result['perturbations'][name] = metrics.classification(labels, probabilities, decisions)
    result['perturbations'][name]['description'] = perturb.DESCRIPTIONS[name]
    if keep_per_file:
      result['per_file'][name] = {'fake_probability': probabilities.tolist(),
                                  'is_fake': decisions.tolist()}
    if name == perturb.NONE:
      for source in sorted(set(sources)):
        mine = sources == source
        result['by_source'][source] = metrics.classification(labels[mine], probabilities[mine],
                                                             decisions[mine])
  return result


def training_overlap(model_dir: str, labelled: Labelled) -> Dict[str, Any]:
  """How many scored files the model was trained on, by content: {'count', 'of', 'splits',
  'run_id'}; the count is None, with a 'note' saying why, when it cannot be checked (a model
  copied away from its run's records). Never raises: the check only warns.

  A file counts when its sha256 (features.HASH_KEY, as the ExampleGen writes it) is among the
  examples of the Trainer's splits, which run_records.training_data finds by lineage."""
  seen: Dict[str, Any] = {'count': None, 'of': len(labelled.rows)}
  try:
    data = run_records.training_data(model_dir)
    if data is None:
      return {**seen, 'note': 'no records of the run that trained the model beside it'}
    trained = _content_hashes(data.examples_uri, data.splits)
  except Exception as e:  # pylint: disable=broad-except  (a warning must not stop the command)
    return {**seen, 'note': f'could not read the training examples: {e}'}
  count = sum(hashlib.sha256(row['image_bytes']).hexdigest() in trained for row in labelled.rows)
  return {**seen, 'count': count, 'splits': data.splits, 'run_id': data.run_id}


def _content_hashes(examples_uri: str, splits: Sequence[str]) -> Set[str]:
  """The content hashes of every example of these splits (Split-<name>/, gzipped TFRecords)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  files = [path for split in splits
           for path in tf.io.gfile.glob(os.path.join(examples_uri, f'Split-{split}', '*'))]
  if not files:
    raise FileNotFoundError(f'no examples of the split(s) {", ".join(splits)} in {examples_uri}')
  spec = {features.HASH_KEY: tf.io.FixedLenFeature([], tf.string, default_value='')}
  found: Set[str] = set()
  records = tf.data.TFRecordDataset(files, compression_type='GZIP',
                                    num_parallel_reads=tf.data.AUTOTUNE)
  for batch in records.batch(4096):
    found.update(h.decode() for h in tf.io.parse_example(batch, spec)[features.HASH_KEY].numpy())
  return found


def write_json(path: str, result: Dict[str, Any]) -> None:
  """The result without per-file outputs, undefined metrics as null (NaN is not JSON)."""
  with output_files.atomic_write(path) as f:
    json.dump(metrics.json_safe({k: v for k, v in result.items() if k != 'per_file'}), f,
              indent=2)


def write_predictions(path: str, labelled: Labelled, result: Dict[str, Any]) -> None:
  """One CSV row per file, so a user can open the images the model gets wrong.

  Columns: path, label, source, fake_probability and is_fake as serving_default returned them,
  correct, then P(fake) after each perturbation; files that could not be scored follow with
  their error. Needs evaluate(..., keep_per_file=True).
  """
  per_file = result['per_file']
  clean = per_file[perturb.NONE]
  perturbed = [name for name in per_file if name != perturb.NONE]
  fields = (['path', 'label', 'source', 'fake_probability', 'is_fake', 'correct']
            + [f'fake_probability_{name}' for name in perturbed] + ['error'])
  with output_files.atomic_write(path) as f:
    writer = csv.DictWriter(f, fieldnames=fields, lineterminator='\n')
    writer.writeheader()
    for i, row in enumerate(labelled.rows):
      is_fake = int(clean['is_fake'][i])
      writer.writerow({
          'path': row['path'], 'label': features.LABEL_NAMES[row['label']],
          'source': row['source'], 'fake_probability': f"{clean['fake_probability'][i]:.6f}",
          'is_fake': is_fake, 'correct': int(is_fake == row['label']), 'error': '',
          **{f'fake_probability_{name}': f"{per_file[name]['fake_probability'][i]:.6f}"
             for name in perturbed}})
    for rel_path, reason in labelled.skipped:
      writer.writerow({'path': rel_path, 'error': reason})


def format_result(result: Dict[str, Any]) -> str:
  """The tables `fakedetect evaluate` prints; an undefined metric (AUC on one class) is n/a."""
  columns = ('accuracy', 'precision', 'recall', 'f1', 'auc')

  def table(header, rows):
    return tabulate([[metrics.defined(cell) for cell in row] for row in rows],
                    headers=['', 'images', *header], tablefmt='plain', floatfmt='.4f',
                    numalign='right', disable_numparse=[0], missingval=metrics.UNDEFINED)

  out = [f'{result["scored"]} of {result["files_found"]} files scored ({result["layout"]} '
         f'layout; fake is the positive class; labels at the model\'s own threshold).', '',
         table(columns, [[name, m['example_count'], *(m[c] for c in columns)]
                         for name, m in result['perturbations'].items()])]
  seen = result.get('seen_in_training') or {}
  if seen.get('count'):
    out = [f'warning: {seen["count"]} of {seen["of"]} images were in the model\'s training '
           f'split: these figures overstate accuracy.', ''] + out
  if len(result['by_source']) > 1:
    # One class per source: accuracy is recall on a fake source, specificity on a real one.
    out += ['', 'by source (original files; one class each, so accuracy is recall on a fake '
            'source, specificity on a real one):',
            table(['accuracy', 'mean P(fake)'],
                  [[source, m['example_count'], m['accuracy'], m['mean_fake_probability']]
                   for source, m in result['by_source'].items()])]
  if result['skipped']:
    out += ['', f'{len(result["skipped"])} files not scored, e.g.:']
    out += [f'  {s["path"]}: {s["reason"]}' for s in result['skipped'][:5]]
  return '\n'.join(out)
