"""Backbones and forensic input filters (components/backbones.py, components/filters.py): shapes,
what each filter removes, the original CNN body kept layer for layer, every weights path, and a
.keras round trip (the exported model keeps one for Grad-CAM)."""

import numpy as np
import pytest


def _images(shape, seed=0):
  return np.random.default_rng(seed).random(shape).astype('float32')


def _round_trip(model, path, inputs):
  """The model's outputs before and after a .keras save/load."""
  import keras
  model.save(str(path))
  loaded = keras.models.load_model(str(path))
  return np.asarray(model(inputs)), np.asarray(loaded(inputs))


@pytest.mark.parametrize('name, channels', [('npr', 3), ('highpass', 9)])
@pytest.mark.parametrize('height, width', [(32, 32), (33, 31)])
def test_filter_keeps_the_size_and_gives_its_channels(name, channels, height, width):
  from fakedetect.components import filters
  layer = filters.layer(name)
  out = np.asarray(layer(_images((2, height, width, 3))))
  assert out.shape == (2, height, width, channels)
  assert layer.compute_output_shape((None, height, width, 3)) == (None, height, width, channels)
  assert filters.channels(name) == channels
  assert not layer.trainable_weights


def test_no_filter_is_none_and_unknown_filter_says_which_exist():
  from fakedetect.components import filters
  assert filters.layer('none') is None
  with pytest.raises(ValueError, match='none, npr, highpass'):
    filters.layer('srm')


