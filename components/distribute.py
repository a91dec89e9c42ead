"""The Trainer's tf.distribute strategy, chosen by `train.strategy`.

  auto          MirroredStrategy over the GPUs when there are several, else the default strategy
                (one device; TF's thread pools already use every CPU core)
  one-device    OneDeviceStrategy on the first GPU, else on the CPU
  mirrored      MirroredStrategy: synchronous data parallelism over every local GPU (the CPU
                when there is none)
  multi-worker  MultiWorkerMirroredStrategy: the same across machines; the cluster and this
                worker's role come from TF_CONFIG, which the platform (Vertex AI custom
                training, a Kubeflow TFJob) sets on every worker

`train.precision` (`set_precision`) picks Keras' dtype policy: `auto` is float16 compute on a
GPU, bfloat16 compute on a CPU that has bfloat16 instructions (AVX512_BF16 or AMX: CIFAKE epochs
1.3 to 1.4x faster than float32 here, input pipeline included), float32 elsewhere. Variables
stay float32 either way, and the exported model always computes in float32 (`float32_copy`), so
serving is the same on any machine. TensorFlow is imported on use: the config imports
STRATEGIES and PRECISIONS when the CLI starts and must not pay for it.
"""

import json
import os
from typing import Any, Dict, Optional

from absl import logging

STRATEGIES = ('auto', 'one-device', 'mirrored', 'multi-worker')
PRECISIONS = ('auto', 'float32', 'mixed_float16', 'mixed_bfloat16')
# /proc/cpuinfo flags of CPUs with native bfloat16 arithmetic (oneDNN uses them).
_BF16_CPU_FLAGS = ('avx512_bf16', 'amx_bf16')
TF_CONFIG = 'TF_CONFIG'
_TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
                      '"task": {"type": "worker", "index": 0}}')


class StrategyError(ValueError):
  """A strategy that cannot be built here; the message says what to change."""


def parse_tf_config(raw: Optional[str]) -> Dict[str, Any]:
  """TF_CONFIG as a dict, checked: TensorFlow's own errors on a bad one are cryptic or hangs."""
  if not raw:
    raise StrategyError(
        f'train.strategy=multi-worker needs {TF_CONFIG}: the cluster and this worker\'s role, '
        f'set on every worker, e.g. {TF_CONFIG}=\'{_TF_CONFIG_EXAMPLE}\'. Without several '
        'machines, use train.strategy=mirrored or auto.')
  try:
    config = json.loads(raw)
  except ValueError as e:
    raise StrategyError(f'{TF_CONFIG} is not JSON ({e}); expected e.g. '
                        f'{_TF_CONFIG_EXAMPLE}') from None
  cluster = config.get('cluster') if isinstance(config, dict) else None
  if not isinstance(cluster, dict) or not cluster or not all(
      isinstance(hosts, list) and hosts and all(isinstance(h, str) and ':' in h for h in hosts)
      for hosts in cluster.values()):
    raise StrategyError(f'{TF_CONFIG} needs "cluster": {{job: ["host:port", ...]}}, got '
                        f'{raw}; e.g. {_TF_CONFIG_EXAMPLE}')
  task = config.get('task')
  if not isinstance(task, dict) or task.get('type') not in cluster:
    raise StrategyError(f'{TF_CONFIG} "task" must name this worker\'s job, one of '
                        f'{sorted(cluster)}, e.g. {{"type": "worker", "index": 0}}; got {task}.')
  index = task.get('index')
  if not isinstance(index, int) or not 0 <= index < len(cluster[task['type']]):
    raise StrategyError(f'{TF_CONFIG} task index {index!r} is not a position in '
                        f'cluster[{task["type"]!r}] ({len(cluster[task["type"]])} hosts).')
  return config


