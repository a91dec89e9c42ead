"""Training throughput: the Trainer's images/s and GFLOP/s, next to the machine's own limit.

    .venv/bin/python benchmarks/train_speed.py  # 5,000 CIFAKE images, 3 repeats: ~45 min, 2 cores
    .venv/bin/python benchmarks/train_speed.py --images 400 --repeats 1 --rows today in-memory

On benchmarks/cifake.py's RECIPE model (the default cnn at 32 px, batch 64, its augmentation, the
Trainer's dtype policy for this CPU), every row trains on the same CIFAKE subset, which the
project's preprocessing_fn turned into transformed tf.Examples through tf.Transform once (gzipped
TFRecords, as the Transform component writes them; kept in --workdir). Rows (ROWS below):
  today         the Trainer before issue #18: TFXIO reads, decompresses and parses the TFRecords
                every epoch (train.cache_bytes=0), batch norm is Keras' own, unfused, and
                tf.data autotunes the input
  streamed      the Trainer's model and input options now (components/batch_norm.py's fused
                batch norm, autotuning off), streamed
  in-memory     the Trainer's input now: parsed once, then shuffled, batched and augmented from
                memory; the rows below it change one thing (oneDNN: TF_ENABLE_ONEDNN_OPTS=1;
                keras-bn: Keras' BatchNormalization.call instead of the fused one; autotune:
                tf.data's autotuning on)
  input-*       the input pipeline alone, no model: what it costs per image
  model-alone   one augmented batch already in memory, again and again: the model's ceiling
  matmul-*      a 2048^3 matmul in TensorFlow: the machine's limit in each dtype
Each row runs in a fresh process (oneDNN's switch is read when TensorFlow starts), the rows
interleaved within each repeat so that a busy machine slows them alike. A process makes a first
pass over the subset (tracing the model, filling the in-memory copy: its seconds are shown
apart), then --passes timed passes, of which the fastest counts (the one other processes
disturbed least), and their mean (what a Trainer's epochs average, slow ones included); the
table shows medians over repeats. CPU ms/image counts every thread of the
process, which another process's load barely changes. Validation passes are not included, unlike
the Trainer's history.json figure. GFLOP/s counts 6 FLOPs per multiply-add of the model's Conv2D
and Dense layers per image (forward, and the backward pass's two products).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List

from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cifake  # pylint: disable=g-import-not-at-top,wrong-import-position

ONEDNN = {'TF_ENABLE_ONEDNN_OPTS': '1'}
# name: (what it measures, the process environment, --set settings over cifake.RECIPE, options)
ROWS: Dict[str, tuple] = {
    'today': ('streamed, Keras\' batch norm (the Trainer before #18)', {},
              ['train.cache_bytes=0'], {'keras_bn': True, 'autotune': True}),
    'streamed': ('streamed every epoch (train.cache_bytes=0)', {}, ['train.cache_bytes=0'], {}),
    'in-memory': ('held in memory (the Trainer\'s default)', {}, [], {}),
    'keras-bn': ('in memory, Keras\' batch norm', {}, [], {'keras_bn': True}),
    'autotune': ('in memory, tf.data autotuning on (as before)', {}, [], {'autotune': True}),
    'input-today': ('input alone, streamed', {}, ['train.cache_bytes=0'], {'input_only': True}),
    'input-memory': ('input alone, in memory', {}, [], {'input_only': True}),
    'no-augment': ('in memory, no augmentation', {}, [], {'augment': False}),
    'model-alone': ('one batch in memory: the model alone', {}, [], {'alone': True}),
    'keras-bn-alone': ('model alone, Keras\' batch norm', {}, [],
                       {'alone': True, 'keras_bn': True}),
    'batch-128': ('in memory, batch 128', {}, ['train.batch_size=128'], {}),
    'xla': ('in memory, XLA (jit_compile)', {}, [], {'jit': True}),
    'inter-op-1': ('in memory, 1 inter-op thread', {}, [], {'inter_op': 1}),
    'onednn-today': ('streamed, oneDNN on', ONEDNN, ['train.cache_bytes=0'], {}),
    'onednn': ('in memory, oneDNN on', ONEDNN, [], {}),
    'onednn-alone': ('model alone, oneDNN on', ONEDNN, [], {'alone': True}),
    'onednn-128': ('in memory, oneDNN on, batch 128', ONEDNN, ['train.batch_size=128'], {}),
    'matmul-f32': ('float32 matmul', {}, [], {'matmul': 'float32'}),
    'matmul-f32-onednn': ('float32 matmul, oneDNN on', ONEDNN, [], {'matmul': 'float32'}),
    'matmul-bf16': ('bfloat16 matmul', {}, [], {'matmul': 'bfloat16'}),
}
VIEW = {'view': 'global', 'size': 32}  # what `auto` resolves to for CIFAKE


def build_examples(data: str, root: str, images: int) -> str:
  """`images` CIFAKE training images (half per class, sorted) through the project's Transform,
  written as the Transform component writes them; reused when present. Returns `root`."""
  done = os.path.join(root, '.built')
  if os.path.exists(done):
    return root
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  import tensorflow_transform.beam as tft_beam  # pylint: disable=g-import-not-at-top
  from tensorflow_transform.tf_metadata import dataset_metadata  # pylint: disable=g-import-not-at-top
  from tensorflow_transform.tf_metadata import schema_utils  # pylint: disable=g-import-not-at-top
  from fakedetect.components import features  # pylint: disable=g-import-not-at-top
  from fakedetect.components import transform  # pylint: disable=g-import-not-at-top
  rows = []
  for label, cls in ((features.REAL, 'REAL'), (features.FAKE, 'FAKE')):
    folder = os.path.join(data, 'train', cls)
    for name in sorted(os.listdir(folder))[:images // 2]:
      with open(os.path.join(folder, name), 'rb') as f:
        rows.append({features.IMAGE_KEY: [f.read()], features.LABEL_KEY: [label]})
  spec = {features.IMAGE_KEY: tf.io.FixedLenFeature([1], tf.string),
          features.LABEL_KEY: tf.io.FixedLenFeature([1], tf.int64)}
  metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
  with tft_beam.Context(temp_dir=os.path.join(root, 'tmp')):
    (transformed, transformed_metadata), transform_fn = (
        (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: transform.preprocessing_fn(inputs, {'image': VIEW})))
    _ = transform_fn | tft_beam.WriteTransformFn(os.path.join(root, 'transform_graph'))
  coder = tft.coders.ExampleProtoCoder(transformed_metadata.schema)
  os.makedirs(os.path.join(root, 'Split-train'), exist_ok=True)
  path = os.path.join(root, 'Split-train', 'transformed_examples-00000-of-00001.gz')
  with tf.io.TFRecordWriter(path, 'GZIP') as writer:
    for row in transformed:
      writer.write(coder.encode(row))
  open(done, 'w').close()
  return root


def training_flops(model) -> float:
  """Floating-point operations to train on one image: 2 x 3 x the multiply-adds of every Conv2D,
  DepthwiseConv2D and Dense layer (nested models included), from the layers' shapes."""
  import keras  # pylint: disable=g-import-not-at-top
  macs = 0
  for layer in model._flatten_layers(include_self=False):  # pylint: disable=protected-access
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
      kernel = layer.kernel.shape  # [kh, kw, in, out] (depthwise: [kh, kw, in, multiplier])
      out = layer.output.shape
      macs += out[1] * out[2] * kernel[0] * kernel[1] * kernel[2] * kernel[3] // (
          1 if isinstance(layer, keras.layers.DepthwiseConv2D) else layer.groups)
    elif isinstance(layer, keras.layers.Dense):
      macs += layer.kernel.shape[0] * layer.kernel.shape[1]
  return 6.0 * macs


