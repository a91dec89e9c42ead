"""Images/s and peak memory: the image ExampleGen on Beam against a plain single-process loop.

Both sides do the same work per file (components.image_example_gen.ingest.ImageReader: read,
hash, check the header with Pillow, decode with TensorFlow, build the tf.Example) and write
gzipped TFRecords per split; the ExampleGen also writes its report. The plain loop decodes each
file as it goes (`ImageReader.read`); the ExampleGen's workers `inspect` files without TensorFlow
and its launcher decodes the written examples in batched tf.data passes (`verify_examples`).
Each side runs in its own child process; its peak memory is the largest sum of RSS over that
process and all its descendants (the Beam workers), sampled every 0.1 s. RSS counts the pages of
TensorFlow's libraries once per process; PSS, also shown, shares them out, so its sum is what the
tree really holds. CPU seconds (user + system, the whole tree, imports included) tell the work
done apart from the machine's load.

  .venv/bin/python benchmarks/ingest.py                 # unpacks CIFAKE train under /tmp first
  .venv/bin/python benchmarks/ingest.py --limit 20000   # a class-balanced subset
  .venv/bin/python benchmarks/ingest.py --data /tmp/cifake   # an already unpacked folder
  .venv/bin/python benchmarks/ingest.py --beam_args=      # the ExampleGen's own runner choice
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TARBALL = os.path.join(os.path.dirname(REPO), 'shared', 'data', 'cifake-train.tar.gz')
SCRATCH = os.path.join(tempfile.gettempdir(), 'fakedetect-bench')


def _unpack(tarball: str) -> str:
  target = os.path.join(SCRATCH, 'cifake')
  if not os.path.isdir(target):
    print(f'Unpacking {tarball} to {target} ...', flush=True)
    os.makedirs(target + '.partial', exist_ok=True)
    with tarfile.open(tarball) as tar:
      tar.extractall(target + '.partial', filter='data')
    os.rename(target + '.partial', target)
  return target


def _subset(data_dir: str, limit: int) -> str:
  """A folder of symbolic links to the first `limit` files (sorted), spread over every class
  folder of the layout, so that the layout and the class balance are kept."""
  target = os.path.join(SCRATCH, f'subset-{limit}')
  shutil.rmtree(target, ignore_errors=True)
  leaves = sorted(folder for folder, dirs, files in os.walk(data_dir) if files and not dirs)
  per_leaf = max(1, limit // max(1, len(leaves)))
  for folder in leaves:
    rel = os.path.relpath(folder, data_dir)
    os.makedirs(os.path.join(target, rel))
    for name in sorted(os.listdir(folder))[:per_leaf]:
      os.symlink(os.path.join(folder, name), os.path.join(target, rel, name))
  return target


def _child_env() -> dict:
  """The children's environment: the repo importable, and Python's bytecode cache on.

  Without a bytecode cache (PYTHONDONTWRITEBYTECODE=1 and a venv installed without .pyc files)
  every process compiles each module it imports: ~5 s of CPU for a Beam worker, ~8 s for
  TensorFlow, instead of ~2 and ~3. A user's Python caches bytecode after the first import; the
  benchmark does the same, in a scratch folder, and warms it before timing (`_warm_bytecode`).
  """
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''),
             TF_CPP_MIN_LOG_LEVEL='2', PYTHONWARNINGS='ignore',
             PYTHONPYCACHEPREFIX=os.path.join(SCRATCH, 'pycache'))
  env.pop('PYTHONDONTWRITEBYTECODE', None)
  return env


def _warm_bytecode() -> None:
  """Imports once what both sides and the Beam workers import, so that no timing compiles."""
  subprocess.run([sys.executable, '-c', 'import apache_beam.runners.worker.sdk_worker_main, '
                  'fakedetect.components.image_example_gen.executor'], cwd=REPO, env=_child_env(),
                 check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _run_child(mode: str, data_dir: str, out_dir: str, beam_args: str) -> dict:
  """Runs one side in a child process; returns its own timing plus the process tree's peak RSS."""
  import psutil  # pylint: disable=g-import-not-at-top
  shutil.rmtree(out_dir, ignore_errors=True)
  os.makedirs(out_dir)
  cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
  samples = iter(range(10**9))

  def pss_this_sample() -> bool:  # PSS reads /proc/<pid>/smaps: every 10th sample is enough
    return next(samples) % 10 == 0

  result_file = os.path.join(out_dir, 'result.json')
  env = _child_env()
  child = subprocess.Popen(
      [sys.executable, os.path.abspath(__file__), '--_child', mode, '--data', data_dir,
       '--out', out_dir, f'--beam_args={beam_args}'],
      cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(out_dir, 'log'), 'w'))
  root, peak, peak_pss = psutil.Process(child.pid), 0, 0
  while child.poll() is None:
    try:
      tree = [root] + root.children(recursive=True)
    except psutil.Error:
      break
    rss = pss = 0
    with_pss = pss_this_sample()
    for process in tree:
      try:
        rss += process.memory_info().rss
        if with_pss:
          pss += process.memory_full_info().pss
      except psutil.Error:
        pass
    peak, peak_pss = max(peak, rss), max(peak_pss, pss)
    time.sleep(0.1)
  # The child was reaped by poll(); its rusage (with the Beam workers it waited for) is in
  # RUSAGE_CHILDREN, as the difference from before.
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  if child.returncode:
    raise SystemExit(f'{mode} run failed (exit {child.returncode}); see {out_dir}/log')
  with open(result_file) as f:
    result = json.load(f)
  result['peak_rss_mb'] = peak / 2**20
  result['peak_pss_mb'] = peak_pss / 2**20
  result['cpu_seconds'] = usage.ru_utime + usage.ru_stime - (cpu_before.ru_utime +
                                                            cpu_before.ru_stime)
  return result


