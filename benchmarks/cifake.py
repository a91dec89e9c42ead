"""CIFAKE benchmark: the whole pipeline against a plain Keras script, on CIFAKE's training split.

    .venv/bin/python benchmarks/cifake.py                      # all 100k images, RECIPE below
    .venv/bin/python benchmarks/cifake.py --limit 2000 --epochs 2   # a quick look
    .venv/bin/python benchmarks/cifake.py --skip-plain; ... --reuse-run  # the two sides apart

The pipeline carves eval and test out of train by content hash (CIFAKE's official test split is
held back for independent checking) and reports accuracy, precision, recall, F1 and AUC on its
test split, wall time per component and training images/s. In the same run, the same model
(components/model.py, same hyperparameters and as many epochs as the Trainer ran) is trained by
a plain script, `keras.utils.image_dataset_from_directory` + `fit`, so the pipeline's overhead
is a ratio.
"""

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time

from fakedetect.components.image_example_gen import folders
from fakedetect.pipeline import names

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WALL_FILE = 'benchmark_wall.json'
DEFAULT_ARCHIVE = os.path.join(os.path.dirname(REPO), 'shared', 'data', 'cifake-train.tar.gz')
# The settings the README's Results come from; --set and --epochs override them.
RECIPE = ['train.batch_size=64', 'train.epochs=16', 'data.train_percent=80',
          'data.eval_percent=10', 'data.test_percent=10']


def unpack(archive: str, workdir: str) -> str:
  """Extracts once; returns the folder that holds train/."""
  target = os.path.join(workdir, 'cifake')
  done = os.path.join(target, '.unpacked')
  if not os.path.exists(done):
    if not os.path.exists(archive):
      sys.exit(f'No CIFAKE archive at {archive}; pass --archive PATH (or --data an unpacked '
               'folder with train/REAL and train/FAKE).')
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    os.makedirs(target, exist_ok=True)
    with tarfile.open(archive) as tar:
      for member in tqdm(tar, desc='unpacking CIFAKE', unit='file', mininterval=2):
        tar.extract(member, target)
    open(done, 'w').close()
  return target


def subset(data: str, workdir: str, per_class: int) -> str:
  """A folder of hard links (folders.link_into) to the first `per_class` files of each class
  (sorted: deterministic)."""
  target = os.path.join(workdir, f'cifake-{per_class}')
  for cls in ('REAL', 'FAKE'):
    src = os.path.join(data, 'train', cls)
    dst = os.path.join(target, 'train', cls)
    if os.path.isdir(dst):
      continue
    os.makedirs(dst)
    for name in sorted(os.listdir(src))[:per_class]:
      folders.link_into(os.path.join(src, name), os.path.join(dst, name))
  return target


def run_pipeline(data: str, output: str, settings) -> dict:
  command = [sys.executable, '-m', 'fakedetect', 'run', '--data', data, '--output', output]
  for setting in settings:
    command += ['--set', setting]
  print('$', ' '.join(command), flush=True)
  started = time.monotonic()
  subprocess.run(command, check=True, cwd=REPO)
  summary = json.load(open(os.path.join(output, names.SUMMARY_FILE)))
  summary['wall_seconds'] = time.monotonic() - started
  with open(os.path.join(output, WALL_FILE), 'w') as f:
    json.dump({'wall_seconds': summary['wall_seconds'], 'settings': list(settings)}, f)
  return summary


def reuse_run(output: str, settings) -> dict:
  """The summary of an earlier benchmark run with the same settings, or None."""
  try:
    with open(os.path.join(output, WALL_FILE)) as f:
      wall = json.load(f)
    with open(os.path.join(output, names.SUMMARY_FILE)) as f:
      summary = json.load(f)
  except OSError:
    return None
  if wall['settings'] != list(settings):
    return None
  summary['wall_seconds'] = wall['wall_seconds']
  print(f'Reusing the pipeline run in {output} (--reuse-run).', flush=True)
  return summary


