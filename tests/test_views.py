"""The image views (components/views.py) through the real Transform, model and serving graph."""

import os

import numpy as np
import pytest

from tests.conftest import encode_image, random_image, run_transform

SIZE, CROP, NATIVE = 16, 16, 40


@pytest.fixture(scope='module')
def view_exports(tmp_path_factory):
  """{view: (export dir, keras model, View)} for local and both, exported as the Trainer does."""
  import keras
  import tensorflow_transform as tft
  from fakedetect.components import export, model as model_lib, views
  out = {}
  for name in (views.LOCAL, views.BOTH):
    root = tmp_path_factory.mktemp(f'view_{name}')
    view = views.View(name, SIZE, CROP, NATIVE)
    transform_dir, _ = run_transform(root, {'view': name, 'size': SIZE, 'crop_size': CROP,
                                            'native_size': NATIVE})
    keras.utils.set_random_seed(0)
    model = model_lib.build(view, model_lib.Architecture('cnn', 'npr'), width=4, depth=2)
    export_dir = str(root / 'model')
    export.export(model, tft.TFTransformOutput(transform_dir), export_dir, threshold=0.5,
                  view=view, extra_metadata={'backbone': 'cnn'})
    out[name] = export_dir, model, view
  return out


def _png16(height, width):
  return encode_image(np.random.default_rng(5).integers(0, 65536, (height, width), np.uint16))


def test_local_view_gives_the_model_source_pixels_unresampled(tmp_path):
  """Byte-exact: every grid crop the model gets is the decoded file's own pixels / 255."""
  import tensorflow as tf
  from fakedetect.components import features, views
  view = views.View(views.LOCAL, SIZE, CROP, NATIVE)
  source = random_image(61, 90, 11)  # odd sizes, larger than the square
  rows = [{features.IMAGE_KEY: [encode_image(source, 'PNG')], features.LABEL_KEY: [1]}]
  _, transformed = run_transform(tmp_path, {'view': 'local', 'size': SIZE, 'crop_size': CROP,
                                            'native_size': NATIVE}, rows)
  stored = {k: tf.constant([np.ravel(v)[0]]) for k, v in transformed[0].items()
            if k == views.NATIVE_KEY}
  crops = views.serving_inputs(stored, view)[views.CROPS_INPUT].numpy()[0]
  top, left = (61 - NATIVE) // 2, (90 - NATIVE) // 2
  square = source[top:top + NATIVE, left:left + NATIVE]
  expected = [square[y:y + CROP, x:x + CROP] for y in view.grid() for x in view.grid()]
  assert crops.shape == (len(view.grid())**2, CROP, CROP, 3)
  np.testing.assert_array_equal(np.round(crops * 255).astype(np.uint8), np.stack(expected))
  np.testing.assert_allclose(crops * 255, np.round(crops * 255), atol=1e-3)  # none interpolated
  # Training: one random crop, again a window of the same native pixels.
  crop = np.round(views.training_inputs(stored, view)[views.CROPS_INPUT].numpy()[0, 0] * 255)
  windows = [square[y:y + CROP, x:x + CROP] for y in range(NATIVE - CROP + 1)
             for x in range(NATIVE - CROP + 1)]
  assert any(np.array_equal(crop, w) for w in windows)


def test_grid_covers_the_square_and_serving_views_are_deterministic():
  import tensorflow as tf
  from fakedetect.components import views
  view = views.View(views.BOTH, SIZE, CROP, NATIVE)
  assert view.grid() == [0, 12, 24] and views.View(views.LOCAL, 32, 64, 256).grid() == [0, 64,
                                                                                           128, 192]
  images = tf.constant([encode_image(random_image(50, 70, s), 'PNG') for s in range(3)])
  first = views.serving_inputs(views.transform(images, view), view)
  again = views.serving_inputs(views.transform(images, view), view)
  for key in first:
    np.testing.assert_array_equal(first[key].numpy(), again[key].numpy())
  trained = [views.training_inputs(views.transform(images, view), view)[views.CROPS_INPUT]
             for _ in range(3)]
  assert any(not np.array_equal(trained[0], other) for other in trained[1:])  # random per call


def test_an_image_smaller_than_the_square_is_mirrored_not_resampled():
  import tensorflow as tf
  from fakedetect.components import views
  small = random_image(7, 5, 2)
  square = views.native_square(tf.constant([encode_image(small, 'PNG')]), 20)[0].numpy()
  assert square.shape == (20, 20, 3)
  values = {tuple(p) for p in small.reshape(-1, 3)}
  assert {tuple(p) for p in square.reshape(-1, 3)} <= values  # only the image's own pixels


