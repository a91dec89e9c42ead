"""ArtifactSimulator: fakes made from the training split's real images, for detectors that must
catch generators the user has no samples of.

  ImageExampleGen.examples ─> ArtifactSimulator ─> simulated_examples ─> StatisticsGen, Transform
                                                 └> simulation (simulation.json, losses.png,
                                                    pairs.png)

It trains AutoGAN (components/autogan.py) on `images` real images of the training split, then
reconstructs each of them whole, at its own size, and encodes the reconstruction as its source
was encoded (components/reencode.py). The reconstructions join the training split as fakes with
source `simulated/<decoder>`: next to the real fakes (mode `add`) or in their place (mode `only`:
reals and simulated fakes, not one real fake). Eval and test are copied unchanged, so every
metric, the threshold and the gate are still measured on real fakes only.

The simulator sees native pixels, never the model's view: it trains on random `crop` px crops
(pipeline.py picks the size) and reconstructs whole images, so a simulated fake reaches the
Transform as a generated image would, and the view (resize or native crops, components/views.py)
treats both alike. Images whose longer side exceeds MAX_SIDE are not simulated from (the run
says how many).
"""

import hashlib
import heapq
import json
import os
import time
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
import tensorflow as tf
from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.annotations import OutputArtifact
from tfx.dsl.component.experimental.annotations import Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact as artifact_lib
from tfx.types import artifact_utils
from tfx.types import standard_artifacts

from fakedetect.components import autogan
from fakedetect.components import errors
from fakedetect.components import features
from fakedetect.components import perturb
from fakedetect.components import progress
from fakedetect.components import reencode
from fakedetect.components.image_example_gen import encoding
from fakedetect.pipeline import config as config_lib

MODES = config_lib.SIMULATE_MODES
ADD, ONLY = MODES
SOURCE_PREFIX = 'simulated/'
TRAIN_SPLIT = 'train'
MAX_SIDE = 1024  # a whole-image reconstruction's activations grow with the pixels
RESULT_FILE, LOSSES_FILE, PAIRS_FILE = 'simulation.json', 'losses.png', 'pairs.png'
SIMULATED_FILE = 'simulated.gz'
RECONSTRUCT_BATCH = 32


class Simulation(artifact_lib.Artifact):
  """simulation.json (what was simulated, from what, the losses), losses.png and pairs.png."""
  TYPE_NAME = 'fakedetect.Simulation'  # KFP v2 imports it by this name (fakedetect/__init__.py)


class SimulationError(errors.UserError):
  """The training split cannot feed the simulator; the message says what to change."""


def source_name(decoder: str) -> str:
  return SOURCE_PREFIX + decoder


def _files(uri: str, split: str) -> List[str]:
  return sorted(tf.io.gfile.glob(os.path.join(uri, f'Split-{split}', '*')))


def _records(files: List[str]) -> Iterator[bytes]:
  for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
    yield record.numpy()


_SPEC = {key: spec for key, spec in features.raw_feature_spec().items()
         if key != features.SIZE_BUCKET_KEY}


def _parse(record: bytes) -> Dict[str, Any]:
  parsed = tf.io.parse_single_example(record, _SPEC)
  return {key: (value.numpy().decode('utf-8', 'replace')
                if key not in (features.IMAGE_KEY,) and value.dtype == tf.string
                else value.numpy()) for key, value in parsed.items()}


def choose_reals(files: List[str], count: int) -> Tuple[List[Dict[str, Any]], int]:
  """(up to `count` real examples of the split, the first by content hash: the same ones every
  run; how many reals were too large to simulate from). Holds only the `count` kept so far, not
  the split: a folder of photos does not have to fit in memory."""
  too_large = 0

  def reals():
    nonlocal too_large
    for record in _records(files):
      example = _parse(record)
      if example[features.LABEL_KEY] != features.REAL:
        continue
      if max(example[features.HEIGHT_KEY], example[features.WIDTH_KEY]) > MAX_SIDE:
        too_large += 1
        continue
      yield example

  chosen = heapq.nsmallest(count, reals(), key=lambda example: example[features.HASH_KEY])
  return chosen, too_large


