"""Images/s and peak memory: the image ExampleGen on Beam against a plain single-process loop.

Both sides do the same work per file (fakedetect.components.image_example_gen.reading.ImageReader:
read, hash, check the header with Pillow, decode with TensorFlow; encoding.encode_examples builds
the tf.Examples) and write gzipped TFRecords per split; the ExampleGen also writes its report.
The plain loop decodes each file as it goes (`ImageReader.read`); the ExampleGen's workers
`inspect` files without TensorFlow and its launcher decodes the written examples in batched
tf.data passes beside the pipeline's last stages (`verify.DecodeCheck`).
Each side runs in its own child process; its peak memory is the largest sum of RSS over that
process and all its descendants (the Beam workers), sampled every 0.1 s. RSS counts the pages of
TensorFlow's libraries once per process; PSS, also shown, shares them out, so its sum is what the
tree really holds. CPU seconds (user + system, the whole tree, imports included) tell the work
done apart from the machine's load.

`--baseline DIR` adds a third side: the ExampleGen of another checkout (e.g. `git worktree add
/tmp/before HEAD~1`), run by that checkout's own benchmark script, alternating with this one, so
that a change is measured against what it replaces in the same session. Each side imports its own
checkout's code (an import root per checkout, laid out as setup.py maps the folders), never the
editable install's; the header names the executor file each side runs.
`--serializers` times the tf.Example encoders instead, on the same CIFAKE images.

  .venv/bin/python benchmarks/ingest.py                 # unpacks CIFAKE train under /tmp first
  .venv/bin/python benchmarks/ingest.py --limit 20000   # a class-balanced subset
  .venv/bin/python benchmarks/ingest.py --data /tmp/cifake   # an already unpacked folder
  .venv/bin/python benchmarks/ingest.py --beam_args=      # the ExampleGen's own runner choice
  .venv/bin/python benchmarks/ingest.py --limit 20000 --baseline /tmp/before --repeat 5
  .venv/bin/python benchmarks/ingest.py --serializers --limit 20000
"""