@pytest.mark.parametrize('name', ['local', 'both'])
def test_a_pushed_model_of_each_view_meets_the_serving_contract(view_exports, name):
  """Raw bytes in, fake_probability / is_fake out, equal to the Keras model on the same views:
  images smaller than the crop, odd sizes, grey / RGBA / 16-bit and a 4,000 px photo."""
  import tensorflow as tf
  from PIL import Image
  from fakedetect.components import views
  export_dir, model, view = view_exports[name]
  grey = np.asarray(Image.fromarray(random_image(33, 21, 3)).convert('L'))
  rgba = np.asarray(Image.fromarray(random_image(45, 47, 4)).convert('RGBA'))
  images = [encode_image(random_image(5, 9, 1), 'PNG'),  # smaller than the crop
            encode_image(random_image(41, 77, 2), 'JPEG', quality=90),  # odd sizes
            encode_image(grey), encode_image(rgba), _png16(19, 23),
            encode_image(random_image(3000, 4000, 6), 'JPEG', quality=80)]
  serving = tf.saved_model.load(export_dir).signatures['serving_default']
  out = serving(image_bytes=tf.constant(images))
  probabilities = out['fake_probability'].numpy()
  assert probabilities.shape == (6,) and np.all((probabilities >= 0) & (probabilities <= 1))
  np.testing.assert_array_equal(out['is_fake'].numpy(), (probabilities >= 0.5).astype(np.int64))
  direct = model(views.serving_inputs(views.transform(tf.constant(images), view), view),
                 training=False)
  np.testing.assert_allclose(probabilities, np.ravel(direct), atol=1e-5)
  meta = tf.saved_model.load(export_dir).signatures['metadata']()
  assert meta['view'].numpy().decode() == name and int(meta['crop_size']) == CROP


def test_the_transform_stores_bounded_bytes_whatever_the_megapixels(tmp_path):
  """A 12 MP photo costs the same per example as a 100 px one: native_size^2 x 3 bytes."""
  from fakedetect.components import features, views
  rows = [{features.IMAGE_KEY: [encode_image(random_image(h, w, 1), 'JPEG', quality=85)],
           features.LABEL_KEY: [0]} for h, w in ((100, 120), (3000, 4000))]
  _, transformed = run_transform(tmp_path, {'view': 'local', 'size': SIZE, 'crop_size': CROP,
                                            'native_size': NATIVE}, rows)
  sizes = [len(np.ravel(row[views.NATIVE_KEY])[0]) for row in transformed]
  assert sizes[0] == sizes[1] and sizes[0] < NATIVE * NATIVE * 3 + 64


@pytest.mark.parametrize('name', ['local', 'both'])
def test_explain_agrees_with_serving_for_each_view(view_exports, name, tmp_path):
  """Grad-CAM on the global branch (both), each crop's own score on the grid (local); the
  classifier explained scores the image as serving_default does, or explain refuses."""
  from fakedetect import explain
  export_dir, _, view = view_exports[name]
  image = encode_image(random_image(70, 90, 9), 'PNG')
  result = explain.explain(export_dir, image)
  side = len(view.grid())
  if name == 'local':
    assert result.layer == 'crop grid' and result.heatmap.shape == (side, side)
    assert result.square == NATIVE
  else:
    assert result.heatmap.ndim == 2 and result.square is None
  assert 0 <= result.heatmap.min() and result.heatmap.max() <= 1
  path = explain.write_overlay(image, result, str(tmp_path / 'x.png'))
  from PIL import Image
  assert Image.open(path).size == (256, 199)  # drawn at least 256 px on the longer side


def _coloured_rows(count, side, seed=3):
  """(uint8 images, Transform rows): channels of very different means and spreads."""
  from fakedetect.components import features
  rng = np.random.default_rng(seed)
  images = [np.stack([rng.integers(0, 256, (side, side)), rng.integers(0, 100, (side, side)),
                      rng.integers(180, 200, (side, side))], axis=-1).astype(np.uint8)
            for _ in range(count)]
  rows = [{features.IMAGE_KEY: [encode_image(image, 'PNG')], features.LABEL_KEY: [i % 2]}
          for i, image in enumerate(images)]
  return images, rows