def simulate(simulator: autogan.Simulator, reals: List[Dict[str, Any]],
             decoded: List[np.ndarray]) -> Iterator[Tuple[bytes, np.ndarray, np.ndarray]]:
  """(serialized fake example, real pixels, reconstructed pixels) per real example (decoded:
  its pixels), in order."""
  source = source_name(simulator.shape.decoder)
  for run in autogan.same_size_runs(decoded, RECONSTRUCT_BATCH):
    for i, reconstructed in zip(run, simulator.reconstruct([decoded[i] for i in run])):
      yield _fake_example(reals[i], reconstructed, source), decoded[i], reconstructed


def _fake_example(real: Dict[str, Any], reconstructed: np.ndarray, source: str) -> bytes:
  """The serialized tf.Example of a reconstruction, encoded as its real source was."""
  data = reencode.like(real[features.IMAGE_KEY], reconstructed)
  meta = {'label': features.FAKE, 'source': source, 'format': real[features.FORMAT_KEY],
          'height': int(real[features.HEIGHT_KEY]), 'width': int(real[features.WIDTH_KEY]),
          'hash': hashlib.sha256(data).hexdigest(),
          'path': f'{source}/{real[features.PATH_KEY]}'}
  return encoding.encode_examples([(data, meta)])[0]


def _copy_split(examples_uri: str, out_uri: str, split: str, keep_fakes: bool) -> Dict[str, int]:
  """Copies a split's files (or, without fakes, its real examples); returns counts by label."""
  folder = os.path.join(out_uri, f'Split-{split}')
  tf.io.gfile.makedirs(folder)
  files = _files(examples_uri, split)
  counts = {'real': 0, 'fake': 0}
  if keep_fakes:
    for path in files:
      tf.io.gfile.copy(path, os.path.join(folder, os.path.basename(path)), overwrite=True)
    return counts  # not counted: copied as they are
  with tf.io.TFRecordWriter(os.path.join(folder, 'reals.gz'), 'GZIP') as writer:
    for record in _records(files):
      label = int(tf.io.parse_single_example(
          record, {features.LABEL_KEY: _SPEC[features.LABEL_KEY]})[features.LABEL_KEY])
      counts[features.LABEL_NAMES[label]] += 1
      if label == features.REAL:
        writer.write(record)
  return counts


