"""Beam runners side by side: the pipeline's wall time per component on CIFAKE's training split,
once on the in-memory direct runner and once on the multi-processing direct runner.

    .venv/bin/python benchmarks/runners.py --limit 2000 --set train.epochs=1   # a quick look
    .venv/bin/python benchmarks/runners.py                                     # all 100k images

Both runs are uncached, on the same folder and settings; the times per component come from ML
Metadata (summary.json `component_seconds`), the CPU time from the OS (the run and every process
it started, Beam's workers included). Only the Beam components (ImageExampleGen, StatisticsGen,
Transform, Evaluator) change runner, all four of them here (runner.in_memory_components=[]); the
rest is there to show where the time goes. The in-memory profile is the default one, in which the
ImageExampleGen starts its own workers from 50,000 files (all of CIFAKE, not --limit 2000).
"""

import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cifake  # pylint: disable=g-import-not-at-top,wrong-import-position

from fakedetect.pipeline import config as config_lib
from fakedetect.pipeline import names

# The DAG's order; the components left out take well under a second and are summed as "other".
SHOWN = (names.IMAGE_EXAMPLE_GEN, names.STATISTICS_GEN, names.TRANSFORM, names.TUNER,
         names.TRAINER, names.EVALUATOR, names.ROBUSTNESS_GATE)


def _children_cpu() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def measure(data: str, output: str, settings) -> dict:
  cpu = _children_cpu()
  summary = cifake.run_pipeline(data, output, list(settings) + ['enable_cache=false'])
  return {'wall': summary['wall_seconds'], 'cpu': _children_cpu() - cpu,
          'components': summary['component_seconds'], 'ingested': summary['ingested'],
          'runner': summary.get('runner', {}).get('description'),
          'accuracy': summary['metrics'].get('accuracy')}


def table(runs: dict, names) -> str:
  """Markdown: a row per component, a column per runner, and the ratio of the last to the first."""
  first, last = names[0], names[-1]
  lines = [f'| component | {" | ".join(names)} | {last} / {first} |',
           '| --- |' + ' ---: |' * (len(names) + 1)]

  def row(label, values):
    ratio = values[-1] / values[0] if values[0] else float('nan')
    cells = ' | '.join(f'{v:,.1f}' for v in values)
    return f'| {label} | {cells} | {ratio:.2f}x |'

  def seconds(name, component):
    return runs[name]['components'].get(component) or 0.0

  for component in SHOWN:
    if component in runs[first]['components']:
      label = f'**{component}**' if component in config_lib.BEAM_COMPONENTS else component
      lines.append(row(label, [seconds(n, component) for n in names]))
  others = [c for c in runs[first]['components'] if c not in SHOWN]
  lines.append(row('other components', [sum(seconds(n, c) for c in others) for n in names]))
  total = [sum(seconds(n, c) for c in runs[n]['components']) for n in names]
  lines.append(row('sum of components', total))
  lines.append(row('start-up, orchestration, summary',
                   [runs[n]['wall'] - t for n, t in zip(names, total)]))
  lines.append(row('pipeline wall time', [runs[n]['wall'] for n in names]))
  lines.append(row('CPU time (all processes)', [runs[n]['cpu'] for n in names]))
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--archive', default=cifake.DEFAULT_ARCHIVE)
  parser.add_argument('--data', help='an unpacked CIFAKE folder (holding train/REAL, train/FAKE)')
  parser.add_argument('--workdir', default='/tmp', help='where CIFAKE is unpacked (cifake/) '
                      'and the runs go (runners-<limit>/)')
  parser.add_argument('--limit', type=int, help='images per class (default: all)')
  parser.add_argument('--workers', type=int, default=2,
                      help='multi-processing worker processes')
  parser.add_argument('--set', dest='settings', action='append', default=[],
                      help='pipeline settings for both runs, section.field=value')
  args = parser.parse_args()

  data = args.data or cifake.unpack(args.archive, args.workdir)
  if args.limit:
    data = cifake.subset(data, args.workdir, args.limit)
  out = os.path.join(args.workdir, f'runners-{args.limit or "all"}')
  profiles = {
      'in-memory': ['runner.profile=in-memory'],
      f'multi-processing ({args.workers})': ['runner.profile=multi-processing',
                                             f'runner.workers={args.workers}',
                                             'runner.in_memory_components=[]'],
  }
  runs = {}
  for name, runner in profiles.items():
    output = os.path.join(out, name.split()[0])
    runs[name] = measure(data, output, list(args.settings) + runner)
    print(f'{name}: {runs[name]["wall"]:.0f} s wall, {runs[name]["cpu"]:.0f} s CPU', flush=True)

  names = list(runs)
  result = {'data': data, 'limit': args.limit, 'settings': args.settings, 'cpus': os.cpu_count(),
            'loadavg_after': os.getloadavg(), 'when': time.strftime('%Y-%m-%d %H:%M'),
            'runs': runs}
  with open(os.path.join(out, 'runners.json'), 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=2)
  print(f'\n== wall time per component (s): {runs[names[0]]["ingested"]} CIFAKE images, '
        f'{os.cpu_count()} cores, settings {args.settings or "default"} ==')
  print(table(runs, names))
  print(f'\nBeam components in bold; results in {os.path.join(out, "runners.json")}')


if __name__ == '__main__':
  main()