@pytest.mark.parametrize('height, width', [(32, 32), (33, 31)])
def test_npr_is_zero_on_a_nearest_upsampled_image_and_not_on_noise(height, width):
  from fakedetect.components import filters
  layer = filters.layer('npr')
  coarse = _images((1, (height + 1) // 2, (width + 1) // 2, 3))
  upsampled = coarse.repeat(2, axis=1).repeat(2, axis=2)[:, :height, :width]
  assert np.array_equal(np.asarray(layer(upsampled)), np.zeros_like(upsampled))
  residual = np.asarray(layer(_images((1, height, width, 3), seed=1)))
  assert np.count_nonzero(residual) > residual.size // 2  # all but the kept quarter of pixels
  # On noise in [0, 1] the scaled residual is large; on photos it is about 1 (see the module).
  assert residual.std() > 1


def test_npr_keeps_full_precision_under_mixed_precision():
  import keras
  from fakedetect.components import filters
  image = _images((1, 16, 16, 3))
  expected = (image - image[:, ::2, ::2].repeat(2, axis=1).repeat(2, axis=2)) * filters.NPR_SCALE
  policy = keras.config.dtype_policy()
  keras.config.set_dtype_policy('mixed_bfloat16')
  try:
    out = filters.layer('npr')(image)
  finally:
    keras.config.set_dtype_policy(policy)
  assert keras.backend.standardize_dtype(out.dtype) == 'float32'
  np.testing.assert_allclose(np.asarray(out), expected, atol=1e-4)  # bfloat16 is off by ~0.1


def test_highpass_is_zero_on_a_flat_image_up_to_the_borders():
  from fakedetect.components import filters
  flat = np.full((1, 33, 31, 3), 0.37, np.float32)
  np.testing.assert_allclose(np.asarray(filters.layer('highpass')(flat)), 0.0, atol=1e-5)
  assert np.asarray(filters.layer('highpass')(_images((1, 33, 31, 3)))).std() > 1


@pytest.mark.parametrize('name', ['npr', 'highpass'])
def test_filter_survives_a_keras_save_and_load(name, tmp_path):
  import keras
  from fakedetect.components import filters
  inputs = keras.Input((33, 31, 3))
  model = keras.Model(inputs, filters.layer(name)(inputs))
  before, after = _round_trip(model, tmp_path / 'filter.keras', _images((2, 33, 31, 3)))
  assert np.array_equal(before, after)


# The original model's body (components/model.py at 71621e1, build(32): width 32, depth 3) before
# global pooling: layer type, output shape, parameters. CIFAKE's results were measured on this
# (with Keras' BatchNormalization, which FusedBatchNormalization computes the same, tested below).
ORIGINAL_CNN_BODY = [
    ('Conv2D', (32, 32, 32), 864), ('FusedBatchNormalization', (32, 32, 32), 128),
    ('ReLU', (32, 32, 32), 0), ('Conv2D', (32, 32, 32), 9216),
    ('FusedBatchNormalization', (32, 32, 32), 128), ('ReLU', (32, 32, 32), 0),
    ('MaxPooling2D', (16, 16, 32), 0),
    ('Conv2D', (16, 16, 64), 18432), ('FusedBatchNormalization', (16, 16, 64), 256),
    ('ReLU', (16, 16, 64), 0), ('Conv2D', (16, 16, 64), 36864),
    ('FusedBatchNormalization', (16, 16, 64), 256), ('ReLU', (16, 16, 64), 0),
    ('MaxPooling2D', (8, 8, 64), 0),
    ('Conv2D', (8, 8, 128), 73728), ('FusedBatchNormalization', (8, 8, 128), 512),
    ('ReLU', (8, 8, 128), 0), ('Conv2D', (8, 8, 128), 147456),
    ('FusedBatchNormalization', (8, 8, 128), 512), ('ReLU', (8, 8, 128), 0),
]


def test_cnn_backbone_is_the_original_cnn_body_layer_for_layer():
  import keras
  from fakedetect.components import backbones
  backbone = backbones.build('cnn', (32, 32, 3), width=32, depth=3)
  body = [layer for layer in backbone.layers if not isinstance(layer, keras.layers.InputLayer)]
  assert isinstance(body[-1], keras.layers.GlobalAveragePooling2D)
  assert [(type(layer).__name__, tuple(layer.output.shape[1:]), layer.count_params())
          for layer in body[:-1]] == ORIGINAL_CNN_BODY
  for layer in body:
    config = layer.get_config()
    if isinstance(layer, keras.layers.Conv2D):
      assert (config['kernel_size'], config['strides'], config['padding'], config['use_bias']) == (
          (3, 3), (1, 1), 'same', False)
    if isinstance(layer, keras.layers.BatchNormalization):
      assert config['momentum'] == 0.9
  assert backbone.output_shape == (None, 128)


def test_fused_batch_norm_trains_and_infers_as_keras_batch_norm(tmp_path):
  """Same outputs, gradients and moving statistics as Keras' layer, in training and inference,
  and a model with it survives a .keras round trip."""
  import keras
  import tensorflow as tf
  from fakedetect.components import batch_norm
  inputs = tf.constant(_images((4, 6, 5, 3)) * 3.0 + 1.0)
  layers = [cls(momentum=0.9)
            for cls in (keras.layers.BatchNormalization, batch_norm.FusedBatchNormalization)]
  for layer in layers:
    layer.build(inputs.shape)
    layer.gamma.assign([0.5, 1.5, -1.0])
    layer.beta.assign([0.1, -0.2, 0.3])
  found = []
  for layer in layers:
    with tf.GradientTape() as tape:
      tape.watch(inputs)
      outputs = layer(inputs, training=True)
      loss = tf.reduce_sum(outputs * _images(inputs.shape, seed=2))
    grads = tape.gradient(loss, [inputs, layer.gamma, layer.beta])
    found.append([outputs, *grads, layer.moving_mean, layer.moving_variance,
                  layer(inputs, training=False)])
  for keras_value, fused_value in zip(*found):
    np.testing.assert_allclose(np.asarray(fused_value), np.asarray(keras_value),
                               rtol=1e-3, atol=1e-4)
  assert not np.allclose(np.asarray(found[0][5]), 1.0)  # the moving variance did move
  model = keras.Sequential([keras.Input((6, 5, 3)), layers[1]])
  before, after = _round_trip(model, tmp_path / 'bn.keras', np.asarray(inputs))
  assert np.array_equal(before, after)


@pytest.mark.parametrize('size, stem_stride', [(64, 1), (128, 2)])
def test_resnet_backbone_trains_at_real_resolution(size, stem_stride):
  import keras
  from fakedetect.components import backbones
  keras.utils.set_random_seed(0)
  backbone = backbones.build('resnet', (size, size, 3), width=16, depth=3)
  assert backbone.output_shape == (None, 64)
  assert 50_000 < backbone.count_params() < 150_000  # 78k: a ResNet-8 at width 16
  assert backbone.get_layer('stem_conv').strides == (stem_stride, stem_stride)
  assert backbone.get_layer('pool').input.shape[1] == size // stem_stride // 4
  model = keras.Sequential([backbone, keras.layers.Dense(1, activation='sigmoid')])
  model.compile(optimizer=keras.optimizers.Adam(1e-3), loss='binary_crossentropy')
  before = [w.copy() for w in model.get_weights()]
  loss = model.train_on_batch(_images((4, size, size, 3)), np.array([0, 1, 0, 1], 'float32'))
  assert np.isfinite(loss)
  assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))


def test_own_backbone_behind_a_filter_survives_a_keras_save_and_load(tmp_path):
  import keras
  from fakedetect.components import backbones, filters
  inputs = keras.Input((48, 48, 3))
  backbone = backbones.build('resnet', (48, 48, filters.channels('highpass')), 8, 2)
  model = keras.Model(inputs, backbone(filters.layer('highpass')(inputs)))
  before, after = _round_trip(model, tmp_path / 'model.keras', _images((2, 48, 48, 3)))
  np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)


def _randomized(model):
  """The model with every weight replaced by noise: a load that did nothing cannot pass."""
  rng = np.random.default_rng(7)
  model.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()])
  return model


def _same_weights(a, b):
  return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


@pytest.mark.parametrize('name', ['cnn', 'resnet'])
def test_own_backbone_loads_its_weights_file_and_refuses_another_shape(name, tmp_path):
  from fakedetect.components import backbones
  saved = _randomized(backbones.build(name, (32, 32, 3), 8, 3))
  path = str(tmp_path / 'backbone.weights.h5')
  saved.save_weights(path)
  assert _same_weights(backbones.build(name, (32, 32, 3), 8, 3, weights=path), saved)
  assert not _same_weights(backbones.build(name, (32, 32, 3), 8, 3), saved)
  for width, depth, channels in [(8, 2, 3), (8, 4, 3), (16, 3, 3), (8, 3, 9)]:
    with pytest.raises(ValueError, match='does not fit the backbone'):
      backbones.build(name, (32, 32, channels), width, depth, weights=path)


