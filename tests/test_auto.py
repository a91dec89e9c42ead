"""`auto` settings (pipeline/auto.py): chosen from the folder, and never over a user's own."""

import pytest

from tests.conftest import encode_image, random_image


def _folder(root, side: int, count: int = 6):
  for label in ('real', 'fake'):
    (root / label).mkdir(parents=True)
    for i in range(count):
      (root / label / f'{i}.png').write_bytes(encode_image(random_image(side, side - 3, i)))
  return str(root)


def test_thumbnails_keep_todays_recipe_exactly(tmp_path):
  """CIFAKE-like 32 px folders resolve to the settings every earlier release trained with."""
  import dataclasses
  from fakedetect.pipeline import auto, config as config_lib
  config = config_lib.PipelineConfig()
  config.data.data_dir = _folder(tmp_path, 32)
  resolved, applied = auto.resolve(config)
  assert auto.folder_kind(auto.sample_sides(config.data.data_dir)) == 'thumbnails'
  assert (resolved.image.view, resolved.model.backbone) == ('global', 'cnn')
  assert applied == ['image.view=global', 'model.backbone=cnn']
  assert dataclasses.asdict(resolved.train) == dataclasses.asdict(config_lib.TrainConfig())
  assert resolved.image.size == 32


def test_photos_get_the_photo_preset_but_a_users_setting_wins(tmp_path):
  from fakedetect.pipeline import auto, config as config_lib
  config = config_lib.PipelineConfig()
  config.data.data_dir = _folder(tmp_path, 200)
  resolved, applied = auto.resolve(config)
  assert applied == [f'{k}={v}' for k, v in auto.PHOTOS.items()]
  assert resolved.image.view == auto.PHOTOS['image.view']
  user = ['image.size=48']
  resolved, applied = auto.resolve(config.with_overrides(user), user)
  assert resolved.image.size == 48 and not any(a.startswith('image.size=') for a in applied)
  assert 'photos' in auto.describe(applied, [200, 200])


def test_nothing_to_resolve_reads_nothing():
  from fakedetect.pipeline import auto, config as config_lib
  config = config_lib.PipelineConfig().with_overrides(['image.view=local', 'model.backbone=cnn'])
  config.data.data_dir = '/nonexistent'
  assert auto.resolve(config) == (config, [])


@pytest.mark.parametrize('setting,words', [
    ('image.view=sideways', 'image.view'),
    ('image.crop_size=512', 'image.crop_size'),
    ('image.native_size=8', 'image.native_size'),
    ('model.filter=sobel', 'model.filter'),
    ('model.backbone=NoSuchNet', 'NoSuchNet'),
    ('train.early_stopping_metric=val_f1', 'early_stopping_metric'),
])
def test_bad_view_and_model_settings_are_refused_with_the_setting_named(setting, words):
  from fakedetect.pipeline import config as config_lib
  problem = config_lib.validate(config_lib.PipelineConfig().with_overrides([setting]))
  assert problem and words in problem


def test_previous_weights_warm_start_only_a_matching_architecture(tmp_path):
  """model.weights=previous: the last blessed model's .keras copy (a file this test writes)."""
  import numpy as np
  import keras
  from fakedetect.components import model as model_lib, views
  view = views.View(views.GLOBAL, 16)
  keras.utils.set_random_seed(0)
  previous = model_lib.build(view, width=4, depth=2)
  path = str(tmp_path / 'model.keras')
  previous.save(path)
  keras.utils.set_random_seed(1)
  fresh = model_lib.build(view, width=4, depth=2)
  assert model_lib.copy_weights(fresh, path).startswith('previous')
  for a, b in zip(fresh.get_weights(), previous.get_weights()):
    np.testing.assert_array_equal(a, b)
  other = model_lib.build(view, width=8, depth=2)
  before = [w.copy() for w in other.get_weights()]
  assert model_lib.copy_weights(other, path).startswith('none')
  assert all(np.array_equal(a, b) for a, b in zip(before, other.get_weights()))


@pytest.mark.parametrize('weights,wired', [('none', False), ('previous', True)])
def test_previous_weights_wire_the_last_blessed_model_into_the_trainer(tmp_path, weights, wired):
  """TFX's continuous training: the Resolver's model is the Trainer's base_model, and only with
  model.weights=previous (a from-scratch Trainer must not re-run when a new model is blessed)."""
  from fakedetect.pipeline import config as config_lib, names, pipeline
  config = config_lib.PipelineConfig().with_overrides([
      f'data.data_dir={_folder(tmp_path / "data", 40)}', f'output_dir={tmp_path}',
      f'model.weights={weights}'])
  nodes = {node.id: node for node in pipeline.create_components(config)}
  trainer = nodes[names.TRAINER]
  assert ('base_model' in trainer.inputs) == wired
  if wired:
    assert trainer.inputs['base_model'].producer_component_id == names.RESOLVER
