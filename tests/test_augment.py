"""Training-input augmentation: the forensic recipe (JPEG, blur) and the strengths that drive it."""

import numpy as np
import pytest

from fakedetect.components import augment


def _noise(count=8, size=32, seed=0):
  return np.random.default_rng(seed).random((count, size, size, 3)).astype(np.float32)


def _smooth(count=8, size=32, seed=0):
  """Photo-like images: coarse random colour fields, bilinearly enlarged."""
  import tensorflow as tf
  coarse = np.random.default_rng(seed).random((count, 4, 4, 3)).astype(np.float32)
  return tf.image.resize(coarse, (size, size)).numpy()


def _changed(before, after):
  return np.abs(before - after).reshape(len(before), -1).max(axis=1) > 1e-6


def test_everything_off_means_no_augmentation():
  assert augment.augmenter(augment.Strengths(flip=False)) is None


def test_jpeg_recompression_changes_every_image_when_fraction_is_one():
  import tensorflow as tf
  images = _smooth()
  out = augment.augmenter(augment.Strengths(flip=False, jpeg_fraction=1.0,
                                            jpeg_min_quality=30))(tf.constant(images)).numpy()
  assert out.shape == images.shape
  assert out.min() >= 0 and out.max() <= 1
  assert _changed(images, out).all()
  # JPEG keeps the picture: each output is far closer to its own input than to another image.
  own = np.abs(out - images).mean()
  other = np.abs(out - images[::-1]).mean()
  assert own < other / 4


def test_blur_lowers_high_frequencies_and_keeps_flat_images_flat():
  import tensorflow as tf
  blur = augment.augmenter(augment.Strengths(flip=False, blur_fraction=1.0, blur_max_sigma=1.5))
  images = _noise()
  out = blur(tf.constant(images)).numpy()
  # Neighbour differences measure high-frequency energy; blur must cut it.
  roughness = lambda x: np.abs(np.diff(x, axis=1)).mean()
  assert roughness(out) < 0.8 * roughness(images)
  np.testing.assert_allclose(out.mean(), images.mean(), atol=0.02)
  flat = np.full((2, 16, 16, 3), 0.25, np.float32)
  np.testing.assert_allclose(blur(tf.constant(flat)).numpy(), flat, atol=1e-5)


def test_fraction_decides_how_many_images_change():
  import tensorflow as tf
  images = _noise(count=200, size=8, seed=1)
  out = augment.augmenter(augment.Strengths(flip=False, blur_fraction=0.25))(
      tf.constant(images)).numpy()
  changed = _changed(images, out).sum()
  assert 25 <= changed <= 75, changed  # 50 expected; binomial sd ~6


def test_strengths_from_hparams_takes_known_fields_typed():
  strengths = augment.Strengths.from_hparams(
      {'flip': 1, 'jpeg_fraction': '0.3', 'jpeg_min_quality': 70.0, 'learning_rate': 0.01})
  assert strengths.flip is True
  assert strengths.jpeg_fraction == pytest.approx(0.3)
  assert strengths.jpeg_min_quality == 70 and isinstance(strengths.jpeg_min_quality, int)


def test_train_config_carries_every_augmentation_strength():
  """The Trainer reads each HPARAM_NAME from the TrainConfig: none may be missing."""
  from fakedetect.components import model
  from fakedetect.pipeline import config
  train = config.TrainConfig()
  assert all(hasattr(train, name) for name in model.HPARAM_NAMES)


@pytest.mark.parametrize('setting, message', [
    ('train.jpeg_fraction=1.5', 'jpeg_fraction'),
    ('train.jpeg_min_quality=0', 'jpeg_min_quality'),
    ('train.blur_max_sigma=9', 'blur_max_sigma'),
])
def test_out_of_range_strengths_are_refused_with_the_setting_named(setting, message):
  from fakedetect.pipeline import config
  assert message in config.validate(config.PipelineConfig().with_overrides([setting]))


def _find_shift(out, image, pixels):
  """The (dy, dx) such that `out` is `image` padded by `pixels` (mirrored, as numpy's 'reflect'
  and TensorFlow's REFLECT do) and cropped at that offset, or None."""
  padded = np.pad(image, ((pixels, pixels), (pixels, pixels), (0, 0)), mode='reflect')
  height, width = image.shape[:2]
  for dy in range(-pixels, pixels + 1):
    for dx in range(-pixels, pixels + 1):
      window = padded[pixels + dy:pixels + dy + height, pixels + dx:pixels + dx + width]
      if np.array_equal(out, window):
        return dy, dx
  return None


def test_translation_shifts_each_image_by_its_own_integer_offset_with_mirrored_borders():
  import tensorflow as tf
  images = _noise(count=48, size=12, seed=2)[:, :, :10]  # not square: rows and columns differ
  out = augment.translated(tf.constant(images), 3).numpy()
  assert out.shape == images.shape
  shifts = [_find_shift(o, i, 3) for o, i in zip(out, images)]
  assert None not in shifts  # bit-exact windows of the padded image: nothing resampled
  # One offset per image, drawn over the whole range on both axes.
  assert len(set(shifts)) > 10
  assert {dy for dy, _ in shifts} == set(range(-3, 4))
  assert {dx for _, dx in shifts} == set(range(-3, 4))


def test_translate_moves_the_whole_image_only_and_zero_turns_it_off():
  import tensorflow as tf
  images = _noise(count=16, size=8, seed=3)
  apply = augment.augmenter(augment.Strengths(flip=False, translate=2))
  moved = apply(tf.constant(images)).numpy()
  assert all(_find_shift(o, i, 2) is not None for o, i in zip(moved, images))
  assert _changed(images, moved).sum() > 8  # (0, 0) is 1 offset in 25
  # The local view's crops are random windows already: translation leaves them be.
  np.testing.assert_array_equal(apply(tf.constant(images), whole_image=False).numpy(), images)
  assert augment.augmenter(augment.Strengths(flip=False, translate=0)) is None
  assert augment.Strengths().translate == 0
  strengths = augment.Strengths.from_hparams({'translate': 4.0})
  assert strengths.translate == 4 and isinstance(strengths.translate, int)


@pytest.mark.parametrize('settings, words', [
    (['train.translate=65'], 'train.translate=65 is outside its range'),
    (['image.view=global', 'image.size=8', 'train.translate=8'], 'must be below image.size (8)'),
    (['train.label_smoothing=0.5'], 'train.label_smoothing=0.5 is outside its range'),
    (['train.ema=1'], 'train.ema=1.0 is outside its range'),
    (['train.last_block_factor=0'], 'train.last_block_factor=0.0 is outside its range'),
    (['model.backbone=MobileNetV3Small', 'image.standardize=true'], 'image.standardize'),
    (['model.backbone=resnet', 'train.last_block_factor=2'], 'use model.backbone=cnn'),
])
def test_recipe_levers_out_of_range_or_misplaced_are_refused(settings, words):
  from fakedetect.pipeline import config
  assert words in config.validate(config.PipelineConfig().with_overrides(settings))


def test_recipe_levers_in_range_pass():
  from fakedetect.pipeline import config
  assert config.validate(config.PipelineConfig().with_overrides([
      'image.view=local', 'image.size=8', 'train.translate=8', 'train.label_smoothing=0.1',
      'train.ema=0.999', 'train.last_block_factor=2', 'image.standardize=true',
      'model.backbone=cnn'])) is None
