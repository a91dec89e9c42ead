"""Simulation benchmark: what the ArtifactSimulator's fakes are worth, in one table.

Each row is one whole `fakedetect run` (gates open, so every model is pushed), scored on its own
test split and, through `fakedetect evaluate`, on held-out sets that no run trained on:
  only       a detector trained on reals and simulated fakes, not one real fake, scored on fakes
             of a demo generator whose up-sampling differs from the simulator's decoder (the
             transposed-conv simulator against the nearest-neighbour generator and the reverse),
             and on faces-stylegan-256 / a CIFAKE subset (their own test splits: real StyleGAN and
             Stable Diffusion fakes), when --faces / --cifake are given
  none/add   without and with simulated fakes added (the default settings): on the demo set
             (both generators: in-distribution), on reals and ONE demo generator
             (nearest_upsampler: its test split and held-out fakes of the same generator are
             in-distribution, held-out transposed_conv fakes cross-generator), and on faces when
             --faces is given (in-distribution only)
The held-out demo sets are a fresh demo set (another seed): its reals with one generator's fakes
per folder. `sim s` is the ArtifactSimulator's wall time, `sim share` its part of the run's.

  .venv/bin/python benchmarks/simulate.py --work /tmp/simbench
  .venv/bin/python benchmarks/simulate.py --faces /tmp/faces/faces-stylegan-256 \\
      --cifake /tmp/cifake --rows faces-only faces-none faces-add cifake-only
  ... --reuse    # the table again from the runs already in --work
"""

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List

from tabulate import tabulate

from fakedetect.components.image_example_gen import folders
from fakedetect.pipeline import names

_HERE = os.path.dirname(os.path.abspath(__file__))
_SPEC = importlib.util.spec_from_file_location('resolution_benchmark',
                                               os.path.join(_HERE, 'resolution.py'))
resolution = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(resolution)

GENERATORS = ('nearest_upsampler', 'transposed_conv')  # fakedetect/demo_data.py's
SIMULATE = ['simulate.enabled=true']
# name: (training data key, settings, held-out sets scored on). Data keys: demo (both
# generators), demo-nearest (one generator), faces, cifake.
ROWS: Dict[str, tuple] = {
    'demo-only-transposed': ('demo', SIMULATE + ['simulate.mode=only',
                                                 'simulate.decoder=transposed'], GENERATORS),
    'demo-only-nearest': ('demo', SIMULATE + ['simulate.mode=only', 'simulate.decoder=nearest'],
                          GENERATORS),
    'demo-none': ('demo', [], GENERATORS),
    'demo-add': ('demo', SIMULATE, GENERATORS),
    'demo-nearest-none': ('demo-nearest', [], GENERATORS),
    'demo-nearest-add': ('demo-nearest', SIMULATE + ['simulate.decoder=transposed'], GENERATORS),
    'faces-only': ('faces', SIMULATE + ['simulate.mode=only'], ()),
    'faces-none': ('faces', [], ()),
    'faces-add': ('faces', SIMULATE, ()),
    'cifake-only': ('cifake', SIMULATE + ['simulate.mode=only'], ()),
}


def link_folder(target: str, parts: Dict[str, str]) -> str:
  """A folder of hard links: parts maps a folder inside target to a source folder."""
  shutil.rmtree(target, ignore_errors=True)
  for inside, source in parts.items():
    for root, _, files in os.walk(source):
      for name in files:
        if name.startswith('.') or 'broken' in name:
          continue
        rel = os.path.relpath(os.path.join(root, name), source)
        os.makedirs(os.path.dirname(os.path.join(target, inside, rel)), exist_ok=True)
        folders.link_into(os.path.join(root, name), os.path.join(target, inside, rel))
  return target


def demo_data(work: str, per_class: int) -> Dict[str, str]:
  """The demo folders: training (both generators, and nearest only) and held-out, per generator."""
  made = {}
  for name, seed in (('demo', 0), ('demo-heldout', 1)):
    folder = os.path.join(work, name)
    if not os.path.isdir(os.path.join(folder, 'real')):
      subprocess.run([sys.executable, '-m', 'fakedetect', 'demo-data', folder, '--per-class',
                      str(per_class), '--seed', str(seed), '--no-broken'], check=True)
    made[name] = folder
  demo, heldout = made['demo'], made['demo-heldout']
  made['demo-nearest'] = link_folder(os.path.join(work, 'demo-nearest'), {
      'real': os.path.join(demo, 'real'),
      'fake/nearest_upsampler': os.path.join(demo, 'fake', 'nearest_upsampler')})
  for generator in GENERATORS:
    made[f'heldout-{generator}'] = link_folder(os.path.join(work, f'heldout-{generator}'), {
        'real': os.path.join(heldout, 'real'),
        f'fake/{generator}': os.path.join(heldout, 'fake', generator)})
  return made


