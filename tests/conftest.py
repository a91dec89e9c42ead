"""Shared test fixtures: real encoded images, a real Transform output built with TFT, two pushed
models exported from it, and the demo pipeline runs.

Tiers: tests that run a real pipeline carry the `pipeline` marker (every test that uses `runs`
gets it here); `make test-fast` leaves them out, `make test` runs everything.
"""

import io
import os
import warnings

import numpy as np
import pytest

warnings.filterwarnings('ignore', category=FutureWarning)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def encode_image(array: np.ndarray, fmt: str = 'PNG', **save_args) -> bytes:
  """Encodes a uint8/uint16 array with Pillow, as a user's file would be."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format=fmt, **save_args)
  return buffer.getvalue()


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def run_transform(root, image_config: dict, rows=None):
  """The project's preprocessing_fn through tf.Transform on a handful of real images (or `rows`):
  (transform output dir, transformed rows)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_transform.beam as tft_beam  # pylint: disable=g-import-not-at-top
  from tensorflow_transform.tf_metadata import dataset_metadata  # pylint: disable=g-import-not-at-top
  from tensorflow_transform.tf_metadata import metadata_io  # pylint: disable=g-import-not-at-top
  from tensorflow_transform.tf_metadata import schema_utils  # pylint: disable=g-import-not-at-top

  from fakedetect.components import features  # pylint: disable=g-import-not-at-top
  from fakedetect.components import transform  # pylint: disable=g-import-not-at-top

  spec = {
      features.IMAGE_KEY: tf.io.FixedLenFeature([1], tf.string),
      features.LABEL_KEY: tf.io.FixedLenFeature([1], tf.int64),
  }
  metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
  rows = rows or [{features.IMAGE_KEY: [encode_image(random_image(20 + i, 30, i), 'PNG')],
                   features.LABEL_KEY: [i % 2]} for i in range(6)]
  output_dir = str(root / 'transform_output')
  with tft_beam.Context(temp_dir=str(root / 'tmp')):
    (transformed, _), transform_fn = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
        lambda inputs: transform.preprocessing_fn(inputs, {'image': image_config}))
    _ = transform_fn | tft_beam.WriteTransformFn(output_dir)
  # The Transform component also records the raw schema; serving reads it from there.
  metadata_io.write_metadata(metadata, os.path.join(output_dir, 'metadata'))
  return output_dir, transformed


@pytest.fixture(scope='session')
def transform_output_dir(tmp_path_factory):
  """The global view at 16 px, through tf.Transform (tests/serving_helpers.py's models)."""
  return run_transform(tmp_path_factory.mktemp('transform'), {'view': 'global', 'size': 16})


@pytest.fixture(scope='session')
def pushed(transform_output_dir, tmp_path_factory):
  """Two versions of one tiny real CNN, exported and pushed in TF Serving's layout
  (tests/serving_helpers.py)."""
  from tests import serving_helpers  # pylint: disable=g-import-not-at-top
  return serving_helpers.pushed_models(tmp_path_factory.mktemp('pushed'), transform_output_dir)


@pytest.fixture(scope='session')
def runs(tmp_path_factory):
  """The demo runs of tests/demo_runs.py (good, worse_than_baseline, below_bars), each run once
  per session on one output folder."""
  from tests import demo_runs  # pylint: disable=g-import-not-at-top
  root = demo_runs.workspace(tmp_path_factory)
  return {name: demo_runs.run(root, name) for name in demo_runs.ORDER}


def pytest_collection_modifyitems(items):
  for item in items:
    if 'runs' in getattr(item, 'fixturenames', ()):
      item.add_marker(pytest.mark.pipeline)
