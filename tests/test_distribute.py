"""train.strategy: what a CPU shows of each tf.distribute strategy, and the errors a user sees."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from fakedetect.components import distribute
from fakedetect.pipeline import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fit_one_step(strategy):
  """Builds, compiles and fits a tiny Keras model under the strategy: the Trainer's use of it."""
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  with strategy.scope():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation='sigmoid')])
    model.compile(optimizer='adam', loss='binary_crossentropy')
  history = model.fit(np.ones((8, 3), 'float32'), np.ones((8, 1), 'float32'), batch_size=4,
                      epochs=1, verbose=0)
  return history.history['loss'][0]


def test_auto_on_cpu_is_the_default_strategy():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  strategy = distribute.strategy('auto')
  assert strategy is tf.distribute.get_strategy()
  assert strategy.num_replicas_in_sync == 1
  assert _fit_one_step(strategy) > 0


def test_one_device_on_cpu_places_everything_on_the_cpu():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  strategy = distribute.strategy('one-device')
  assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
  assert strategy.extended.worker_devices[0].endswith('CPU:0')
  assert _fit_one_step(strategy) > 0


def test_mirrored_without_gpus_mirrors_over_the_cpu():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  strategy = distribute.strategy('mirrored')
  assert isinstance(strategy, tf.distribute.MirroredStrategy)
  assert strategy.num_replicas_in_sync == 1
  assert strategy.extended.worker_devices[0].endswith('CPU:0')
  assert _fit_one_step(strategy) > 0


def test_unknown_strategy_names_the_choices():
  with pytest.raises(distribute.StrategyError, match='one of auto, one-device, mirrored'):
    distribute.strategy('horovod')


def test_config_validates_the_strategy_name():
  config = config_lib.PipelineConfig().with_overrides(['train.strategy=mirrored'])
  assert config.train.strategy == 'mirrored' and config_lib.validate(config) is None
  bad = config_lib.PipelineConfig().with_overrides(['train.strategy=tpu'])
  assert 'train.strategy' in config_lib.validate(bad)
  assert set(config_lib.TrainConfig().__dataclass_fields__) >= {'strategy'}


@pytest.fixture
def restore_policy():
  import keras  # pylint: disable=g-import-not-at-top
  before = keras.mixed_precision.global_policy().name
  yield
  keras.mixed_precision.set_global_policy(before)


def test_cpu_bfloat16_support_is_read_from_the_cpu_flags(tmp_path):
  cpuinfo = tmp_path / 'cpuinfo'
  cpuinfo.write_text('processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 fma\n')
  assert distribute.cpu_has_bfloat16(str(cpuinfo))
  cpuinfo.write_text('processor\t: 0\nflags\t\t: fpu avx2 avx512f fma\n')
  assert not distribute.cpu_has_bfloat16(str(cpuinfo))
  assert not distribute.cpu_has_bfloat16(str(tmp_path / 'missing'))


def test_precision_sets_the_keras_policy_and_auto_follows_the_hardware(restore_policy):
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for name in ('float32', 'mixed_bfloat16', 'mixed_float16'):
    assert distribute.set_precision(name) == name
    assert keras.mixed_precision.global_policy().name == name
  expected = ('mixed_float16' if tf.config.list_physical_devices('GPU') else
              'mixed_bfloat16' if distribute.cpu_has_bfloat16() else 'float32')
  assert distribute.set_precision('auto') == expected
  with pytest.raises(distribute.StrategyError, match='one of auto, float32'):
    distribute.set_precision('int8')
  config = config_lib.PipelineConfig().with_overrides(['train.precision=fp8'])
  assert 'train.precision' in config_lib.validate(config)


def test_a_bfloat16_trained_model_is_exported_as_a_float32_twin(restore_policy):
  """The twin has the trained weights, computes in float32 and agrees with the mixed model."""
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from fakedetect.components import model as model_lib  # pylint: disable=g-import-not-at-top
  from fakedetect.components import views  # pylint: disable=g-import-not-at-top
  hparams = {'learning_rate': 3e-3, 'width': 4, 'depth': 2, 'dropout': 0.1}
  build = lambda: model_lib.build_from_hparams(views.View(views.GLOBAL, 16),
                                               model_lib.Architecture(), hparams)
  distribute.set_precision('mixed_bfloat16')
  mixed = build()
  assert mixed.get_layer(model_lib.GLOBAL_BACKBONE).layers[1].compute_dtype == 'bfloat16'
  images = np.random.default_rng(0).random((32, 16, 16, 3), dtype=np.float32)
  labels = (images.mean(axis=(1, 2, 3)) > 0.5).astype('float32')
  mixed.fit(images, labels, batch_size=8, epochs=2, verbose=0)
  twin = distribute.float32_copy(mixed, build)
  assert twin is not mixed
  assert {layer.compute_dtype for layer in twin.layers} == {'float32'}
  assert {layer.compute_dtype for layer in twin.get_layer(model_lib.GLOBAL_BACKBONE).layers} == {
      'float32'}
  assert keras.mixed_precision.global_policy().name == 'float32'
  for a, b in zip(mixed.get_weights(), twin.get_weights()):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(twin.predict(images, verbose=0), mixed.predict(images, verbose=0),
                             atol=0.03)
  assert distribute.float32_copy(twin, build) is twin  # already float32: nothing to copy