def run_plain_keras(data: str, image_size: int, hparams: dict, batch_size: int,
                    epochs: int, scheduled_epochs: int, lr_schedule: str,
                    held_out: float, precision: str) -> dict:
  """The baseline a user would write by hand: same model and epochs, no pipeline.

  held_out: the share kept from training, as the pipeline's eval + test splits are."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')  # as `fakedetect` sets it (fakedetect/cli.py)
  import warnings  # pylint: disable=g-import-not-at-top
  warnings.filterwarnings('ignore', category=FutureWarning)  # google-api-core on Python 3.10
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO)
  from fakedetect.components import augment  # pylint: disable=g-import-not-at-top
  from fakedetect.components import distribute  # pylint: disable=g-import-not-at-top
  from fakedetect.components import model as model_lib  # pylint: disable=g-import-not-at-top
  from fakedetect.components import train as train_lib  # pylint: disable=g-import-not-at-top

  started = time.monotonic()
  train, val = keras.utils.image_dataset_from_directory(
      os.path.join(data, 'train'), labels='inferred', label_mode='binary',
      class_names=['REAL', 'FAKE'], image_size=(image_size, image_size), batch_size=batch_size,
      validation_split=held_out, subset='both', seed=0)
  scale = lambda x, y: (tf.cast(x, tf.float32) / 255.0, y)
  train = train.map(scale)
  # The same training recipe as the Trainer: its augmentation and learning-rate schedule.
  apply = augment.augmenter(augment.Strengths.from_hparams(hparams))
  if apply is not None:
    train = train.map(lambda x, y: (apply(x), y), num_parallel_calls=tf.data.AUTOTUNE)
  train = train.prefetch(tf.data.AUTOTUNE)
  val = val.map(scale).prefetch(tf.data.AUTOTUNE)
  keras.utils.set_random_seed(0)
  distribute.set_precision(precision)  # the Trainer's dtype policy (train.precision)
  from fakedetect.components import views  # pylint: disable=g-import-not-at-top
  model = model_lib.build_from_hparams(views.View(views.GLOBAL, image_size),
                                       model_lib.Architecture(), hparams)
  callbacks = []
  if lr_schedule == 'cosine':
    callbacks.append(keras.callbacks.LearningRateScheduler(
        train_lib.cosine_schedule(float(hparams['learning_rate']), scheduled_epochs)))
  fit_started = time.monotonic()
  model.fit(train, validation_data=val, epochs=epochs, callbacks=callbacks, verbose=2)
  fit_seconds = time.monotonic() - fit_started
  results = model.evaluate(val, return_dict=True, verbose=0)
  return {'wall_seconds': time.monotonic() - started, 'fit_seconds': fit_seconds,
          'val_accuracy': results['accuracy'], 'val_auc': results['auc']}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--archive', default=DEFAULT_ARCHIVE)
  parser.add_argument('--data', help='an unpacked CIFAKE folder (holding train/REAL, train/FAKE)')
  parser.add_argument('--workdir', default='/tmp/fakedetect-cifake')
  parser.add_argument('--limit', type=int, help='images per class (default: all)')
  parser.add_argument('--epochs', type=int, help='train.epochs for the pipeline')
  parser.add_argument('--set', dest='settings', action='append', default=[],
                      help='extra pipeline settings, section.field=value')
  parser.add_argument('--skip-plain', action='store_true', help='only run the pipeline')
  parser.add_argument('--reuse-run', action='store_true',
                      help='take the pipeline side from an earlier run with the same settings '
                      '(e.g. after --skip-plain) and run only the plain script')
  args = parser.parse_args()

  os.makedirs(args.workdir, exist_ok=True)
  data = args.data or unpack(args.archive, args.workdir)
  if args.limit:
    data = subset(data, args.workdir, args.limit)
  settings = RECIPE + list(args.settings)
  if args.epochs:
    settings.append(f'train.epochs={args.epochs}')
  output = os.path.join(args.workdir, f'run-{args.limit or "all"}')
  settings.append('enable_cache=false')
  summary = (args.reuse_run and reuse_run(output, settings)) or run_pipeline(data, output,
                                                                             settings)

  metrics = summary['metrics']
  print('\n== CIFAKE, pipeline (held-out test split carved from train) ==')
  print(f"images: {summary['ingested']} ingested, {len(summary['quarantined'])} quarantined; "
        f"counts {summary['counts']}")
  for name in ('accuracy', 'precision', 'recall', 'f1', 'auc'):
    print(f'{name:>10}: {metrics.get(name, float("nan")):.4f}')
  print(f"epochs run: {summary.get('epochs_run')}, training images/s: "
        f"{summary.get('train_images_per_second', 0):.0f} ({summary.get('training_device')}, "
        f"{summary.get('training_precision')})")
  print('wall time per component (s):')
  for node, seconds in summary['component_seconds'].items():
    print(f'  {node:<32} {seconds:8.1f}')
  print(f"pipeline total: {summary['wall_seconds']:.0f} s")

  if args.skip_plain:
    return
  sys.path.insert(0, REPO)
  from fakedetect.pipeline import config as config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.PipelineConfig().with_overrides(settings)  # what the pipeline used
  train = config.train
  plain = run_plain_keras(data, 32, summary['hyperparameters'], train.batch_size,
                          summary['epochs_run'], train.epochs, train.lr_schedule,
                          held_out=1 - config.data.train_percent / sum(
                              config.data.split_ratios().values()),
                          precision=train.precision)
  print('\n== same model, plain Keras script (image_dataset_from_directory + fit) ==')
  print(f"val accuracy {plain['val_accuracy']:.4f}, val AUC {plain['val_auc']:.4f}, "
        f"fit {plain['fit_seconds']:.0f} s, total {plain['wall_seconds']:.0f} s")
  ratio = summary['wall_seconds'] / plain['wall_seconds']
  print(f'\npipeline / plain script wall time: {ratio:.2f}x')


if __name__ == '__main__':
  main()