def strategy(name: str):
  """The tf.distribute.Strategy for `name`, to build and compile the model under its scope.

  Call it before any other TensorFlow work in the process: MultiWorkerMirroredStrategy has to
  configure the runtime's collective ops before the runtime starts.
  """
  if name not in STRATEGIES:
    raise StrategyError(f'Unknown train.strategy {name!r}; one of {", ".join(STRATEGIES)}.')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  result = _multi_worker() if name == 'multi-worker' else None  # before anything starts TF
  gpus = tf.config.list_physical_devices('GPU')
  if result is None and (name == 'mirrored' or (name == 'auto' and len(gpus) > 1)):
    result = tf.distribute.MirroredStrategy()
  elif result is None and name == 'one-device':
    result = tf.distribute.OneDeviceStrategy('/gpu:0' if gpus else '/cpu:0')
  elif result is None:
    result = tf.distribute.get_strategy()
  logging.info('Training on %s (%d GPU(s) visible, %d CPU cores): train.strategy=%s, %s with %d '
               'replica(s) in sync.', 'GPU' if gpus else 'CPU', len(gpus), os.cpu_count() or 1,
               name, type(result).__name__, result.num_replicas_in_sync)
  return result


def cpu_has_bfloat16(cpuinfo_path: str = '/proc/cpuinfo') -> bool:
  """Whether this CPU has bfloat16 instructions (Linux; False where it cannot tell)."""
  try:
    with open(cpuinfo_path) as f:
      flags = next((line.split(':', 1)[1].split() for line in f if line.startswith('flags')), [])
  except OSError:
    return False
  return any(flag in flags for flag in _BF16_CPU_FLAGS)


def set_precision(name: str) -> str:
  """Sets Keras' global dtype policy for `train.precision`; returns the policy's name.

  Call it before building the model: a layer keeps the policy it was built under.
  """
  if name not in PRECISIONS:
    raise StrategyError(f'Unknown train.precision {name!r}; one of {", ".join(PRECISIONS)}.')
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if name == 'auto':
    if tf.config.list_physical_devices('GPU'):
      name = 'mixed_float16'
    else:
      name = 'mixed_bfloat16' if cpu_has_bfloat16() else 'float32'
  keras.mixed_precision.set_global_policy(name)
  logging.info('Keras dtype policy %s (train.precision).', name)
  return name


def float32_copy(model, build):
  """`model`'s weights in a float32 twin made by `build()`: what is exported and served, so
  that serving computes alike on every machine and the threshold is chosen on its outputs.
  Returns `model` itself if it already computes in float32. Leaves the policy at float32."""
  import keras  # pylint: disable=g-import-not-at-top
  if all(layer.compute_dtype == 'float32' for layer in model.layers):
    return model
  keras.mixed_precision.set_global_policy('float32')
  twin = build()
  twin.set_weights(model.get_weights())
  return twin


def _multi_worker():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  parse_tf_config(os.environ.get(TF_CONFIG))
  try:
    return tf.distribute.MultiWorkerMirroredStrategy()
  except RuntimeError as e:
    if 'program startup' not in str(e):
      raise
    raise StrategyError(
        'train.strategy=multi-worker needs a process of its own per worker, started with '
        f'{TF_CONFIG} (the Trainer on Vertex AI or Kubeflow, one replica per worker); here '
        'TensorFlow was already running (a local run executes every component in one '
        'process). Use train.strategy=mirrored or auto locally.') from None


def export_dir(strategy_in_use, serving_model_dir: str, scratch_dir: str) -> str:
  """Where this worker writes the model: the chief to the serving folder, every other worker of
  a multi-worker run to a scratch folder of its own (TensorFlow's documented pattern: all must
  save, since saving runs collective ops, but only the chief's copy is the model)."""
  resolver = getattr(strategy_in_use, 'cluster_resolver', None)
  task_type = getattr(resolver, 'task_type', None)
  task_id = getattr(resolver, 'task_id', None)
  if task_type is None:
    return serving_model_dir
  cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
  chief = task_type == 'chief' or (task_type == 'worker' and task_id == 0 and
                                   'chief' not in cluster)
  return serving_model_dir if chief else os.path.join(scratch_dir, f'{task_type}_{task_id}')