def _matmul(dtype_name: str, size: int = 2048) -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  a = tf.cast(tf.random.normal([size, size]), dtype_name)
  product = tf.function(lambda: tf.matmul(a, a))
  product().numpy()
  seconds = []
  for _ in range(5):
    started = time.perf_counter()
    product().numpy()
    seconds.append(time.perf_counter() - started)
  return {'gflops': 2 * size**3 / statistics.median(seconds) / 1e9}


def _onednn_enabled() -> bool:
  try:
    from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-import-not-at-top
    return bool(_pywrap_util_port.IsMklEnabled())
  except (ImportError, AttributeError):
    return False


def _accessor(root: str):
  """The Trainer's data accessor, as TFX builds it from the Transform's Examples artifact."""
  from tfx.components.util import examples_utils  # pylint: disable=g-import-not-at-top
  from tfx.components.util import tfxio_utils  # pylint: disable=g-import-not-at-top
  from tfx.proto import example_gen_pb2  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  examples = standard_artifacts.Examples()
  examples.uri, examples.split_names = root, '["train"]'
  examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
  return type('DataAccessor', (), {'tf_dataset_factory': staticmethod(
      tfxio_utils.get_tf_dataset_factory_from_artifact([examples], ['train_speed']))})


def _fastest(marks: List[tuple], images: int) -> dict:
  """The fastest pass between (wall, CPU) time marks after the first pass: its images/s and
  CPU ms per image (all of this process's threads)."""
  wall, cpu = min((b[0] - a[0], b[1] - a[1]) for a, b in zip(marks[1:], marks[2:]))
  every = (marks[-1][0] - marks[1][0]) / (len(marks) - 2)
  return {'images_per_second': images / wall, 'cpu_ms_per_image': 1000 * cpu / images,
          'mean_images_per_second': images / every,
          'first_pass_seconds': marks[1][0] - marks[0][0], 'images_per_pass': images}