def test_standardize_measures_the_training_split_and_serving_applies_it(tmp_path):
  """The Transform's statistics are every training pixel's per-channel mean and std; the model's
  first layer makes the training images zero-mean, unit-std per channel; serving does the same."""
  import keras
  import tensorflow as tf
  import tensorflow_transform as tft
  from fakedetect.components import export, features, model as model_lib, views
  images, rows = _coloured_rows(8, SIZE)
  transform_dir, transformed = run_transform(
      tmp_path, {'view': 'global', 'size': SIZE, 'standardize': True}, rows)
  pixels = np.stack(images).astype(np.float64) / 255  # already SIZE: stored as decoded
  mean, std = pixels.mean(axis=(0, 1, 2)), pixels.std(axis=(0, 1, 2))
  stats = views.channel_statistics(tft.TFTransformOutput(transform_dir))
  assert set(stats) == {views.GLOBAL_INPUT}
  np.testing.assert_allclose(stats[views.GLOBAL_INPUT][0], mean, atol=1e-5)
  np.testing.assert_allclose(stats[views.GLOBAL_INPUT][1], std, rtol=1e-4)
  stored_mean, stored_std = views.STATISTICS_KEYS[views.GLOBAL_INPUT]
  np.testing.assert_allclose(transformed[5][stored_mean], mean, atol=1e-5)
  np.testing.assert_allclose(transformed[5][stored_std], std, rtol=1e-4)

  view = views.View(views.GLOBAL, SIZE)
  keras.utils.set_random_seed(0)
  model = model_lib.build(view, model_lib.Architecture(input_statistics=stats), width=4, depth=2)
  inputs = pixels.astype(np.float32)
  standardized = model.get_layer(model_lib.GLOBAL_FILTER)(inputs).numpy()
  np.testing.assert_allclose(standardized.mean(axis=(0, 1, 2)), 0, atol=1e-4)
  np.testing.assert_allclose(standardized.std(axis=(0, 1, 2)), 1, atol=1e-4)

  export_dir = str(tmp_path / 'model')
  export.export(model, tft.TFTransformOutput(transform_dir), export_dir, threshold=0.5,
                view=view, extra_metadata={'backbone': 'cnn'})
  encoded = tf.constant([row[features.IMAGE_KEY][0] for row in rows])
  served = tf.saved_model.load(export_dir).signatures['serving_default'](
      image_bytes=encoded)['fake_probability'].numpy()
  plain = model_lib.build(view, model_lib.Architecture(), width=4, depth=2)  # same weights
  plain.set_weights(model.get_weights())
  by_hand = np.ravel(plain(((pixels - mean) / std).astype(np.float32), training=False))
  np.testing.assert_allclose(served, by_hand, atol=1e-4)
  assert not np.allclose(served, np.ravel(plain(inputs, training=False)), atol=1e-3)
  # The .keras copy (explain) holds the statistics too.
  reloaded = keras.saving.load_model(os.path.join(export_dir, export.KERAS_FILE), compile=False)
  np.testing.assert_allclose(np.ravel(reloaded(inputs)), served, atol=1e-5)


def test_standardize_measures_the_native_pixels_for_crops_and_is_off_by_default(tmp_path):
  import tensorflow_transform as tft
  from fakedetect.components import model as model_lib, views
  images, rows = _coloured_rows(4, NATIVE, seed=4)
  transform_dir, _ = run_transform(tmp_path, {'view': 'both', 'size': SIZE, 'crop_size': CROP,
                                              'native_size': NATIVE, 'standardize': True}, rows)
  stats = views.channel_statistics(tft.TFTransformOutput(transform_dir))
  assert set(stats) == {views.GLOBAL_INPUT, views.CROPS_INPUT}
  pixels = np.stack(images).astype(np.float64) / 255  # the native square is the whole image
  np.testing.assert_allclose(stats[views.CROPS_INPUT][0], pixels.mean(axis=(0, 1, 2)), atol=1e-5)
  np.testing.assert_allclose(stats[views.CROPS_INPUT][1], pixels.std(axis=(0, 1, 2)), rtol=1e-4)
  # Resizing keeps the mean and smooths the spread.
  np.testing.assert_allclose(stats[views.GLOBAL_INPUT][0], pixels.mean(axis=(0, 1, 2)), atol=0.01)
  assert all(g < c for g, c in zip(stats[views.GLOBAL_INPUT][1], stats[views.CROPS_INPUT][1]))
  model = model_lib.build(views.View(views.BOTH, SIZE, CROP, NATIVE, standardize=True),
                          model_lib.Architecture(input_statistics=stats), width=4, depth=2)
  local = model.get_layer(model_lib.LOCAL_FEATURES).backbone.layers[0]
  crops = pixels[:, None, :CROP, :CROP].astype(np.float32)
  np.testing.assert_allclose(local(crops[:, 0]).numpy(),
                             (crops[:, 0] - stats[views.CROPS_INPUT][0]) /
                             np.array(stats[views.CROPS_INPUT][1]), rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match='image.standardize'):
    model_lib.build(views.View(views.GLOBAL, 32),
                    model_lib.Architecture('MobileNetV3Small', input_statistics=stats))

  default_dir, transformed = run_transform(tmp_path / 'off', {'view': 'global', 'size': SIZE})
  assert views.channel_statistics(tft.TFTransformOutput(default_dir)) == {}
  assert set(transformed[0]) == {views.GLOBAL_INPUT, 'label'}
