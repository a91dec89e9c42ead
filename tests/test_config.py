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


# Each was accepted by validate() before #16 and failed (or did harm) only later, if at all.
@pytest.mark.parametrize('settings, words', [
    (['data.train_percent=200'], 'must each be 0..100 and sum to 100; got 200, 15 and 15'),
    (['data.train_percent=60'], 'sum to 100; got 60, 15 and 15'),
    (['data.eval_percent=0', 'data.train_percent=85'], 'data.eval_percent must be positive'),
    (['train.learning_rate=nan'], 'train.learning_rate=nan is not a finite number'),
    (['train.learning_rate=inf'], 'train.learning_rate=inf is not a finite number'),
    (['train.learning_rate=0'], 'train.learning_rate=0.0 is outside its range: 1e-06..1.0'),
    (['train.learning_rate=-0.001'], 'train.learning_rate=-0.001 is outside its range'),
    (['train.learning_rate=50'], 'train.learning_rate=50.0 is outside its range'),
    (['train.dropout=1'], 'train.dropout=1.0 is outside its range: at least 0.0 and below 1.0'),
    (['train.dropout=-0.1'], 'train.dropout=-0.1 is outside its range'),
    (['train.width=0'], 'train.width=0 is outside its range: 1..1024'),
    (['train.depth=0'], 'train.depth=0 is outside its range'),
    (['train.weight_decay=-1'], 'train.weight_decay=-1.0 is outside its range'),
    (['data.max_pixels=0'], 'data.max_pixels=0 is outside its range: at least 1'),
    (['train.early_stopping_patience=-1'], 'train.early_stopping_patience=-1 is outside'),
    (['tuner.max_trials=0'], 'tuner.max_trials=0 is outside its range'),
    (['gate.min_precision=1.5'], 'gate.min_precision=1.5 is outside its range: 0.0..1.0'),
    (['gate.min_recall=-0.2'], 'gate.min_recall=-0.2 is outside its range'),
    (['gate.min_robust_accuracy=nan'], 'gate.min_robust_accuracy=nan is not a finite number'),
    (['gate.eval_split=validation'], "gate.eval_split='validation' is not one of eval, test"),
    (['gate.eval_split=train'], "gate.eval_split='train' is not one of eval, test"),
    (['runner.extra_args=[1, 2]'], 'runner.extra_args=[1, 2] must be a list of strings'),
    (['runner.extra_args=[["--a"]]'], 'must be a list of strings'),
    (['model_name=../../escaped'], "model_name='../../escaped' is not a plain name"),
    (['model_name=a/b'], "model_name='a/b' is not a plain name"),
    (['model_name=.hidden'], 'is not a plain name'),
    (['model_name='], "model_name='' is not a plain name"),
    (['name=my pipeline'], "name='my pipeline' is not a plain name"),
    (['train.flip_average=true', 'train.flip=false'], 'use train.flip=true with it'),
])
def test_a_setting_out_of_its_range_is_refused_with_its_name_and_range(settings, words):
  problem = config_lib.validate(config_lib.PipelineConfig().with_overrides(settings))
  assert problem is not None and words in problem
  assert '\n' not in problem  # one line


@pytest.mark.parametrize('settings', [
    [], ['data.train_percent=80', 'data.eval_percent=10', 'data.test_percent=10'],
    ['data.train_percent=85', 'data.test_percent=0', 'gate.eval_split=eval'],
    ['train.learning_rate=1', 'train.dropout=0', 'train.early_stopping_patience=0'],
    ['model_name=faces-v2.1_b', 'runner.extra_args=--a=1,--b'], ['gate.min_precision=0'],
    ['train.flip_average=true'],
])
def test_settings_in_range_pass(settings):
  assert config_lib.validate(config_lib.PipelineConfig().with_overrides(settings)) is None


def test_cli_refuses_a_bad_setting_before_any_work(tmp_path):
  from click.testing import CliRunner  # pylint: disable=g-import-not-at-top
  from fakedetect import cli  # pylint: disable=g-import-not-at-top
  data = tmp_path / 'data'
  for label in ('real', 'fake'):
    (data / label).mkdir(parents=True)
  output = tmp_path / 'out'
  result = CliRunner().invoke(cli.main, ['run', '--data', str(data), '--output', str(output),
                                         '--set', 'model_name=../../escaped'])
  assert result.exit_code == 1
  assert "model_name='../../escaped' is not a plain name" in result.output
  assert 'Traceback' not in result.output and not output.exists()