def _beam(data_dir: str, out_dir: str, args: List[str]) -> dict:
  from tfx.dsl.components.base import base_beam_executor  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from fakedetect.components.image_example_gen import component, executor  # pylint: disable=g-import-not-at-top
  examples, report = standard_artifacts.Examples(), component.IngestReport()
  examples.uri, report.uri = os.path.join(out_dir, 'examples'), os.path.join(out_dir, 'report')
  for artifact in (examples, report):
    os.makedirs(artifact.uri)
  context = base_beam_executor.BaseBeamExecutor.Context(
      beam_pipeline_args=args, tmp_dir=os.path.join(out_dir, 'tmp'))
  marks = {}

  def marked(name, function):  # when each phase of Executor.Do starts
    def wrapper(*a, **k):
      marks[name] = time.time()
      return function(*a, **k)
    return wrapper
  executor.build_pipeline = marked('pipeline', executor.build_pipeline)
  executor.finish = marked('finish', executor.finish)
  start = time.time()
  executor.Executor(context).Do({}, {'examples': [examples], 'report': [report]},
                                {'data_dir': data_dir, 'split_ratios': None, 'max_pixels': None})
  seconds = time.time() - start
  phases = {'listing': marks['pipeline'] - start, 'beam': marks['finish'] - marks['pipeline'],
            'verify_and_report': start + seconds - marks['finish']}
  with open(os.path.join(report.uri, 'report.json')) as f:
    result = json.load(f)
  return {'seconds': seconds, 'files': result['files_found'], 'ingested': result['ingested'],
          'phases': phases}