def row(name: str, summary: dict, scored: Dict[str, dict]) -> dict:
  metrics = summary.get('metrics') or {}
  seconds = summary.get('component_seconds') or {}
  simulation = summary.get('simulation') or {}
  sim = seconds.get(names.ARTIFACT_SIMULATOR)
  return {'row': name, 'mode': simulation.get('mode', 'none'),
          'decoder': simulation.get('decoder'), 'simulated': simulation.get('simulated'),
          'accuracy': metrics.get('accuracy'), 'auc': metrics.get('auc'),
          'scored': scored, 'simulator_seconds': sim,
          'pipeline_seconds': summary.get('wall_seconds'),
          'simulator_share': sim / summary['wall_seconds'] if sim and summary.get(
              'wall_seconds') else None}


def table(rows: List[dict]) -> str:
  headers = ['row', 'mode', 'decoder', 'simulated', 'test acc', 'test AUC'] + [
      f'held-out {g} acc / AUC' for g in GENERATORS] + ['sim s', 'pipeline s', 'sim share']
  body = []
  for r in rows:
    if r.get('error'):
      body.append([r['row'], 'FAILED'] + [None] * (len(headers) - 2))
      continue
    held = [(f"{r['scored'][g]['accuracy']:.3f} / {r['scored'][g]['auc']:.3f}"
             if 'auc' in r['scored'].get(g, {}) else None) for g in GENERATORS]
    body.append([r['row'], r['mode'], r['decoder'], r['simulated'], r['accuracy'], r['auc']]
                + held + [r['simulator_seconds'], r['pipeline_seconds'],
                          f"{r['simulator_share']:.0%}" if r['simulator_share'] else None])
  return tabulate(body, headers=headers, missingval='-', floatfmt='.3f')


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rows', nargs='+', metavar='NAME', help='rows to run (default: every '
                      'row whose data is at hand): ' + ', '.join(ROWS))
  parser.add_argument('--work', default='/tmp/simbench', help='where data and runs go')
  parser.add_argument('--demo-per-class', type=int, default=200)
  parser.add_argument('--faces', help='faces-stylegan-256, unpacked (real/, fake/)')
  parser.add_argument('--cifake', help='CIFAKE, unpacked (train/REAL, train/FAKE)')
  parser.add_argument('--cifake-per-class', type=int, default=1000,
                      help='images of each class of CIFAKE\'s train split used')
  parser.add_argument('--epochs', type=int, help='train.epochs for every run')
  parser.add_argument('--set', dest='settings', action='append', default=[],
                      metavar='SECTION.FIELD=VALUE', help='more settings for every run')
  parser.add_argument('--reuse', action='store_true', help='reuse runs in --work made with the '
                      'same data and settings')
  args = parser.parse_args(argv)
  have = {'demo', 'demo-nearest'} | {key for key in ('faces', 'cifake') if getattr(args, key)}
  if args.rows is None:
    args.rows = [name for name, (data, _, _) in ROWS.items() if data in have]
  unknown = [name for name in args.rows if name not in ROWS]
  if unknown:
    parser.error(f'unknown row(s) {", ".join(unknown)}; known: {", ".join(ROWS)}')
  missing = sorted({ROWS[name][0] for name in args.rows} - have)
  if missing:
    parser.error(f'rows need --{" --".join(missing)} (the unpacked folder)')
  for key in ('faces', 'cifake'):
    if getattr(args, key) and not os.path.isdir(getattr(args, key)):
      parser.error(f'--{key} {getattr(args, key)}: not a folder')
  return args


def main(argv=None) -> None:
  args = parse_args(argv)
  os.makedirs(args.work, exist_ok=True)
  data = demo_data(args.work, args.demo_per_class)
  if args.faces:
    data['faces'] = os.path.abspath(args.faces)
  if args.cifake:
    data['cifake'] = resolution.subset(os.path.abspath(args.cifake), args.work,
                                       args.cifake_per_class)
  common = resolution.OPEN_GATES + [f'train.epochs={args.epochs}'] * bool(args.epochs) + (
      args.settings)
  started = time.monotonic()
  rows = []
  for i, name in enumerate(args.rows, 1):
    key, settings, heldout = ROWS[name]
    print(f'[{i}/{len(args.rows)}] {name} (benchmark {time.monotonic() - started:.0f} s)',
          flush=True)
    out = os.path.join(args.work, 'runs', name)
    try:
      summary = resolution.run_config(name, data[key], out, settings + common, args.reuse,
                                      started)
      scored = {}
      for generator in heldout if summary.get('pushed_model') else ():
        scored[generator] = resolution.evaluate(summary['pushed_model'],
                                                data[f'heldout-{generator}'], out, generator,
                                                None, started)
    except RuntimeError as e:
      print(f'{name}: {e}', flush=True)
      rows.append({'row': name, 'error': str(e)})
      continue
    rows.append(dict(row(name, summary, scored), settings=settings + common))
    print(f"{name}: test AUC {rows[-1]['auc']}", flush=True)
  print('\n== ArtifactSimulator: own test split, and held-out demo fakes per generator ==')
  print(table(rows))
  path = os.path.join(args.work, 'results.json')
  with open(path, 'w') as f:
    json.dump({'cores': os.cpu_count(), 'load_average': os.getloadavg(),
               'seconds': time.monotonic() - started, 'results': rows}, f, indent=2)
  print(f'results: {path}')
  if any(r.get('error') for r in rows):
    sys.exit(1)


if __name__ == '__main__':
  main()
