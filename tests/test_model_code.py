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


def _serialized_examples(images):
  """Serialized tf.Examples of the encoded images (labelled fake), as serving_tf_example takes."""
  import tensorflow as tf
  from fakedetect.components import features
  return [tf.train.Example(features=tf.train.Features(feature={
      features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b])),
      features.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
  })).SerializeToString() for b in images]


def test_example_signature_matches_serving_default_and_metadata(exported):
  import tensorflow as tf
  from fakedetect.components import export
  export_dir, _ = exported
  loaded = tf.saved_model.load(export_dir)
  images = [encode_image(random_image(20, 20, s), 'PNG') for s in range(3)]
  examples = _serialized_examples(images)
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


def test_flip_average_serves_an_image_and_its_mirror_the_same_score(exported, tmp_path,
                                                                   transform_output_dir):
  """train.flip_average: every signature scores the mean over the image and its mirror, so a
  mirrored upload scores the same; without it the same model's two scores differ."""
  import tensorflow as tf
  import tensorflow_transform as tft
  from fakedetect.components import export, views
  plain_dir, model = exported
  averaged_dir = str(tmp_path / 'averaged')
  export.export(model, tft.TFTransformOutput(transform_output_dir[0]), averaged_dir,
                threshold=0.37, view=views.View('global', 16),
                extra_metadata={'backbone': 'cnn'}, flip_average=True)
  pixels = random_image(16, 16, 5)
  images = tf.constant([encode_image(pixels, 'PNG'), encode_image(pixels[:, ::-1], 'PNG')])
  plain = tf.saved_model.load(plain_dir).signatures['serving_default'](image_bytes=images)
  loaded = tf.saved_model.load(averaged_dir)
  averaged = loaded.signatures['serving_default'](image_bytes=images)['fake_probability']
  assert abs(float(plain['fake_probability'][0] - plain['fake_probability'][1])) > 1e-4
  np.testing.assert_allclose(averaged[0], averaged[1], atol=1e-6)
  np.testing.assert_allclose(averaged[0], np.mean(plain['fake_probability']), atol=1e-6)
  examples = _serialized_examples(images.numpy())
  by_example = loaded.signatures['serving_tf_example'](examples=tf.constant(examples))
  np.testing.assert_allclose(by_example['fake_probability'], averaged, atol=1e-6)
  assert export.read_metadata(averaged_dir)['flip_average'] is True
  assert export.read_metadata(plain_dir)['flip_average'] is False


def test_cosine_schedule_falls_from_peak_to_floor_monotonically():
  from fakedetect.components import train
  rate = train.cosine_schedule(5e-3, epochs=10, floor=0.02)
  rates = [rate(epoch) for epoch in range(10)]
  assert rates[0] == pytest.approx(5e-3)
  assert rates[-1] == pytest.approx(5e-3 * 0.02)
  assert all(a > b for a, b in zip(rates, rates[1:]))
  assert rates[5] == pytest.approx(5e-3 * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * 5 / 9))))


def _tiny_data(count=32, size=8, seed=0):
  x = np.random.default_rng(seed).random((count, size, size, 3)).astype('float32')
  return x, (x.mean(axis=(1, 2, 3)) > 0.5).astype('float32')


def test_the_recipe_levers_default_to_todays_model():
  """Unset, no lever adds a layer, an average or a smoothing: the model is today's."""
  import keras
  from fakedetect.components import augment, model as model_lib, views
  from fakedetect.pipeline import config as config_lib
  train = config_lib.TrainConfig()
  assert (train.translate, train.label_smoothing, train.ema, train.last_block_factor) == (
      0, 0.0, 0.0, 1.0)
  assert config_lib.ImageConfig().resolved().standardize is False
  assert augment.Strengths.from_hparams({'flip': False}).translate == 0
  hparams = {name: getattr(train, name) for name in model_lib.HPARAM_NAMES}
  view = views.View('global', 16)
  keras.backend.clear_session()  # layer names restart, so the two configs compare
  keras.utils.set_random_seed(0)
  model = model_lib.build_from_hparams(view, model_lib.Architecture(), hparams)
  keras.backend.clear_session()
  keras.utils.set_random_seed(0)
  before = model_lib.build(view, width=train.width, depth=train.depth, dropout=train.dropout,
                           learning_rate=train.learning_rate)  # the call the levers predate
  assert model.to_json() == before.to_json()
  assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before.get_weights()))
  assert [layer.name for layer in model.layers] == [
      'image', model_lib.GLOBAL_BACKBONE, 'dropout', model_lib.HEAD]
  convs = [layer.filters for layer in model.get_layer(model_lib.GLOBAL_BACKBONE).layers
           if isinstance(layer, keras.layers.Conv2D)]
  assert convs == [32, 32, 64, 64, 128, 128]
  assert type(model.optimizer) is keras.optimizers.Adam and not model.optimizer.use_ema
  assert model.loss.get_config()['label_smoothing'] == 0
  assert model_lib.fit_callbacks(model) == []


