"""The pushed models on disk: versions, TF Serving's `models.config`, pinning and rollback.

Layout (TFX's Pusher writes it, copying `saved_model.pb` last so the server never sees a
half-written version):

  <output>/serving_model/models.config          ModelServerConfig text proto, kept current here
  <output>/serving_model/<name>/<version>/      saved_model.pb, variables/, assets.extra/
  <output>/metadata.sqlite, <output>/summary.json  what `models list` reads metrics and runs from

TF Serving serves the highest complete version unless the config pins one through
`model_version_policy { specific { versions: N } }`; `rollback` writes such a pin, `unpin` removes
it, and `write_config` regenerates the file from what is on disk, keeping any pin still valid.
"""

import dataclasses
import json
import logging
import os
import time
from typing import Any, Dict, List, Optional

from tabulate import tabulate

from fakedetect import output_files
from fakedetect.components import errors
from fakedetect.components import metrics
from fakedetect.pipeline import names

CONFIG_FILE = 'models.config'
DEFAULT_MODEL_NAME = 'fakedetect'
_HEADER = ('# TF Serving ModelServerConfig, written by `fakedetect` from the versions on disk.\n'
           '# Serve with: tensorflow_model_server --model_config_file=<this file> '
           '(--model_config_file_poll_wait_seconds=60 picks up rollbacks)\n'
           '# A model_version_policy pins a version (`fakedetect models rollback VERSION`).\n')


class ModelsError(errors.UserError):
  """A problem with the push directory a user can act on; the message says how."""


@dataclasses.dataclass
class Version:
  version: int
  path: str
  complete: bool  # saved_model.pb and variables/ are there: TF Serving may load it
  pushed_at: float  # unix time: the Pusher names versions by it; else the folder's mtime


@dataclasses.dataclass
class ModelEntry:
  name: str
  base_path: str
  pinned: Optional[int] = None


def versions(model_dir: str) -> List[Version]:
  """Integer-named version folders of one model, oldest first."""
  found = []
  if not os.path.isdir(model_dir):
    return found
  for name in os.listdir(model_dir):
    path = os.path.join(model_dir, name)
    if not (name.isdigit() and os.path.isdir(path)):
      continue
    complete = (os.path.isfile(os.path.join(path, 'saved_model.pb')) and
                os.path.isdir(os.path.join(path, 'variables')))
    number = int(name)
    # Pusher versions are unix timestamps (seconds); anything else gets the folder's mtime.
    pushed_at = float(number) if 1e9 <= number < 1e10 else os.path.getmtime(path)
    found.append(Version(number, path, complete, pushed_at))
  return sorted(found, key=lambda v: v.version)


def model_names(serving_root: str) -> List[str]:
  """Models under a serving root: sub-folders holding at least one complete version."""
  if not os.path.isdir(serving_root):
    return []
  return sorted(name for name in os.listdir(serving_root)
                if any(v.complete for v in versions(os.path.join(serving_root, name))))


def parse_config(text: str) -> List[ModelEntry]:
  """Parses a ModelServerConfig text proto with TF Serving's own proto (tensorflow-serving-api,
  which TFX depends on), so what parses here parses in the server."""
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.config import model_server_config_pb2  # pylint: disable=g-import-not-at-top
  config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
  entries = []
  for item in config.model_config_list.config:
    specific = list(item.model_version_policy.specific.versions)
    entries.append(ModelEntry(item.name, item.base_path, specific[0] if specific else None))
  return entries


def render_config(entries: List[ModelEntry]) -> str:
  """ModelServerConfig text proto for the entries, with a header saying where it comes from."""
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.config import model_server_config_pb2  # pylint: disable=g-import-not-at-top
  config = model_server_config_pb2.ModelServerConfig()
  for entry in entries:
    item = config.model_config_list.config.add(
        name=entry.name, base_path=entry.base_path, model_platform='tensorflow')
    if entry.pinned is not None:
      item.model_version_policy.specific.versions.append(entry.pinned)
  return _HEADER + text_format.MessageToString(config)


def read_config(serving_root: str) -> List[ModelEntry]:
  path = os.path.join(serving_root, CONFIG_FILE)
  if not os.path.isfile(path):
    return []
  with open(path, encoding='utf-8') as f:
    return parse_config(f.read())