import argparse
import functools
import hashlib
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
_CHUNK = 64  # files per chunk, as a Beam element of the ExampleGen carries


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
  """A folder of hard links to the first `limit` files (sorted), spread over every class
  folder of the layout, so that the layout and the class balance are kept."""
  target = os.path.join(SCRATCH, f'subset-{limit}')
  shutil.rmtree(target, ignore_errors=True)
  leaves = sorted(folder for folder, dirs, files in os.walk(data_dir) if files and not dirs)
  per_leaf = max(1, limit // max(1, len(leaves)))
  for folder in leaves:
    rel = os.path.relpath(folder, data_dir)
    os.makedirs(os.path.join(target, rel))
    for name in sorted(os.listdir(folder))[:per_leaf]:
      # Hard links: the ingest does not follow links that leave the data folder.
      os.link(os.path.join(folder, name), os.path.join(target, rel, name))
  return target


# How setup.py maps a checkout's folders into the one import name.
_PACKAGE_DIRS = {'components': 'components', 'pipeline': 'pipeline'}


def _import_root(repo: str) -> str:
  """A folder whose `fakedetect` package is `repo`'s code, laid out as setup.py installs it.

  PYTHONPATH=repo alone is not enough: `fakedetect.components` is not a folder of the checkout,
  so Python would find it through the editable install, i.e. in whichever checkout that points
  to. Here fakedetect/ holds links to repo/fakedetect's files and to repo/components and
  repo/pipeline, so every module of the package comes from repo. The children (and the Beam
  workers, started with `python -m`, which puts the working folder first on sys.path) run in
  SCRATCH, not in a checkout, whose own fakedetect/ would come first.
  """
  root = os.path.join(SCRATCH, 'import-roots', hashlib.sha1(repo.encode()).hexdigest()[:12])
  package = os.path.join(root, 'fakedetect')
  shutil.rmtree(root, ignore_errors=True)
  os.makedirs(package)
  for name in os.listdir(os.path.join(repo, 'fakedetect')):
    os.symlink(os.path.join(repo, 'fakedetect', name), os.path.join(package, name))
  for name, folder in _PACKAGE_DIRS.items():
    os.symlink(os.path.join(repo, folder), os.path.join(package, name))
  return root


def _child_env(repo: str = REPO) -> dict:
  """A child's environment: `repo`'s code importable (`_import_root`), Python's bytecode cache on.

  Without a bytecode cache (PYTHONDONTWRITEBYTECODE=1 and a venv installed without .pyc files)
  every process compiles each module it imports: ~5 s of CPU for a Beam worker, ~8 s for
  TensorFlow, instead of ~2 and ~3. A user's Python caches bytecode after the first import; the
  benchmark does the same, in a scratch folder, and warms it before timing (`_warm_bytecode`).
  """
  env = dict(os.environ, PYTHONPATH=_import_root(repo) + os.pathsep + os.environ.get(
      'PYTHONPATH', ''), TF_CPP_MIN_LOG_LEVEL='2', PYTHONWARNINGS='ignore',
             PYTHONPYCACHEPREFIX=os.path.join(SCRATCH, 'pycache'))
  env.pop('PYTHONDONTWRITEBYTECODE', None)
  return env


def _warm_bytecode(repo: str) -> str:
  """Imports once what both sides and the Beam workers import, so that no timing compiles;
  returns the executor file this checkout's children run."""
  done = subprocess.run(
      [sys.executable, '-c', 'import apache_beam.runners.worker.sdk_worker_main, tensorflow; '
       'from fakedetect.components.image_example_gen import executor; print(executor.__file__)'],
      cwd=SCRATCH, env=_child_env(repo), check=True, capture_output=True, text=True)
  return os.path.realpath(done.stdout.strip().splitlines()[-1])


def _run_child(mode: str, data_dir: str, out_dir: str, beam_args: str, repo: str = REPO) -> dict:
  """Runs one side in a child process (the benchmark script of checkout `repo`); returns its own
  timing plus the process tree's peak RSS."""
  import psutil  # pylint: disable=g-import-not-at-top
  shutil.rmtree(out_dir, ignore_errors=True)
  os.makedirs(out_dir)
  cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
  samples = iter(range(10**9))

  def pss_this_sample() -> bool:  # PSS reads /proc/<pid>/smaps: every 10th sample is enough
    return next(samples) % 10 == 0

  result_file = os.path.join(out_dir, 'result.json')
  env = _child_env(repo)
  child = subprocess.Popen(
      [sys.executable, os.path.join(repo, 'benchmarks', 'ingest.py'), '--_child', mode, '--data',
       data_dir, '--out', out_dir, f'--beam_args={beam_args}'],
      cwd=SCRATCH, env=env, stdout=subprocess.DEVNULL,
      stderr=open(os.path.join(out_dir, 'log'), 'w'))
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
  from fakedetect.components.image_example_gen import beam_graph, component, executor, report  # pylint: disable=g-import-not-at-top
  examples, ingest_report = standard_artifacts.Examples(), component.IngestReport()
  examples.uri = os.path.join(out_dir, 'examples')
  ingest_report.uri = os.path.join(out_dir, 'report')
  for artifact in (examples, ingest_report):
    os.makedirs(artifact.uri)
  context = base_beam_executor.BaseBeamExecutor.Context(
      beam_pipeline_args=args, tmp_dir=os.path.join(out_dir, 'tmp'))
  marks = {}

  def marked(name, function):  # when each phase of Executor.Do starts
    def wrapper(*a, **k):
      marks[name] = time.time()
      return function(*a, **k)
    return wrapper
  beam_graph.build_pipeline = marked('pipeline', beam_graph.build_pipeline)
  report.IngestResults.load = marked('finish', report.IngestResults.load)
  start = time.time()
  executor.Executor(context).Do({}, {'examples': [examples], 'report': [ingest_report]},
                                {'data_dir': data_dir, 'split_ratios': None, 'max_pixels': None})
  seconds = time.time() - start
  phases = {'listing': marks['pipeline'] - start, 'beam': marks['finish'] - marks['pipeline'],
            'verify_and_report': start + seconds - marks['finish']}
  with open(os.path.join(ingest_report.uri, report.REPORT_FILE)) as f:
    result = json.load(f)
  return {'seconds': seconds, 'files': result['files_found'], 'ingested': result['ingested'],
          'phases': phases}


def _plain(data_dir: str, out_dir: str) -> dict:
  """One process, one file after the other, the same ImageReader and encoder (a chunk of files
  at a time, as a worker encodes), one TFRecord file per split."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fakedetect.components import features  # pylint: disable=g-import-not-at-top
  from fakedetect.components.image_checks import ImageRejected  # pylint: disable=g-import-not-at-top
  from fakedetect.components.image_example_gen import encoding, layouts, reading, splits  # pylint: disable=g-import-not-at-top
  start = time.time()
  layout = layouts.detect(data_dir)
  names, plan = splits.plan_splits(splits.DEFAULT_SPLIT_RATIOS, layout.splits)
  entries = layout.list_files(data_dir)
  reader = reading.ImageReader(data_dir, layout, plan, features.MAX_IMAGE_PIXELS)
  reader.setup()
  options = tf.io.TFRecordOptions(compression_type='GZIP')
  writers = {name: tf.io.TFRecordWriter(os.path.join(out_dir, f'{name}.tfrecord.gz'), options)
             for name in names}
  ingested = 0
  quarantined = []
  for first in range(0, len(entries), _CHUNK):
    by_split = {}
    for entry in entries[first:first + _CHUNK]:
      try:
        split, data, meta = reader.read(entry)
      except ImageRejected as rejected:
        quarantined.append(reading.quarantine_record(entry[0], rejected))
        continue
      by_split.setdefault(split, []).append((data, meta))
    for split, images in by_split.items():
      for example in encoding.encode_examples(images):
        writers[split].write(example)
      ingested += len(images)
  for writer in writers.values():
    writer.close()
  return {'seconds': time.time() - start, 'files': len(entries), 'ingested': ingested}


# The tf.Example encoder the workers ran before tfx_bsl's, as it was (kept to measure against).
_BYTE = [bytes((i,)) for i in range(128)]  # varints below 128 are one byte
_FIELD_1, _FIELD_2, _FIELD_3 = b'\x0a', b'\x12', b'\x1a'  # (number << 3) | 2


def _varint(value: int) -> bytes:
  if 0 <= value < 128:
    return _BYTE[value]
  value &= (1 << 64) - 1  # int64 two's complement, as protobuf encodes a negative
  out = bytearray()
  while value > 0x7f:
    out.append(value & 0x7f | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
  return tag + _varint(len(payload)) + payload


@functools.cache
def _key_field(key: str) -> bytes:
  return _field(_FIELD_1, key.encode('utf-8'))


def _serialize_example(values) -> bytes:
  """Example{features=1: Features{feature=1: map<string, Feature>}}, Feature{bytes_list=1 |
  int64_list=3}, BytesList{value=1}, Int64List{packed value=1}, in Python."""
  entries = []
  for key, value in values.items():
    if isinstance(value, int):
      feature = _field(_FIELD_3, _field(_FIELD_1, _varint(value)))
    else:
      data = value.encode('utf-8') if isinstance(value, str) else value
      feature = _field(_FIELD_1, _field(_FIELD_1, data))
    entries.append(_field(_FIELD_1, _key_field(key) + _field(_FIELD_2, feature)))
  return _field(_FIELD_1, b''.join(entries))


def _hand_written_encoder(images) -> List[bytes]:
  from fakedetect.components import features  # pylint: disable=g-import-not-at-top
  return [_serialize_example({
      features.IMAGE_KEY: data,
      features.LABEL_KEY: meta['label'],
      features.SOURCE_KEY: meta['source'],
      features.FORMAT_KEY: meta['format'],
      features.HEIGHT_KEY: meta['height'],
      features.WIDTH_KEY: meta['width'],
      features.HASH_KEY: meta['hash'],
      features.PATH_KEY: meta['path'],
      features.SIZE_BUCKET_KEY: features.size_bucket(meta['height'], meta['width']),
  }) for data, meta in images]


def _serializers(data_dir: str, repeat: int) -> None:
  """Microseconds per example of each tf.Example encoder on the same images, a chunk at a time
  as a worker encodes; both must give the same messages."""
  sys.path.insert(0, _import_root(REPO))
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fakedetect.components import features  # pylint: disable=g-import-not-at-top
  from fakedetect.components.image_checks import ImageRejected  # pylint: disable=g-import-not-at-top
  from fakedetect.components.image_example_gen import encoding, layouts, reading, splits  # pylint: disable=g-import-not-at-top
  layout = layouts.detect(data_dir)
  _, plan = splits.plan_splits(splits.DEFAULT_SPLIT_RATIOS, layout.splits)
  reader = reading.ImageReader(data_dir, layout, plan, features.MAX_IMAGE_PIXELS)
  images = []
  for entry in layout.list_files(data_dir):
    try:
      images.append(reader.inspect(entry)[1:])
    except ImageRejected:
      pass
  chunks = [images[i:i + _CHUNK] for i in range(0, len(images), _CHUNK)]
  encoders = {'tfx_bsl RecordBatchToExamplesEncoder (C++)': encoding.encode_examples,
              'hand-written protobuf encoder (Python)': _hand_written_encoder}
  outputs = [[tf.train.Example.FromString(e) for e in encode(chunks[0])]
             for encode in encoders.values()]
  if any(output != outputs[0] for output in outputs):
    raise SystemExit('the encoders disagree on the first chunk')
  timings = {name: [] for name in encoders}
  for _ in range(repeat):
    for name, encode in encoders.items():  # alternating, so that a slow spell hits both
      start = time.perf_counter()
      for chunk in chunks:
        encode(chunk)
      timings[name].append((time.perf_counter() - start) / len(images) * 1e6)
  print(f'{len(images)} images of {data_dir}, {_CHUNK} per call; microseconds per example '
        f'(median of {repeat}; each run):')
  for name, runs in timings.items():
    print(f'  {name:44}{statistics.median(runs):8.2f}   '
          + ' '.join(f'{t:.2f}' for t in runs))


def _compare(data_dir: str, args) -> None:
  """Plain loop against the ExampleGen (and --baseline's ExampleGen), alternating."""
  repos = {'plain': REPO, 'beam': REPO, 'baseline': args.baseline}
  modes = ['plain', 'beam'] + (['baseline'] if args.baseline else [])
  for repo in sorted({repos[mode] for mode in modes}):
    print(f'{repo}: runs {_warm_bytecode(repo)}', flush=True)
  labels = {'plain': 'plain loop (1 process)', 'beam': 'ExampleGen (Beam)',
            'baseline': 'baseline ExampleGen (Beam)'}
  runs = {mode: [] for mode in modes}
  print(f'{"":32}{"images/s":>10}{"seconds":>9}{"CPU s":>8}{"img/CPU s":>10}{"ingested":>9}'
        f'{"peak RSS":>10}{"peak PSS":>10}', flush=True)
  for attempt in range(1, args.repeat + 1):
    for mode in modes:  # alternating, so that a slow spell hits every side
      row = _run_child('beam' if mode == 'baseline' else mode, data_dir,
                       os.path.join(args.out, mode), args.beam_args, repos[mode])
      row['images_per_s'] = row['ingested'] / row['seconds']
      runs[mode].append(row)
      print(f'{labels[mode] + f" #{attempt}":32}{row["images_per_s"]:>10.0f}'
            f'{row["seconds"]:>9.1f}{row["cpu_seconds"]:>8.0f}'
            f'{row["ingested"] / row["cpu_seconds"]:>10.0f}{row["ingested"]:>9}'
            f'{row["peak_rss_mb"]:>7.0f} MB{row["peak_pss_mb"]:>7.0f} MB', flush=True)
      if mode != 'plain':
        print(f'  {mode} phases: ' + ', '.join(
            f'{name} {seconds:.1f} s' for name, seconds in row['phases'].items()), flush=True)
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
  if args.baseline:
    against = [b['images_per_s'] / a['images_per_s']
               for a, b in zip(runs['baseline'], runs['beam'])]
    cpu = {mode: statistics.median(row['cpu_seconds'] for row in runs[mode])
           for mode in ('beam', 'baseline')}
    print(f'against the baseline: ExampleGen {speed["beam"]:.0f} images/s, baseline '
          f'{speed["baseline"]:.0f}: {speed["beam"] / speed["baseline"]:.3f}x (per run: '
          f'{", ".join(f"{r:.3f}x" for r in against)}, median {statistics.median(against):.3f}x);'
          f' CPU s {cpu["beam"]:.1f} against {cpu["baseline"]:.1f}')


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data', help='an unpacked folder (default: unpack --tarball under /tmp)')
  parser.add_argument('--tarball', default=DEFAULT_TARBALL)
  parser.add_argument('--limit', type=int, default=0, help='only this many files (0: all)')
  parser.add_argument('--beam_args', default=None,
                      help='the ExampleGen\'s beam_pipeline_args, space-separated (default: '
                      'what `--runner multi-processing --workers 2` passes it)')
  parser.add_argument('--repeat', type=int, default=3,
                      help='rounds of runs; the medians are compared (this VM\'s timings vary)')
  parser.add_argument('--baseline', default=None, type=os.path.abspath,
                      help='another checkout whose ExampleGen runs in every round too')
  parser.add_argument('--serializers', action='store_true',
                      help='time the tf.Example encoders instead (no ExampleGen run)')
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

  data_dir = os.path.abspath(args.data) if args.data else _unpack(args.tarball)
  if args.limit:
    data_dir = _subset(data_dir, args.limit)
  if args.serializers:
    _serializers(data_dir, args.repeat)
    return
  if args.beam_args is None:
    sys.path.insert(0, _import_root(REPO))
    from fakedetect.pipeline import config  # pylint: disable=g-import-not-at-top
    args.beam_args = ' '.join(config.beam_pipeline_args(  # setup.py: config's own lookup would
        config.RunnerConfig(profile='multi-processing', workers=2),  # look in the import root
        setup_file=os.path.join(REPO, 'setup.py')))
  print(f'data: {data_dir}; {os.cpu_count()} cores; ExampleGen beam_pipeline_args: '
        f'{args.beam_args or "none (its own choice)"}', flush=True)
  _compare(data_dir, args)


if __name__ == '__main__':
  main()
