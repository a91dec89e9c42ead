"""Resolution benchmark: which view x backbone x filter detects fakes on a labelled folder.

For each named configuration (CONFIGS below: a set of `--set` strings), one whole `fakedetect run`
on --data in its own output folder under --work, with the gates open so that every model is
pushed; then each pushed model is scored through `fakedetect evaluate` on every --also folder
(cross-dataset: other generators, other real photos). One table, and the same as JSON:
  test acc   the run's own test split (never seen by training, tuning or the threshold), TFMA's
             BinaryAccuracy at a 0.5 cut, as the run summary shows it
  acc@thr    the same images at the model's own threshold (the RobustnessGate's clean pass), the
             cut serving uses and the one the --also columns are at
  AUC        ROC AUC on the test split
  Trainer s, pipeline s, img/s: the Trainer's wall time, the whole `fakedetect run` (start-up
             included), training images per second

  .venv/bin/python benchmarks/resolution.py --data /tmp/faces/faces-stylegan-256
  .venv/bin/python benchmarks/resolution.py --data /tmp/faces/faces-stylegan-256 \\
      --configs global-32-cnn global-64-cnn4 --epochs 10 --also demo_data /tmp/other-faces
  .venv/bin/python benchmarks/resolution.py --data /tmp/cifake --limit-per-class 2000
  ... --reuse    # the table again from the runs already in --work (e.g. with more --also)
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional

from tabulate import tabulate

from fakedetect.components.image_example_gen import folders
from fakedetect.pipeline import names

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The settings compared; the lead adjusts the list after measuring. An empty list is `auto`.
CONFIGS: Dict[str, List[str]] = {
    'auto': [],
    # The photo preset (pipeline/auto.py) with the layers narrowed or the view changed: auto
    # settings a --set does not name still apply.
    'auto-w16': ['train.width=16'],
    'auto-local-64': ['image.view=local', 'image.crop_size=64'],
    'auto-both-64': ['image.view=both', 'image.crop_size=64', 'train.width=16'],
    'auto-128-resnet': ['image.size=128', 'model.backbone=resnet', 'train.width=16'],
    'global-32-cnn': ['image.view=global', 'image.size=32', 'model.backbone=cnn'],
    'global-64-cnn4': ['image.view=global', 'image.size=64', 'model.backbone=cnn',
                       'train.depth=4'],
    'global-128-resnet': ['image.view=global', 'image.size=128', 'model.backbone=resnet'],
    'local-64-resnet': ['image.view=local', 'image.crop_size=64', 'model.backbone=resnet'],
    'local-64-resnet-npr': ['image.view=local', 'image.crop_size=64', 'model.backbone=resnet',
                            'model.filter=npr'],
    'both-128-resnet': ['image.view=both', 'image.size=128', 'image.crop_size=64',
                        'model.backbone=resnet'],
}
# Every model is pushed, so that it can be scored on the --also folders.
OPEN_GATES = ['gate.min_precision=0', 'gate.min_recall=0', 'gate.max_accuracy_drop=1',
              'enable_cache=false']
RECORD_FILE = 'benchmark_run.json'  # beside summary.json: the settings and the wall time
HEARTBEAT_SECONDS = 60


def subset(data: str, work: str, per_class: int) -> str:
  """A folder of hard links (folders.link_into) to `per_class` files of each class in each of the
  layout's splits (spread evenly over the sorted files, so every source is sampled), laid out as
  `data` is."""
  from fakedetect.components.image_example_gen import layouts  # pylint: disable=g-import-not-at-top
  layout = layouts.detect(data)
  if isinstance(layout, layouts.ManifestLayout):
    raise SystemExit(f'--limit-per-class: {data} is a manifest layout; write a shorter manifest '
                     'instead (it names the files directly).')
  groups: Dict[tuple, List[str]] = {}
  for rel, problem in layout.list_files(data):
    labelled = None if problem else layout.parse(rel)
    if labelled is not None:
      groups.setdefault((labelled.split, labelled.label), []).append(rel)
  target = os.path.join(work, f'{os.path.basename(os.path.normpath(data))}-{per_class}')
  shutil.rmtree(target, ignore_errors=True)
  for rels in groups.values():
    for rel in rels[::max(1, len(rels) // per_class)][:per_class]:
      os.makedirs(os.path.dirname(os.path.join(target, rel)), exist_ok=True)
      folders.link_into(os.path.join(data, rel), os.path.join(target, rel))
  return target


def _last_line(path: str) -> str:
  with open(path, errors='replace') as f:
    lines = [line.strip() for line in f if line.strip()]
  return lines[-1] if lines else ''


def _stream(command: List[str], log_path: str, label: str, started: float) -> None:
  """Runs command with its output in log_path; every HEARTBEAT_SECONDS says how long it has run
  and the last line it printed (the pipeline's component progress). RuntimeError if it fails."""
  begin = time.monotonic()
  with open(log_path, 'w') as log:
    child = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    while True:
      try:
        if child.wait(timeout=HEARTBEAT_SECONDS):
          raise RuntimeError(f'{label} failed: {_last_line(log_path)[:200]} (all of its output: '
                             f'{log_path})')
        return
      except subprocess.TimeoutExpired:
        print(f'  {label}: {time.monotonic() - begin:.0f} s (benchmark '
              f'{time.monotonic() - started:.0f} s): {_last_line(log_path)[:80]}', flush=True)


def run_config(name: str, data: str, out: str, settings: List[str], reuse: bool,
               started: float) -> dict:
  """summary.json of this config's run (made now, or reused when --reuse finds the same run)."""
  record_path = os.path.join(out, RECORD_FILE)
  record = {'data': os.path.abspath(data), 'settings': settings}
  if reuse and os.path.isfile(record_path):
    with open(record_path) as f:
      kept = json.load(f)
    if {k: kept.get(k) for k in record} == record:  # written after the run's summary.json
      print(f'{name}: reusing the run in {out}', flush=True)
      return _summary(out, kept['wall_seconds'])
  shutil.rmtree(out, ignore_errors=True)
  os.makedirs(out)
  command = [sys.executable, '-m', 'fakedetect', 'run', '--data', data, '--output', out]
  for setting in settings:
    command += ['--set', setting]
  print(f'{name}: {" ".join(command[1:])}', flush=True)
  begin = time.monotonic()
  _stream(command, os.path.join(out, 'benchmark.log'), f'{name}: fakedetect run', started)
  record['wall_seconds'] = time.monotonic() - begin
  with open(record_path, 'w') as f:
    json.dump(record, f, indent=2)
  return _summary(out, record['wall_seconds'])


def _summary(out: str, wall_seconds: float) -> dict:
  with open(os.path.join(out, names.SUMMARY_FILE)) as f:
    summary = json.load(f)
  summary['wall_seconds'] = wall_seconds
  return summary


def evaluate(model: str, folder: str, out: str, name: str, split: Optional[str],
             started: float) -> dict:
  """`fakedetect evaluate`'s metrics of the unperturbed files: accuracy, AUC, example_count."""
  result_path = os.path.join(out, f'evaluate-{name}.json')
  command = [sys.executable, '-m', 'fakedetect', 'evaluate', folder, '--model', model,
             '--json', result_path] + (['--split', split] if split else [])
  _stream(command, os.path.join(out, f'evaluate-{name}.log'), f'fakedetect evaluate on {name}',
          started)
  with open(result_path) as f:
    return json.load(f)['perturbations']['none']


def describe_view(model_input: dict) -> str:
  """E.g. 'global 64', 'local 64/256' (crop of the native square), 'both 128+64/256'."""
  view = model_input.get('view', '?')
  local = f"{model_input.get('crop_size')}/{model_input.get('native_size')}"
  return {'global': f"global {model_input.get('image_size')}", 'local': f'local {local}',
          'both': f"both {model_input.get('image_size')}+{local}"}.get(view, view)


def row(name: str, summary: dict) -> dict:
  """One config's figures, from its run summary (and the --also scores put under 'also')."""
  model_input = summary.get('model_input') or {}
  metrics = summary.get('metrics') or {}
  clean = (summary.get('robustness') or {}).get('none', {})
  return {'config': name, 'view': describe_view(model_input),
          'backbone': model_input.get('backbone'), 'filter': model_input.get('filter'),
          'accuracy': metrics.get('accuracy'), 'accuracy_at_threshold': clean.get('accuracy'),
          'auc': metrics.get('auc'), 'test_images': int(metrics.get('example_count') or 0),
          'trainer_seconds': (summary.get('component_seconds') or {}).get(names.TRAINER),
          'pipeline_seconds': summary.get('wall_seconds'),
          'train_images_per_second': summary.get('train_images_per_second'),
          'epochs_run': summary.get('epochs_run'), 'pushed_model': summary.get('pushed_model'),
          'also': summary.get('also', {})}


def table(rows: List[dict], also: List[str]) -> str:
  headers = ['config', 'view', 'backbone', 'filter', 'test acc', 'acc@thr', 'AUC', 'Trainer s',
             'pipeline s', 'img/s']
  for name in also:
    headers += [f'{name} acc', f'{name} AUC']
  body = []
  for r in rows:
    if r.get('error'):
      body.append([r['config'], 'FAILED'] + [None] * (len(headers) - 2))
      continue
    line = [r['config'], r['view'], r['backbone'], r['filter'], r['accuracy'],
            r['accuracy_at_threshold'], r['auc'], r['trainer_seconds'], r['pipeline_seconds'],
            r['train_images_per_second']]
    for name in also:
      scored = r['also'].get(name) or {}
      line += [scored.get('accuracy', scored.get('error', 'not pushed')), scored.get('auc')]
    body.append(line)
  failures = [f"{r['config']}: {r['error']}" for r in rows if r.get('error')]
  return '\n'.join([tabulate(body, headers=headers, missingval='-', floatfmt=(
      '', '', '', '', '.3f', '.3f', '.3f', '.0f', '.0f', '.1f') + ('.3f',) * (2 * len(also)))]
                   + failures)


def short_names(paths: List[str]) -> List[str]:
  """Column names for the --also folders: their base names, numbered where two coincide."""
  bases = [os.path.basename(os.path.normpath(folder)) for folder in paths]
  return [base if bases.count(base) == 1 else f'{base}#{i + 1}' for i, base in enumerate(bases)]


def parse_args(argv=None) -> argparse.Namespace:
  epilog = 'configurations (--configs):\n' + '\n'.join(
      f'  {name:22}{" ".join(settings) or "(everything auto: pipeline/auto.py decides)"}'
      for name, settings in CONFIGS.items())
  parser = argparse.ArgumentParser(description=__doc__, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data', required=True, help='the labelled folder trained and tested on')
  parser.add_argument('--also', nargs='+', default=[], metavar='DIR',
                      help='labelled folders every pushed model is also scored on')
  parser.add_argument('--also-split', choices=['train', 'eval', 'test'], default=None,
                      help='score only this split of the --also folders whose layout has split '
                      'folders (e.g. test: CIFAKE\'s official test/); others are scored whole')
  parser.add_argument('--configs', nargs='+', default=list(CONFIGS), metavar='NAME',
                      help='the configurations to run, in order (default: all, listed below)')
  parser.add_argument('--epochs', type=int, help='train.epochs for every run')
  parser.add_argument('--set', dest='settings', action='append', default=[],
                      metavar='SECTION.FIELD=VALUE', help='more settings for every run (win '
                      'over a configuration\'s)')
  parser.add_argument('--limit-per-class', type=int, metavar='N',
                      help='train and test on N images of each class per split of --data '
                      '(links under --work, the layout kept)')
  parser.add_argument('--work', default='/tmp/resolution', help='where runs and subsets go')
  parser.add_argument('--json', default=None, help='results file (default: WORK/results.json)')
  parser.add_argument('--reuse', action='store_true',
                      help='reuse a config\'s earlier run in --work made with the same data and '
                      'settings (the --also folders are scored again)')
  args = parser.parse_args(argv)
  unknown = [name for name in args.configs if name not in CONFIGS]
  if unknown:
    parser.error(f'unknown configuration(s) {", ".join(unknown)}; known: {", ".join(CONFIGS)}')
  for option, folder in [('--data', args.data)] + [('--also', f) for f in args.also]:
    if not os.path.isdir(folder):
      parser.error(f'{option} {folder}: not a folder. Give a labelled folder (real/ and fake/, '
                   'or any layout `fakedetect run` reads).')
  if args.limit_per_class is not None and args.limit_per_class < 1:
    parser.error('--limit-per-class must be at least 1')
  return args



def _fmt(value, spec: str = '.3f') -> str:
  return '-' if value is None else format(value, spec)


def main(argv=None) -> None:
  args = parse_args(argv)
  from fakedetect.components import errors  # pylint: disable=g-import-not-at-top
  from fakedetect.components.image_example_gen import layouts  # pylint: disable=g-import-not-at-top
  try:  # a folder no run can read fails now, not after an hour of training
    detected = {folder: layouts.detect(folder) for folder in [args.data] + args.also}
  except errors.UserError as e:
    raise SystemExit(str(e)) from None
  os.makedirs(args.work, exist_ok=True)
  data = os.path.abspath(args.data)
  if args.limit_per_class:
    data = subset(data, args.work, args.limit_per_class)
    print(f'--data subset: {args.limit_per_class} per class and split in {data}', flush=True)
  also = dict(zip(short_names(args.also), (os.path.abspath(f) for f in args.also)))
  splits = {name: args.also_split if args.also_split in detected[folder].splits else None
            for name, folder in zip(also, args.also)}
  common = OPEN_GATES + [f'train.epochs={args.epochs}'] * bool(args.epochs) + args.settings
  started = time.monotonic()
  rows = []
  for i, name in enumerate(args.configs, 1):
    print(f'[{i}/{len(args.configs)}] {name} (benchmark {time.monotonic() - started:.0f} s)',
          flush=True)
    out, settings = os.path.join(args.work, name), CONFIGS[name] + common
    try:
      summary = run_config(name, data, out, settings, args.reuse, started)
    except RuntimeError as e:
      print(f'{name}: {e}', flush=True)
      rows.append({'config': name, 'error': str(e), 'settings': settings})
      continue
    summary['also'] = {}
    for also_name, folder in also.items() if summary.get('pushed_model') else ():
      try:
        summary['also'][also_name] = evaluate(summary['pushed_model'], folder, out, also_name,
                                              splits[also_name], started)
      except RuntimeError as e:
        print(f'{name}: {e}', flush=True)
        summary['also'][also_name] = {'error': 'failed'}
    rows.append(dict(row(name, summary), settings=settings))
    print(f'{name}: test accuracy {_fmt(rows[-1]["accuracy"])}, AUC {_fmt(rows[-1]["auc"])}; '
          f'pipeline {summary["wall_seconds"]:.0f} s (benchmark {time.monotonic() - started:.0f}'
          ' s)', flush=True)

  scored_on = ', '.join(f'{n} = {f}' + (f' ({splits[n]} split)' if splits[n] else '')
                        for n, f in also.items())
  print(f'\n== {data}: each run\'s own test split'
        + (f'; also scored on {scored_on}' if also else '') + ' ==')
  print(table(rows, list(also)))
  json_path = args.json or os.path.join(args.work, 'results.json')
  with open(json_path, 'w') as f:
    json.dump({'data': data, 'also': also, 'also_split': splits, 'cores': os.cpu_count(),
               'load_average': os.getloadavg(), 'seconds': time.monotonic() - started,
               'results': rows}, f, indent=2)
  print(f'results: {json_path}')
  if any(r.get('error') for r in rows):
    sys.exit(1)


if __name__ == '__main__':
  main()