def test_label_smoothing_is_keras_binary_crossentropy_on_smoothed_labels():
  import keras
  from fakedetect.components import model as model_lib, views
  x, y = _tiny_data()
  keras.utils.set_random_seed(0)
  model = model_lib.build(views.View('global', 8), width=4, depth=2, learning_rate=1e-2,
                          label_smoothing=0.2)
  for _ in range(30):  # confident predictions, where smoothing makes a difference
    model.train_on_batch(x, y)
  p = np.clip(np.ravel(model(x, training=False)), 1e-7, 1 - 1e-7).astype(np.float64)
  cross_entropy = lambda target: -np.mean(target * np.log(p) + (1 - target) * np.log(1 - p))
  smoothed, plain = cross_entropy(y * 0.8 + 0.5 * 0.2), cross_entropy(y)  # Keras' definition
  assert abs(smoothed - plain) > 0.05
  found = model.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
  assert found['loss'] == pytest.approx(smoothed, rel=1e-4)
  # Metrics still see the true labels.
  assert found['accuracy'] == pytest.approx(np.mean((p >= 0.5) == y))


def test_adamw_weight_decay_shrinks_the_cnn_weights_and_still_learns():
  import keras
  from fakedetect.components import model as model_lib, views
  x, y = _tiny_data()
  norms, losses = {}, {}
  for decay in (0.0, 0.5):
    keras.utils.set_random_seed(0)
    model = model_lib.build(views.View('global', 8), width=4, depth=2, learning_rate=1e-2,
                            weight_decay=decay)
    first = model.train_on_batch(x, y, return_dict=True)['loss']
    for _ in range(15):
      last = model.train_on_batch(x, y, return_dict=True)['loss']
    losses[decay] = (first, last)
    norms[decay] = sum(float(np.sum(layer.kernel.numpy()**2)) for layer in model.get_layer(
        model_lib.GLOBAL_BACKBONE).layers if isinstance(layer, keras.layers.Conv2D))
    if decay:
      assert type(model.optimizer) is keras.optimizers.AdamW
      assert model.optimizer.weight_decay == pytest.approx(decay)
  assert norms[0.5] < 0.95 * norms[0.0]
  assert losses[0.5][1] < losses[0.5][0]


def test_ema_weights_are_the_ones_validated_kept_and_exported(transform_output_dir, tmp_path):
  """With train.ema, validation measures the averaged weights, early stopping keeps the best
  epoch's average, and the exported model serves exactly those."""
  import keras
  import tensorflow as tf
  import tensorflow_transform as tft
  from fakedetect.components import export, model as model_lib, views

  class Recorder(keras.callbacks.Callback):
    """Each epoch's last raw weights and their running average, as the optimizer holds them."""

    def __init__(self):
      super().__init__()
      self.raw, self.average, self.epoch = {}, {}, 0

    def on_epoch_begin(self, epoch, logs=None):
      self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
      self.raw[self.epoch] = [v.numpy() for v in self.model.trainable_variables]
      self.average[self.epoch] = [
          v.numpy() for v in self.model.optimizer._model_variables_moving_average]

  view = views.View('global', 16)
  x, y = _tiny_data(count=64, size=16, seed=1)
  xv, yv = _tiny_data(count=32, size=16, seed=2)
  keras.utils.set_random_seed(0)
  model = model_lib.build(view, width=4, depth=2, learning_rate=1e-2, ema=0.8)
  recorder = Recorder()
  history = model.fit(x, y, batch_size=16, epochs=5, validation_data=(xv, yv), verbose=0,
                      callbacks=model_lib.fit_callbacks(model) + [
                          keras.callbacks.EarlyStopping(monitor='val_loss', patience=10,
                                                        restore_best_weights=True),
                          recorder])
  val_loss = history.history['val_loss']
  best = int(np.argmin(val_loss))
  final = [v.numpy() for v in model.trainable_variables]
  assert all(np.allclose(a, b) for a, b in zip(final, recorder.average[best]))
  assert not all(np.allclose(a, b, atol=1e-4)
                 for a, b in zip(recorder.raw[best], recorder.average[best]))
  # What was validated is what the model now is (the epoch's batch-norm statistics included)...
  kept = model.evaluate(xv, yv, batch_size=16, verbose=0, return_dict=True)['loss']
  assert kept == pytest.approx(val_loss[best], rel=1e-5)
  # ... and not the raw weights of that epoch.
  raw = keras.models.clone_model(model)
  raw.set_weights(model.get_weights())
  for variable, value in zip(raw.trainable_variables, recorder.raw[best]):
    variable.assign(value)
  raw.compile(loss='binary_crossentropy')
  assert raw.evaluate(xv, yv, batch_size=16, verbose=0) != pytest.approx(kept, rel=1e-4)

  export_dir = str(tmp_path / 'model')
  export.export(model, tft.TFTransformOutput(transform_output_dir[0]), export_dir,
                threshold=0.5, view=view, extra_metadata={'backbone': 'cnn'})
  images = [encode_image(random_image(16, 16, s), 'PNG') for s in range(4)]
  served = tf.saved_model.load(export_dir).signatures['serving_default'](
      image_bytes=tf.constant(images))['fake_probability'].numpy()
  pixels = views.decode_and_resize(tf.constant(images), 16)
  np.testing.assert_allclose(served, np.ravel(model(pixels, training=False)), atol=1e-5)
  assert not np.allclose(served, np.ravel(raw(pixels, training=False)), atol=1e-5)