def _plot_losses(history: Dict[str, List[float]], path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, len(history), figsize=(4 * len(history), 3.5))
  for ax, (name, values) in zip(np.atleast_1d(axes), history.items()):
    ax.plot(range(1, len(values) + 1), values, marker='.')
    ax.set(xlabel='epoch', title={'l1': 'generator: L1 reconstruction',
                                  'adversarial': 'generator: adversarial',
                                  'discriminator': 'discriminator'}.get(name, name))
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _plot_pairs(pairs: List[Tuple[np.ndarray, np.ndarray]], path: str, crop: int) -> None:
  """Real (top) over reconstructed (bottom), then the central `crop` px of each at native
  pixels, enlarged without smoothing: where up-sampling traces show."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(4, len(pairs), figsize=(2 * len(pairs), 8.4), squeeze=False)
  for column, (real, fake) in enumerate(pairs):
    h, w = real.shape[:2]
    top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
    shown = (real, fake, real[top:top + crop, left:left + crop],
             fake[top:top + crop, left:left + crop])
    for row, (image, title) in enumerate(zip(shown, ('real', 'simulated', 'real, native',
                                                     'simulated, native'))):
      axes[row][column].imshow(image, interpolation='nearest')
      axes[row][column].set_axis_off()
      if column == 0:
        axes[row][column].set_title(title, fontsize=9, loc='left')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _progress_line(epoch: int, epochs: int, losses: Dict[str, float], started: float) -> str:
  elapsed = time.monotonic() - started
  left = elapsed / epoch * (epochs - epoch)
  shown = ', '.join(f'{name} {value:.4f}' for name, value in losses.items())
  return (f'ArtifactSimulator epoch {epoch}/{epochs}: {shown} ({progress.duration(elapsed)} '
          f'elapsed, about {progress.duration(left)} left)')


@component
def ArtifactSimulator(  # pylint: disable=invalid-name
    examples: InputArtifact[standard_artifacts.Examples],
    simulated_examples: OutputArtifact[standard_artifacts.Examples],
    simulation: OutputArtifact[Simulation],
    mode: Parameter[str],
    images: Parameter[int],
    decoder: Parameter[str],
    epochs: Parameter[int],
    crop: Parameter[int],
    seed: Parameter[int] = 0,
) -> None:
  """The input's splits, with simulated fakes in the training split (see the module's doc).
  The settings' defaults and meaning: pipeline/config.py's SimulateConfig."""
  if mode not in MODES:
    raise SimulationError(f'simulate.mode={mode!r}: expected add or only.')
  split_names = artifact_utils.decode_split_names(examples.split_names)
  if TRAIN_SPLIT not in split_names:
    raise SimulationError(f'The examples have no {TRAIN_SPLIT!r} split (they have '
                          f'{", ".join(split_names)}): nothing to simulate from.')
  reals, too_large = choose_reals(_files(examples.uri, TRAIN_SPLIT), images)
  if not reals:
    raise SimulationError(
        'The training split has no real image to simulate from'
        + (f' ({too_large} are larger than {MAX_SIDE} px)' if too_large else '')
        + '; add real images, or run without --set simulate.enabled=true.')
  simulator = autogan.Simulator(autogan.Shape(decoder=decoder), seed=seed)
  pixels = [perturb.decode_rgb(real[features.IMAGE_KEY]) for real in reals]
  started = time.monotonic()
  history = simulator.train(
      pixels, epochs, crop,
      on_epoch=lambda epoch, losses: progress.emit(_progress_line(epoch, epochs, losses,
                                                                  started)))
  train_seconds = time.monotonic() - started

  counts = {}
  for split in split_names:
    counts[split] = _copy_split(examples.uri, simulated_examples.uri, split,
                                keep_fakes=(mode == ADD or split != TRAIN_SPLIT))
  pairs = []
  out = os.path.join(simulated_examples.uri, f'Split-{TRAIN_SPLIT}', SIMULATED_FILE)
  with tf.io.TFRecordWriter(out, 'GZIP') as writer:
    for record, real, fake in simulate(simulator, reals, pixels):
      writer.write(record)
      if len(pairs) < 8:
        pairs.append((real, fake))
  simulated_examples.split_names = examples.split_names
  for name in ('span', 'version'):
    if examples.has_custom_property(name) or name in examples.mlmd_artifact.properties:
      setattr(simulated_examples, name, getattr(examples, name))

  source = source_name(decoder)
  result = {
      'mode': mode, 'decoder': decoder, 'source': source, 'simulated': len(reals),
      'requested': images, 'too_large': too_large, 'epochs': epochs,
      'crop': autogan.crop_size(pixels, crop, simulator.shape.multiple),
      'train_seconds': train_seconds, 'history': history,
      'dropped_real_fakes': counts[TRAIN_SPLIT]['fake'] if mode == ONLY else 0,
      'final_l1': history['l1'][-1] if history['l1'] else None,
  }
  with tf.io.gfile.GFile(os.path.join(simulation.uri, RESULT_FILE), 'w') as f:
    f.write(json.dumps(result, indent=2))
  _plot_losses(history, os.path.join(simulation.uri, LOSSES_FILE))
  _plot_pairs(pairs, os.path.join(simulation.uri, PAIRS_FILE), result['crop'])
  for artifact in (simulation, simulated_examples):
    artifact.set_int_custom_property('simulated', len(reals))
    artifact.set_string_custom_property('simulated_source', source)
    artifact.set_string_custom_property('simulate_mode', mode)


def read(uri: str) -> Dict[str, Any]:
  with tf.io.gfile.GFile(os.path.join(uri, RESULT_FILE)) as f:
    return json.loads(f.read())