APPLICATION = 'MobileNetV3Small'


def test_application_builds_without_weights_and_survives_a_keras_save_and_load(tmp_path):
  from fakedetect.components import backbones
  backbone = backbones.build(APPLICATION, (32, 32, 3), width=0, depth=0)
  assert backbone.output_shape == (None, 576)
  before, after = _round_trip(backbone, tmp_path / 'app.keras', _images((2, 32, 32, 3)))
  np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)


def test_application_input_is_what_its_preprocess_input_expects():
  import keras
  from fakedetect.components import backbones
  pixels = _images((1, 4, 4, 3))
  for name, expected in [('ResNet50', keras.applications.resnet.preprocess_input(pixels * 255)),
                         ('MobileNetV2', pixels * 2 - 1), ('EfficientNetB0', pixels * 255)]:
    scaling = backbones.ApplicationInput(name)
    np.testing.assert_allclose(np.asarray(scaling(pixels)), expected, rtol=1e-5, atol=1e-4)
  # A filter's 9 channels take the application's gain only: no colour means to subtract.
  residual = _images((1, 4, 4, 9)) - 0.5
  np.testing.assert_allclose(
      np.asarray(backbones.ApplicationInput('ResNet50')(residual)), residual * 255, rtol=1e-6)


def test_application_loads_a_weights_file(tmp_path):
  from fakedetect.components import backbones
  network = _randomized(backbones.build(APPLICATION, (32, 32, 3), 0, 0)).get_layer(APPLICATION)
  path = str(tmp_path / 'mobilenet.weights.h5')
  network.save_weights(path)
  loaded = backbones.build(APPLICATION, (32, 32, 3), 0, 0, weights=path)
  assert _same_weights(loaded.get_layer(APPLICATION), network)


@pytest.fixture
def imagenet_file(tmp_path, monkeypatch):
  """Stands in for Keras' download (no network here): every application module calls
  keras.src.utils.file_utils.get_file; this one serves a legacy-H5 file as ImageNet's are."""
  import h5py
  from keras.src.legacy.saving import legacy_h5_format
  from keras.src.utils import file_utils
  from fakedetect.components import backbones
  network = _randomized(backbones.build(APPLICATION, (32, 32, 3), 0, 0)).get_layer(APPLICATION)
  path = str(tmp_path / 'imagenet_notop.h5')
  with h5py.File(path, 'w') as stored:
    legacy_h5_format.save_weights_to_hdf5_group(stored, network)
  asked = []

  def get_file(fname=None, origin=None, **kwargs):
    del kwargs
    asked.append((fname, origin))
    return path

  monkeypatch.setattr(file_utils, 'get_file', get_file)
  return network, asked


def test_application_imagenet_weights_come_from_keras_download(imagenet_file):
  from fakedetect.components import backbones
  network, asked = imagenet_file
  loaded = backbones.build(APPLICATION, (32, 32, 3), 0, 0, weights='imagenet')
  assert _same_weights(loaded.get_layer(APPLICATION), network)
  assert len(asked) == 1 and 'no_top' in asked[0][0] and asked[0][1].startswith('https://')


def test_application_imagenet_without_network_says_what_to_do(monkeypatch):
  from keras.src.utils import file_utils
  from fakedetect.components import backbones

  def offline(fname=None, origin=None, **kwargs):
    raise Exception(f'URL fetch failure on {origin}: None -- Temporary failure in name resolution')

  monkeypatch.setattr(file_utils, 'get_file', offline)
  with pytest.raises(RuntimeError, match='without network.*set the weights to its path'):
    backbones.build(APPLICATION, (32, 32, 3), 0, 0, weights='imagenet')


def test_check_says_what_is_wrong(tmp_path):
  from fakedetect.components import backbones
  assert backbones.check('cnn', 'none') is None
  assert backbones.check('resnet', 'previous') is None
  assert backbones.check('ResNet50', 'imagenet') is None
  unknown = backbones.check('resnet50', 'none')
  assert 'unknown backbone' in unknown and 'ResNet50?' in unknown
  assert backbones.names_message() in unknown
  assert 'no ImageNet weights' in backbones.check('cnn', 'imagenet')
  assert 'gives 9' in backbones.check('ResNet50', 'imagenet', channels=9)
  missing = str(tmp_path / 'missing.weights.h5')
  assert 'does not exist' in backbones.check('ResNet50', missing)
  assert 'does not exist' in backbones.check('cnn', missing)
  assert '.weights.h5' in backbones.check('cnn', str(tmp_path / 'legacy.h5'))
  assert 'neither' in backbones.check('ResNet50', 'Imagenet')
  with pytest.raises(ValueError, match='no ImageNet weights'):
    backbones.build('resnet', (64, 64, 3), 8, 2, weights='imagenet')