def write_config(serving_root: str, pins: Optional[Dict[str, Optional[int]]] = None,
                 base_path: Optional[str] = None) -> str:
  """Regenerates `<serving_root>/models.config` from the models on disk; returns its path.

  serving_root: the Pusher's base directory's parent, e.g. `<output>/serving_model`.
  pins: {model name: version to pin, or None to unpin}; models not named keep the pin the
    current file has, unless that version is no longer complete on disk (then it is dropped, with
    a warning, so the server is never told to serve a version that is not there).
  base_path: the folder the server sees the serving root as (e.g. `/models` inside the
    tensorflow/serving container); default: what the current file says, else the absolute path.
  The file is replaced atomically, so a server polling it never reads half of it.
  """
  serving_root = os.path.abspath(serving_root)
  existing = {entry.name: entry for entry in read_config(serving_root)}
  pins = dict(pins or {})
  entries = []
  for name in model_names(serving_root):
    old = existing.get(name)
    if base_path is not None:
      path = base_path.rstrip('/') + '/' + name
    elif old is not None and old.base_path:
      path = old.base_path
    else:
      path = os.path.join(serving_root, name)
    pinned = pins[name] if name in pins else (old.pinned if old else None)
    complete = {v.version for v in versions(os.path.join(serving_root, name)) if v.complete}
    if pinned is not None and pinned not in complete:
      if name in pins:
        raise ModelsError(f'Version {pinned} of {name!r} is not a complete pushed model; '
                          f'pushed versions: {", ".join(map(str, sorted(complete)))}.')
      logging.warning('Dropping the pin of %s on version %s: it is no longer on disk.', name,
                      pinned)
      pinned = None
    entries.append(ModelEntry(name, path, pinned))
  unknown = sorted(set(pins) - {e.name for e in entries})
  if unknown:
    raise ModelsError(f'No pushed model named {unknown[0]!r} under {serving_root}.')
  path = os.path.join(serving_root, CONFIG_FILE)
  with output_files.atomic_write(path) as f:  # refuses a serving root that is not there
    f.write(render_config(entries))
  return path


def _only_model(serving_root: str, name: Optional[str]) -> str:
  names = model_names(serving_root)
  if name:
    if name not in names:
      raise ModelsError(f'No pushed model named {name!r} under {serving_root}; '
                        f'found: {", ".join(names) or "none"}.')
    return name
  if not names:
    raise ModelsError(f'No pushed model under {serving_root}: run `fakedetect run` first.')
  if len(names) > 1:
    raise ModelsError(f'Several models under {serving_root} ({", ".join(names)}): name one.')
  return names[0]


def rollback(serving_root: str, version: int, name: Optional[str] = None) -> str:
  """Pins `version` of the model in models.config; TF Serving then serves only that version."""
  name = _only_model(serving_root, name)
  return write_config(serving_root, pins={name: int(version)})


def unpin(serving_root: str, name: Optional[str] = None) -> str:
  """Removes the pin: the server goes back to the latest version."""
  name = _only_model(serving_root, name)
  return write_config(serving_root, pins={name: None})


def served_version(serving_root: str, name: Optional[str] = None) -> Version:
  """The version TF Serving serves under the current config: the pin, else the latest complete."""
  name = _only_model(serving_root, name)
  complete = [v for v in versions(os.path.join(serving_root, name)) if v.complete]
  pinned = next((e.pinned for e in read_config(serving_root) if e.name == name), None)
  chosen = [v for v in complete if v.version == pinned] if pinned is not None else []
  return chosen[0] if chosen else complete[-1]


def find_model(path: Optional[str], default_output: str = 'outputs') -> str:
  """A SavedModel folder from a version folder, a model folder, a serving root or an output dir.

  Anything above a version folder resolves to the version TF Serving would serve.
  """
  path = os.path.abspath(path or default_output)
  if os.path.isfile(os.path.join(path, 'saved_model.pb')):
    return path
  for root in (path, os.path.join(path, names.SERVING_DIR)):
    if model_names(root):
      return served_version(root).path
  if any(v.complete for v in versions(path)):  # a model folder: <root>/<name>
    return served_version(os.path.dirname(path), os.path.basename(path)).path
  raise ModelsError(f'No pushed model found under {path}. Run `fakedetect run` first (blessed '
                    f'models are pushed to <output>/{names.SERVING_DIR}/), or pass --model PATH.')


