"""The typed config survives the trip through a component's custom_config (JSON in MLMD)."""

import dataclasses
import json

import pytest

from fakedetect.pipeline import config as config_lib


def test_module_code_rebuilds_the_typed_sections_from_custom_config():
  config = config_lib.PipelineConfig().with_overrides(
      ['train.epochs=3', 'train.dropout=1', 'train.flip=false', 'image.size=48',
       'tuner.max_trials=2'])
  custom = json.loads(json.dumps(config.module_config().to_custom_config()))  # as TFX stores it
  rebuilt = config_lib.ModuleConfig.from_custom_config(custom)
  assert rebuilt == config.module_config()
  assert isinstance(rebuilt.train, config_lib.TrainConfig)
  assert rebuilt.train.epochs == 3 and rebuilt.train.flip is False
  assert isinstance(rebuilt.train.dropout, float) and rebuilt.image.size == 48


def test_a_section_left_out_keeps_its_defaults():
  custom = config_lib.PipelineConfig().with_overrides(['image.size=64']).module_config()
  only_image = custom.to_custom_config('image')
  assert set(only_image) == {'image'}
  rebuilt = config_lib.ModuleConfig.from_custom_config(only_image)
  assert rebuilt.image.size == 64 and rebuilt.train == config_lib.TrainConfig()
  assert config_lib.ModuleConfig.from_custom_config(None) == config_lib.ModuleConfig()


def test_an_unknown_setting_in_custom_config_is_refused():
  custom = dataclasses.asdict(config_lib.ModuleConfig())
  custom['train']['no_such_setting'] = 1
  with pytest.raises(TypeError, match='no_such_setting'):
    config_lib.ModuleConfig.from_custom_config(custom)