@pytest.mark.parametrize('raw, words', [
    (None, 'needs TF_CONFIG'),
    ('', 'needs TF_CONFIG'),
    ('{not json', 'not JSON'),
    ('{"task": {"type": "worker", "index": 0}}', '"cluster"'),
    ('{"cluster": {"worker": ["nohostport"]}, "task": {"type": "worker", "index": 0}}',
     '"cluster"'),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "chief", "index": 0}}', "['worker']"),
    ('{"cluster": {"worker": ["h:1"]}}', '"task"'),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 1}}',
     'not a position'),
])
def test_bad_tf_config_is_explained(raw, words):
  with pytest.raises(distribute.StrategyError) as error:
    distribute.parse_tf_config(raw)
  assert words in str(error.value)


def test_multi_worker_without_tf_config_says_what_to_set(monkeypatch):
  monkeypatch.delenv('TF_CONFIG', raising=False)
  with pytest.raises(distribute.StrategyError, match='needs TF_CONFIG') as error:
    distribute.strategy('multi-worker')
  assert '"cluster"' in str(error.value), 'the message carries an example'


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(('localhost', 0))
    return sock.getsockname()[1]


def _python(code: str, tf_config: dict) -> subprocess.CompletedProcess:
  env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=240)


def test_multi_worker_trains_as_a_one_worker_cluster_in_a_fresh_process():
  """A real MultiWorkerMirroredStrategy: collective ops, coordination service, TF_CONFIG."""
  tf_config = {'cluster': {'worker': [f'localhost:{_free_port()}']},
               'task': {'type': 'worker', 'index': 0}}
  result = _python('''
      from fakedetect.components import distribute
      strategy = distribute.strategy('multi-worker')  # first, as run_fn does
      from tests.test_distribute import _fit_one_step
      loss = _fit_one_step(strategy)
      resolver = strategy.cluster_resolver
      print('RESULT', type(strategy).__name__, strategy.num_replicas_in_sync, resolver.task_type,
            resolver.task_id, strategy.extended.should_checkpoint, loss > 0,
            distribute.export_dir(strategy, '/serve', '/scratch'))
      ''', tf_config)
  lines = [line for line in result.stdout.splitlines() if line.startswith('RESULT')]
  assert lines, result.stderr[-3000:]
  assert lines[0].split()[1:] == ['CollectiveAllReduceStrategy', '1', 'worker', '0', 'True',
                                  'True', '/serve']


def test_multi_worker_after_tensorflow_started_says_why_it_cannot():
  """A local run executes every component in one process: TF is running by the Trainer."""
  tf_config = {'cluster': {'worker': [f'localhost:{_free_port()}']},
               'task': {'type': 'worker', 'index': 0}}
  result = _python('''
      import tensorflow as tf
      tf.constant(1.0) + 1  # what earlier components do
      from fakedetect.components import distribute
      try:
        distribute.strategy('multi-worker')
      except distribute.StrategyError as e:
        print('RESULT', e)
      ''', tf_config)
  assert 'RESULT train.strategy=multi-worker needs a process of its own' in result.stdout, (
      result.stderr[-3000:])


@pytest.mark.parametrize('cluster, task_type, task_id, expected', [
    ({'worker': ['a:1', 'b:1']}, 'worker', 0, '/serve'),  # no chief: worker 0 is the chief
    ({'worker': ['a:1', 'b:1']}, 'worker', 1, '/scratch/worker_1'),
    ({'chief': ['c:1'], 'worker': ['a:1']}, 'chief', 0, '/serve'),
    ({'chief': ['c:1'], 'worker': ['a:1']}, 'worker', 0, '/scratch/worker_0'),
])
def test_only_the_chief_exports_to_the_serving_folder(cluster, task_type, task_id, expected):
  import types
  import tensorflow as tf
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
      tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
  strategy = types.SimpleNamespace(cluster_resolver=resolver)
  assert distribute.export_dir(strategy, '/serve', '/scratch') == expected


def test_single_machine_strategies_export_to_the_serving_folder():
  assert distribute.export_dir(distribute.strategy('auto'), '/serve', '/scratch') == '/serve'