def read_model_metadata(version_dir: str) -> Dict[str, Any]:
  """The export's own metadata (threshold, image size, hyperparameters); {} when it has none."""
  path = os.path.join(version_dir, names.MODEL_METADATA_FILE)
  if not os.path.isfile(path):
    return {}
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def pushes_from_metadata(output_dir: str) -> Dict[str, Dict[str, Any]]:
  """{pushed version folder (real path): {run_id, metrics}} from the run folder's ML Metadata,
  read-only.

  Follows lineage: every pushed PushedModel artifact (custom properties `pushed_destination`,
  `pushed_version`) -> the Pusher that wrote it -> upstream through `model_blessing` inputs to
  the Evaluator that judged the model first -> its pipeline run and its `evaluation` output (the
  metrics that blessed it).
  """
  # Here, not at the top: predict, evaluate and explain find their model through this module
  # and never read ML Metadata.
  from fakedetect import run_records  # pylint: disable=g-import-not-at-top
  records = run_records.RunRecords.of_output(output_dir)
  found = {}
  for destination, artifact in records.pushes().items():
    evaluator = records.first_judge(records.producer(artifact))
    record: Dict[str, Any] = {
        'pushed_version': artifact.custom_properties['pushed_version'].string_value,
        'run_id': records.run_of(evaluator), 'metrics': {}}
    evaluation = records.output(evaluator, 'evaluation')
    if evaluation is not None:
      from fakedetect.components import evaluation_results  # pylint: disable=g-import-not-at-top
      try:
        record['metrics'] = evaluation_results.evaluation_metrics(evaluation.uri).get(
            evaluation_results.OVERALL, {})
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('Could not read the evaluation at %s: %s', evaluation.uri, e)
    found[destination] = record
  return found


def describe(serving_root: str, name: Optional[str] = None) -> List[Dict[str, Any]]:
  """One row per version: what `fakedetect models list` shows, newest first."""
  serving_root = os.path.abspath(serving_root)
  name = _only_model(serving_root, name)
  output_dir = os.path.dirname(serving_root)
  lineage: Dict[str, Dict[str, Any]] = {}
  if os.path.isfile(os.path.join(output_dir, names.METADATA_STORE)):
    lineage = pushes_from_metadata(output_dir)
  summary_path = os.path.join(output_dir, names.SUMMARY_FILE)
  if os.path.isfile(summary_path):  # the latest run; fills in when MLMD is not next to it
    with open(summary_path, encoding='utf-8') as f:
      last = json.load(f)
    if last.get('pushed_model'):
      lineage.setdefault(os.path.realpath(last['pushed_model']),
                         {'run_id': last.get('run_id'), 'metrics': last.get('metrics', {})})
  served = served_version(serving_root, name).version
  pinned = next((e.pinned for e in read_config(serving_root) if e.name == name), None)
  rows = []
  for version in reversed(versions(os.path.join(serving_root, name))):
    meta = read_model_metadata(version.path) if version.complete else {}
    info = lineage.get(os.path.realpath(version.path), {})
    rows.append({
        'model': name, 'version': version.version, 'path': version.path,
        'complete': version.complete, 'served': version.version == served,
        'pinned': version.version == pinned,
        'pushed_at': time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(version.pushed_at)),
        'threshold': meta.get('threshold'), 'image_size': meta.get('image_size'),
        'view': meta.get('view', 'global'), 'backbone': meta.get('backbone', 'cnn'),
        'hyperparameters': meta.get('hyperparameters'),
        'run_id': info.get('run_id'),
        'metrics': {k: metrics.defined(v) for k, v in info.get('metrics', {}).items()},
    })
  return rows


def render_rows(rows: List[Dict[str, Any]]) -> str:
  """The table `fakedetect models list` prints; `*` marks the version TF Serving serves, n/a a
  metric that is undefined (AUC on a split of one class) or unknown."""
  header = ['version', 'pushed', 'threshold', 'accuracy', 'precision', 'recall', 'auc',
            'blessed by run']
  table = []
  for row in rows:
    measured = row['metrics'] or {}
    note = ' (pinned)' if row['pinned'] else ('' if row['complete'] else ' (incomplete)')
    table.append([('* ' if row['served'] else '') + str(row['version']), row['pushed_at'],
                  row['threshold']] + [measured.get(key) for key in header[3:7]]
                 + [(row['run_id'] or '-') + note])
  # Versions right-aligned, so the served one's `* ` stands out to their left.
  text = tabulate(table, headers=header, tablefmt='plain', floatfmt='.4f',
                  missingval=['-'] * 3 + [metrics.UNDEFINED] * 4 + ['-'],
                  disable_numparse=[0, 1, 7],
                  colalign=('right', 'left') + ('right',) * 5 + ('left',))
  return text + f'\n* = the version TF Serving serves under {CONFIG_FILE}'