def measure(row: str, root: str, passes: int) -> dict:
  """One row in this process: the fastest of `passes` passes after a first one."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  from fakedetect.components import distribute  # pylint: disable=g-import-not-at-top
  from fakedetect.components import model as model_lib  # pylint: disable=g-import-not-at-top
  from fakedetect.components import train_input  # pylint: disable=g-import-not-at-top
  from fakedetect.pipeline import config as config_lib  # pylint: disable=g-import-not-at-top

  _, _, settings, options = ROWS[row]
  if options.get('keras_bn'):
    from fakedetect.components import batch_norm  # pylint: disable=g-import-not-at-top
    batch_norm.FusedBatchNormalization.call = keras.layers.BatchNormalization.call
  if options.get('inter_op'):  # before TensorFlow's runtime starts
    tf.config.threading.set_inter_op_parallelism_threads(options['inter_op'])
  found = {'onednn': _onednn_enabled()}
  if 'matmul' in options:
    return {**found, **_matmul(options['matmul'])}
  train = config_lib.PipelineConfig().with_overrides(cifake.RECIPE + settings).train
  found['precision'] = distribute.set_precision(train.precision)
  files = [os.path.join(root, 'Split-train', '*')]
  count, size = train_input.split_size(files)
  view = config_lib.ImageConfig(**VIEW).resolved()
  hparams = {name: getattr(train, name) for name in model_lib.HPARAM_NAMES}
  keras.utils.set_random_seed(train.seed)
  data = train_input.dataset(
      files, _accessor(root), tft.TFTransformOutput(os.path.join(root, 'transform_graph')), view,
      train.batch_size, training=True, seed=train.seed,
      in_memory=count if size <= train_input.memory_budget(train.cache_bytes) else None)
  if options.get('augment', True):
    data = train_input.augmented(data, hparams)
  if options.get('autotune'):
    tuning = tf.data.Options()
    tuning.autotune.enabled = True
    data = data.with_options(tuning)
  marks = [(time.monotonic(), time.process_time())]
  mark = lambda *_: marks.append((time.monotonic(), time.process_time()))
  if options.get('input_only'):
    for _ in range(1 + passes):
      for _ in data:
        pass
      mark()
    return {**found, **_fastest(marks, count)}
  if options.get('alone'):
    data = tf.data.Dataset.from_tensors(next(iter(data))).repeat(
        -(-count // train.batch_size)).with_options(data.options())
    count = -(-count // train.batch_size) * train.batch_size
  model = model_lib.build_from_hparams(view, model_lib.Architecture(), hparams)
  model.jit_compile = bool(options.get('jit'))
  marks[0] = (time.monotonic(), time.process_time())
  model.fit(data, epochs=1 + passes, verbose=0,
            callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=mark)])
  result = {**found, **_fastest(marks, count), 'training_flops_per_image': training_flops(model)}
  result['gflops'] = result['images_per_second'] * result['training_flops_per_image'] / 1e9
  return result


def run_row(row: str, root: str, passes: int) -> dict:
  """`measure` in a fresh process with the row's environment; its last stdout line is JSON."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', **ROWS[row][1])
  done = subprocess.run([sys.executable, os.path.abspath(__file__), '--worker', row,
                         '--examples', root, '--passes', str(passes)],
                        env=env, check=False, capture_output=True, text=True)
  if done.returncode:
    sys.exit(f'Row {row} failed (exit {done.returncode}):\n{done.stderr[-3000:]}')
  return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: Dict[str, List[dict]]) -> str:
  """A line per row, medians over repeats: images/s against today's (the input rows against
  today's input), and GFLOP/s against the best matmul measured in the dtype the row trained in
  (the machine's limit: bfloat16 for a mixed_bfloat16 row, float32 otherwise)."""
  def median(row, key):
    values = [r[key] for r in results.get(row, []) if key in r]
    return statistics.median(values) if values else None
  limits = {dtype: max((median(row, 'gflops') for row in results
                        if ROWS[row][3].get('matmul') == dtype), default=None)
            for dtype in ('float32', 'bfloat16')}
  lines = []
  for row, found in results.items():
    speed, gflops = median(row, 'images_per_second'), median(row, 'gflops')
    limit = limits['bfloat16' if found[0].get('precision') == 'mixed_bfloat16' else 'float32']
    baseline = 'input-today' if ROWS[row][3].get('input_only') else 'today'
    today, mean = median(baseline, 'images_per_second'), median(row, 'mean_images_per_second')
    today_mean = median(baseline, 'mean_images_per_second')
    lines.append([row, ROWS[row][0], speed, speed / today if speed and today else None, mean,
                  mean / today_mean if mean and today_mean else None,
                  median(row, 'cpu_ms_per_image'), gflops,
                  100 * gflops / limit if gflops and limit else None,
                  median(row, 'first_pass_seconds'), 'on' if found[0]['onednn'] else 'off'])
  return tabulate(lines, headers=['row', 'what', 'images/s', 'x today', 'mean images/s',
                                  'x today', 'CPU ms/image', 'GFLOP/s', '% of limit',
                                  'first pass s', 'oneDNN'],
                  floatfmt=('', '', '.0f', '.2f', '.0f', '.2f', '.2f', '.1f', '.0f', '.1f', ''),
                  missingval='-')


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data', default='/tmp/cifake',
                      help='an unpacked CIFAKE folder (train/REAL, train/FAKE); unpacked from '
                      '--archive into --workdir when missing')
  parser.add_argument('--archive', default=cifake.DEFAULT_ARCHIVE)
  parser.add_argument('--workdir', default='/tmp/fakedetect-train-speed')
  parser.add_argument('--images', type=int, default=5000, help='training images (both classes)')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--passes', type=int, default=2,
                      help='timed passes per process, after the first; the fastest counts')
  parser.add_argument('--rows', nargs='+', default=list(ROWS), help=f'of {", ".join(ROWS)}')
  parser.add_argument('--json', help='also write every measurement here')
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  parser.add_argument('--examples', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  unknown = [row for row in args.rows + [args.worker or 'today'] if row not in ROWS]
  if unknown:
    parser.error(f'unknown row(s) {", ".join(unknown)}; known: {", ".join(ROWS)}')
  if args.images < 2 or args.repeats < 1 or args.passes < 1:
    parser.error('--images needs at least 2 (one per class), --repeats and --passes at least 1')
  return args


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.worker:
    print(json.dumps(measure(args.worker, args.examples, args.passes)))
    return
  from fakedetect.components import distribute  # pylint: disable=g-import-not-at-top
  rows = [row for row in args.rows
          if ROWS[row][3].get('matmul') != 'bfloat16' or distribute.cpu_has_bfloat16()]
  data = args.data if os.path.isdir(os.path.join(args.data, 'train')) else cifake.unpack(
      args.archive, args.workdir)
  root = build_examples(data, os.path.join(args.workdir, f'examples-{args.images}'), args.images)
  results: Dict[str, List[dict]] = {row: [] for row in rows}
  for repeat in range(args.repeats):
    for row in rows:
      results[row].append(run_row(row, root, args.passes))
      print(f'repeat {repeat + 1}/{args.repeats} {row}: {results[row][-1]}', flush=True)
  print(f'\n== training throughput, {args.images} CIFAKE images, cnn at 32 px, medians of '
        f'{args.repeats} ==')
  print(table(results))
  if not distribute.cpu_has_bfloat16():
    print('bfloat16: no bf16 units on this CPU (no avx512_bf16 or amx_bf16 flag): the Trainer '
          'computes in float32.')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  main()
