"""The module code the Transform, Trainer and Tuner run: preprocessing, model, threshold, export."""

import base64
import json
import os

import numpy as np
import pytest

from tests.conftest import encode_image, random_image


def test_preprocessing_fn_through_tft_resizes_and_scales(transform_output_dir):
  _, transformed = transform_output_dir
  assert len(transformed) == 6
  for row in transformed:
    image = np.asarray(row['image'])
    assert image.shape == (16, 16, 3)
    assert image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
  assert [int(np.ravel(row['label'])[0]) for row in transformed] == [0, 1, 0, 1, 0, 1]


@pytest.mark.parametrize('mode', ['L', 'RGBA', 'P', 'I;16'])
def test_decode_and_resize_handles_modes_and_bit_depths(mode):
  import tensorflow as tf
  from PIL import Image
  from fakedetect.components import views
  import io
  grey = np.full((10, 12), 128, np.uint8)
  if mode == 'I;16':
    image = Image.fromarray(np.full((10, 12), 32768, np.uint16))
  else:
    image = Image.fromarray(grey).convert(mode)
  buffer = io.BytesIO()
  image.save(buffer, format='PNG')
  out = views.decode_and_resize(tf.constant([buffer.getvalue()]), 8).numpy()
  assert out.shape == (1, 8, 8, 3)
  # Mid-grey stays mid-grey whatever the container's mode or bit depth.
  np.testing.assert_allclose(out, 128 / 255 if mode != 'I;16' else 32768 / 65535, atol=0.01)


def test_model_builds_and_one_training_step_lowers_loss():
  import keras
  from fakedetect.components import model as model_lib
  keras.utils.set_random_seed(0)
  from fakedetect.components import views
  model = model_lib.build(views.View('global', 16), width=8, depth=2, dropout=0.1,
                          learning_rate=3e-3)
  assert model.output_shape == (None, 1)
  x = np.random.default_rng(0).random((32, 16, 16, 3)).astype('float32')
  y = (x.mean(axis=(1, 2, 3)) > 0.5).astype('float32')
  before = [w.copy() for w in model.get_weights()]
  first = model.train_on_batch(x, y, return_dict=True)['loss']
  for _ in range(10):
    last = model.train_on_batch(x, y, return_dict=True)['loss']
  assert np.isfinite(first) and last < first
  assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))


@pytest.fixture(scope='module')
def exported(transform_output_dir, tmp_path_factory):
  import keras
  import tensorflow_transform as tft
  from fakedetect.components import model as model_lib
  from fakedetect.components import export
  keras.utils.set_random_seed(1)
  from fakedetect.components import views
  model = model_lib.build(views.View('global', 16), width=8, depth=2)
  export_dir = str(tmp_path_factory.mktemp('export') / 'model')
  export.export(model, tft.TFTransformOutput(transform_output_dir[0]), export_dir,
                threshold=0.37, view=views.View('global', 16),
                extra_metadata={'note': 'test', 'backbone': 'cnn'})
  return export_dir, model


def test_serving_default_scores_raw_encoded_images_of_any_size(exported):
  import tensorflow as tf
  from fakedetect.components import views
  export_dir, model = exported
  loaded = tf.saved_model.load(export_dir)
  serving = loaded.signatures['serving_default']
  images = [encode_image(random_image(40, 25, 1), 'JPEG', quality=90),
            encode_image(random_image(16, 16, 2), 'PNG'),
            encode_image(random_image(33, 50, 3), 'GIF'),
            encode_image(random_image(9, 7, 4), 'BMP')]
  out = serving(image_bytes=tf.constant(images))
  assert out['fake_probability'].dtype == tf.float32 and out['fake_probability'].shape == (4,)
  assert out['is_fake'].dtype == tf.int64
  probs = out['fake_probability'].numpy()
  np.testing.assert_array_equal(out['is_fake'].numpy(), (probs >= 0.37).astype(np.int64))
  # Same numbers as the Keras model on the same preprocessing: no train/serve skew.
  direct = model(views.decode_and_resize(tf.constant(images), 16), training=False)
  np.testing.assert_allclose(probs, np.ravel(direct), atol=1e-5)


def test_example_signature_matches_serving_default_and_metadata(exported):
  import tensorflow as tf
  from fakedetect.components import export, features
  export_dir, _ = exported
  loaded = tf.saved_model.load(export_dir)
  images = [encode_image(random_image(20, 20, s), 'PNG') for s in range(3)]
  examples = [tf.train.Example(features=tf.train.Features(feature={
      features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b])),
      features.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
  })).SerializeToString() for b in images]
  by_example = loaded.signatures['serving_tf_example'](examples=tf.constant(examples))
  by_bytes = loaded.signatures['serving_default'](image_bytes=tf.constant(images))
  np.testing.assert_allclose(by_example['fake_probability'], by_bytes['fake_probability'],
                             atol=1e-6)
  transformed = loaded.signatures['transform_features'](examples=tf.constant(examples))
  assert transformed['image'].shape == (3, 16, 16, 3)
  meta = loaded.signatures['metadata']()
  assert abs(float(meta['threshold']) - 0.37) < 1e-6 and int(meta['image_size']) == 16
  assert export.read_metadata(export_dir)['threshold'] == pytest.approx(0.37)


def test_rest_request_body_decoded_as_tf_serving_does(exported):
  """TF Serving's REST API turns {"b64": ...} into the raw bytes of a DT_STRING tensor."""
  import tensorflow as tf
  export_dir, _ = exported
  images = [encode_image(random_image(30, 30, 7), 'JPEG'), encode_image(random_image(12, 18, 8))]
  body = json.dumps({'instances': [{'b64': base64.b64encode(b).decode()} for b in images]})
  instances = json.loads(body)['instances']
  tensor = tf.constant([base64.b64decode(item['b64']) for item in instances])
  loaded = tf.saved_model.load(export_dir)
  out = loaded.signatures['serving_default'](image_bytes=tensor)
  direct = loaded.signatures['serving_default'](image_bytes=tf.constant(images))
  np.testing.assert_array_equal(out['fake_probability'].numpy(),
                                direct['fake_probability'].numpy())
  assert os.path.exists(os.path.join(export_dir, 'saved_model.pb'))


def test_cosine_schedule_falls_from_peak_to_floor_monotonically():
  from fakedetect.components import train
  rate = train.cosine_schedule(5e-3, epochs=10, floor=0.02)
  rates = [rate(epoch) for epoch in range(10)]
  assert rates[0] == pytest.approx(5e-3)
  assert rates[-1] == pytest.approx(5e-3 * 0.02)
  assert all(a > b for a, b in zip(rates, rates[1:]))
  assert rates[5] == pytest.approx(5e-3 * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * 5 / 9))))