def _plain(data_dir: str, out_dir: str) -> dict:
  """One process, one file after the other, the same ImageReader, one TFRecord file per split."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fakedetect.components.image_example_gen import executor, layouts  # pylint: disable=g-import-not-at-top
  start = time.time()
  layout = layouts.detect(data_dir)
  names, plan = executor.plan_splits(executor.DEFAULT_SPLIT_RATIOS, layout.splits)
  entries = layout.list_files(data_dir)
  reader = executor.ImageReader(data_dir, layout, plan, executor.DEFAULT_MAX_PIXELS)
  reader.setup()
  options = tf.io.TFRecordOptions(compression_type='GZIP')
  writers = {name: tf.io.TFRecordWriter(os.path.join(out_dir, f'{name}.tfrecord.gz'), options)
             for name in names}
  ingested = 0
  quarantined = []
  for entry in entries:
    try:
      split, example, _ = reader.read(entry)
    except executor._Reject as r:  # pylint: disable=protected-access
      quarantined.append(executor.quarantine_record(entry[0], r))
      continue
    writers[split].write(example)
    ingested += 1
  for writer in writers.values():
    writer.close()
  return {'seconds': time.time() - start, 'files': len(entries), 'ingested': ingested}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data', help='an unpacked folder (default: unpack --tarball under /tmp)')
  parser.add_argument('--tarball', default=DEFAULT_TARBALL)
  parser.add_argument('--limit', type=int, default=0, help='only this many files (0: all)')
  parser.add_argument('--beam_args', default=None,
                      help='the ExampleGen\'s beam_pipeline_args, space-separated (default: '
                      'what `--runner multi-processing --workers 2` passes it)')
  parser.add_argument('--repeat', type=int, default=3,
                      help='pairs of runs; the medians are compared (this VM\'s timings vary)')
  parser.add_argument('--out', default=os.path.join(SCRATCH, 'out'))
  parser.add_argument('--_child', choices=['beam', 'plain'], help=argparse.SUPPRESS)
  args = parser.parse_args(argv)

  if args._child:  # pylint: disable=protected-access
    if args._child == 'beam':  # pylint: disable=protected-access
      result = _beam(args.data, args.out, args.beam_args.split())
    else:
      result = _plain(args.data, args.out)
    with open(os.path.join(args.out, 'result.json'), 'w') as f:
      json.dump(result, f)
    return

  if args.beam_args is None:
    sys.path.insert(0, REPO)
    from fakedetect.pipeline import config  # pylint: disable=g-import-not-at-top
    args.beam_args = ' '.join(config.beam_pipeline_args(
        config.RunnerConfig(profile='multi-processing', workers=2)))
  data_dir = os.path.abspath(args.data) if args.data else _unpack(args.tarball)
  if args.limit:
    data_dir = _subset(data_dir, args.limit)
  print(f'data: {data_dir}; {os.cpu_count()} cores; ExampleGen beam_pipeline_args: '
        f'{args.beam_args or "none (its own choice)"}', flush=True)
  _warm_bytecode()
  labels = {'plain': 'plain loop (1 process)', 'beam': 'ExampleGen (Beam)'}
  runs = {'plain': [], 'beam': []}
  print(f'{"":32}{"images/s":>10}{"seconds":>9}{"CPU s":>8}{"img/CPU s":>10}{"ingested":>9}'
        f'{"peak RSS":>10}{"peak PSS":>10}', flush=True)
  for attempt in range(1, args.repeat + 1):
    for mode in ('plain', 'beam'):  # alternating, so that a slow spell hits both sides
      row = _run_child(mode, data_dir, os.path.join(args.out, mode), args.beam_args)
      row['images_per_s'] = row['ingested'] / row['seconds']
      runs[mode].append(row)
      print(f'{labels[mode] + f" #{attempt}":32}{row["images_per_s"]:>10.0f}'
            f'{row["seconds"]:>9.1f}{row["cpu_seconds"]:>8.0f}'
            f'{row["ingested"] / row["cpu_seconds"]:>10.0f}{row["ingested"]:>9}'
            f'{row["peak_rss_mb"]:>7.0f} MB{row["peak_pss_mb"]:>7.0f} MB', flush=True)
    print('  ExampleGen phases: ' + ', '.join(
        f'{name} {seconds:.1f} s' for name, seconds in runs['beam'][-1]['phases'].items()),
          flush=True)
  if len({row['ingested'] for rows in runs.values() for row in rows}) != 1:
    raise SystemExit('the runs ingested different numbers of images')
  speed = {mode: statistics.median(row['images_per_s'] for row in rows)
           for mode, rows in runs.items()}
  ratios = [b['images_per_s'] / p['images_per_s'] for p, b in zip(runs['plain'], runs['beam'])]
  peak_rss = max(row['peak_rss_mb'] for row in runs['beam'])
  peak_pss = max(row['peak_pss_mb'] for row in runs['beam'])
  print(f'\nmedian of {args.repeat}: ExampleGen {speed["beam"]:.0f} images/s, plain loop '
        f'{speed["plain"]:.0f}: speed-up {speed["beam"] / speed["plain"]:.2f}x (goal >= 1.5x on '
        f'2 cores; per pair: {", ".join(f"{r:.2f}x" for r in ratios)}); ExampleGen peak RSS '
        f'{peak_rss:.0f} MB, PSS {peak_pss:.0f} MB (goal < 2048 MB); load average '
        f'{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores')


if __name__ == '__main__':
  main()