def test_last_block_factor_widens_only_the_cnn_last_block():
  import keras
  from fakedetect.components import backbones, model as model_lib, views
  model = model_lib.build(views.View('global', 16), width=4, depth=3, last_block_factor=2.0)
  convs = [layer.filters for layer in model.get_layer(model_lib.GLOBAL_BACKBONE).layers
           if isinstance(layer, keras.layers.Conv2D)]
  assert convs == [4, 4, 8, 8, 32, 32]
  assert model.get_layer(model_lib.HEAD).kernel.shape == (32, 1)
  with pytest.raises(ValueError, match='last_block_factor=2.*use 1 or backbone cnn'):
    backbones.build('resnet', (16, 16, 3), 4, 2, last_block_factor=2.0)


def test_new_settings_reach_module_code_typed_and_the_tuner_searches_the_recipe(
    transform_output_dir):
  import json as json_lib
  import keras_tuner
  from fakedetect.components import model as model_lib, train, views
  from fakedetect.pipeline import config as config_lib
  config = config_lib.PipelineConfig().with_overrides([
      'train.translate=4', 'train.label_smoothing=0.1', 'train.ema=0.999',
      'train.last_block_factor=2', 'train.weight_decay=1e-4', 'image.standardize=true'])
  custom = json_lib.loads(json_lib.dumps(config.module_config().to_custom_config()))
  rebuilt = config_lib.ModuleConfig.from_custom_config(custom)
  assert rebuilt == config.module_config() and rebuilt.image.resolved().standardize is True
  hparams = {name: getattr(rebuilt.train, name) for name in model_lib.HPARAM_NAMES}
  assert hparams['translate'] == 4 and isinstance(hparams['translate'], int)
  assert (hparams['label_smoothing'], hparams['ema'], hparams['last_block_factor']) == (
      0.1, 0.999, 2.0)
  model = model_lib.build_from_hparams(views.View('global', 8), model_lib.Architecture(),
                                       dict(hparams, width=4, depth=2))
  assert model.optimizer.use_ema and model.optimizer.ema_momentum == pytest.approx(0.999)
  assert model.loss.get_config()['label_smoothing'] == pytest.approx(0.1)
  assert model_lib.fit_callbacks(model)

  hp = keras_tuner.HyperParameters()
  values = train._HyperModel(views.View('global', 8), model_lib.Architecture(),
                             rebuilt.train, max_trials=1)._values(hp)
  assert set(values) == set(model_lib.HPARAM_NAMES)
  space = {p.name: p for p in hp.space}
  assert space['translate'].values == [0, 2, 4]
  assert space['weight_decay'].values == [0.0, 1e-4, 5e-4]
  assert space['label_smoothing'].values == [0.0, 0.05, 0.1]
  assert values['ema'] == 0.999  # configured, not searched
  # The Trainer's network takes its input statistics from the Transform: none measured here.
  arch = train._architecture(rebuilt, transform_output_dir[0])
  assert arch.input_statistics == {} and arch.backbone == 'cnn'
