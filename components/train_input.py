"""The Trainer's and the Tuner's input: the Transform's examples as (model inputs, label) batches.

A split is read one of two ways, which give the same batches in distribution:

  in memory   read and parsed once (the first epoch, whose shuffle waits for the whole split)
              and kept as tensors; every epoch then shuffles the whole split (a buffer as large
              as the split), batches, crops and augments from memory. Chosen when the split's
              examples fit the budget: train.cache_bytes, never more than half the machine's
              memory, training split first.
  streaming   every epoch reads, decompresses and parses the TFRecords again through TFXIO,
              shuffling in its 10,000-example buffer: for a split too large to hold.

benchmarks/train_speed.py measures both, next to the model alone and the machine's matmul limit:
on a small CPU the input is a small share of a step, so memory saves CPU time more than it
raises images/s; the convolutions decide the rest.
"""

import os
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
import tensorflow as tf
import tensorflow_transform as tft
from tfx_bsl.public import tfxio

from fakedetect.components import augment
from fakedetect.components import features
from fakedetect.components import views
from fakedetect.pipeline import config as config_lib

# Examples per read while filling the in-memory copy (TFXIO parses a batch at a time).
_READ_BATCH = 256


def memory_budget(cache_bytes: int) -> int:
  """Bytes of parsed examples the input may hold: `cache_bytes` (train.cache_bytes), at most
  half the machine's physical memory, so a setting made for a large machine cannot swap a
  small one."""
  try:
    physical = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  except (AttributeError, ValueError, OSError):  # no sysconf (Windows): trust the setting
    return max(cache_bytes, 0)
  return max(min(cache_bytes, physical // 2), 0)


def split_size(files: List[str]) -> Tuple[int, int]:
  """(examples, bytes) of a split's TFRecords, uncompressed. Parsed, the examples take about as
  many bytes: a float feature is stored as packed float32, a serialized tensor as its bytes."""
  paths = sorted(path for pattern in files for path in tf.io.gfile.glob(pattern))
  if not paths:
    raise FileNotFoundError(f'No examples match {files}: the Transform\'s output is missing or '
                            'empty; run the pipeline again from the Transform.')
  # The Transform writes gzipped TFRecords (*.gz), as TFXIO detects them.
  compression = 'GZIP' if all(path.endswith('.gz') for path in paths) else ''
  records = tf.data.TFRecordDataset(paths, compression_type=compression)
  count, size = records.reduce(
      (tf.constant(0, tf.int64), tf.constant(0, tf.int64)),
      lambda total, record: (total[0] + 1,
                             total[1] + tf.cast(tf.strings.length(record), tf.int64)))
  return int(count), int(size)


def dataset(files: List[str], data_accessor, tf_transform_output: tft.TFTransformOutput,
            view: views.View, batch_size: int, training: bool, seed: int,
            shuffle_labels: bool = False, in_memory: Optional[int] = None) -> tf.data.Dataset:
  """(model inputs, label) batches of one pass over the files; Keras' epochs do the repeating.

  Training batches are shuffled and take a random crop per image (views.training_inputs);
  evaluation batches keep their order and take the fixed grid, as serving does. `in_memory`:
  the split's example count to hold it in memory (split_size), or None to stream it.
  """
  schema = tf_transform_output.transformed_metadata.schema
  if in_memory is None:
    examples = data_accessor.tf_dataset_factory(
        files,
        tfxio.TensorFlowDatasetOptions(
            batch_size=batch_size, label_key=features.TRANSFORMED_LABEL_KEY, num_epochs=1,
            shuffle=training, shuffle_seed=seed),
        schema)
  else:
    examples = data_accessor.tf_dataset_factory(
        files,
        tfxio.TensorFlowDatasetOptions(
            batch_size=_READ_BATCH, label_key=features.TRANSFORMED_LABEL_KEY, num_epochs=1,
            shuffle=False),
        schema).unbatch().cache()  # in memory from the end of the first pass on
    if training:
      examples = examples.shuffle(max(in_memory, 1), seed=seed, reshuffle_each_iteration=True)
    examples = examples.batch(batch_size)
  inputs = views.training_inputs if training else views.serving_inputs

  def _to_pair(transformed, label):
    label = tf.cast(tf.reshape(label, [-1]), tf.float32)
    if shuffle_labels:  # fault injection for gate tests: the model can learn nothing
      label = tf.random.shuffle(label, seed=seed)
    return inputs(transformed, view), label

  # tf.data's autotuning off: with it, whole training epochs on a 2-core machine ran on about
  # one core (mean epoch 1,366 and 1,473 against 1,805 and 1,862 images/s without it, the
  # fastest epochs alike; benchmarks/train_speed.py's `autotune` row). AUTOTUNE then means one
  # parallel call per core, and a prefetch buffer that grows as the model waits.
  tuning = tf.data.Options()
  tuning.autotune.enabled = False
  return examples.map(_to_pair, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
      tf.data.AUTOTUNE).with_options(tuning)


def train_and_eval(fn_args, tf_transform_output: tft.TFTransformOutput, view: views.View,
                   train: config_lib.TrainConfig,
                   shuffle_labels: bool = False) -> Tuple[tf.data.Dataset, tf.data.Dataset]:
  """The training and eval splits as `dataset`s, each held in memory if it fits what is left of
  the budget (training first: it is read every epoch, eval only for validation)."""
  budget = memory_budget(train.cache_bytes)
  found = []
  for split, files, training in (('training', fn_args.train_files, True),
                                 ('eval', fn_args.eval_files, False)):
    in_memory = None
    if budget > 0:
      count, size = split_size(files)
      if size <= budget:
        in_memory, budget = count, budget - size
      logging.info('The %s split (%d examples, %.2f GB parsed) %s.', split, count, size / 1e9,
                   'is held in memory after its first pass' if in_memory is not None else
                   f'is streamed every epoch: over the {budget / 1e9:.2f} GB left of the '
                   'budget (train.cache_bytes, at most half the memory)')
    found.append(dataset(files, fn_args.data_accessor, tf_transform_output, view,
                         train.batch_size, training=training, seed=train.seed if training else 0,
                         shuffle_labels=shuffle_labels and training, in_memory=in_memory))
  return found[0], found[1]


def augmented(examples: tf.data.Dataset, hparams: Dict[str, Any]) -> tf.data.Dataset:
  """The training input with augmentation, a batch at a time; evaluation and serving never pass
  through here."""
  apply = augment.augmenter(augment.Strengths.from_hparams(hparams))
  if apply is None:
    return examples

  def one_input(images):  # crops arrive as [b, 1, h, w, 3]; translation moves whole images only
    if images.shape.rank == 5:
      return apply(images[:, 0], whole_image=False)[:, None]
    return apply(images)

  return examples.map(lambda x, y: ({k: one_input(v) for k, v in x.items()}, y),
                      num_parallel_calls=tf.data.AUTOTUNE)
