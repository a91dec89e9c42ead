"""The Trainer's input (components/train_input.py) on a real Transform's output: held in memory
or streamed, every example once per epoch, the same batches in distribution."""

import os

import numpy as np
import pytest

from tests import conftest

COUNT = 40  # examples per split; image i is flat at value i / 255, so a pixel names its example


def _write_split(root, split: str, transformed, schema) -> str:
  """Transformed rows as the Transform component writes a split: gzipped tf.Example TFRecords."""
  import tensorflow as tf
  import tensorflow_transform as tft
  coder = tft.coders.ExampleProtoCoder(schema)
  folder = os.path.join(root, f'Split-{split}')
  os.makedirs(folder, exist_ok=True)
  with tf.io.TFRecordWriter(os.path.join(folder, 'transformed_examples-00000.gz'), 'GZIP') as w:
    for row in transformed:
      w.write(coder.encode(row))
  return os.path.join(folder, '*')


class _Accessor:
  """What TFX's DataAccessor offers the Trainer: TFXIO datasets over tf.Example files."""

  @staticmethod
  def tf_dataset_factory(files, options, schema):
    from tfx_bsl.public import tfxio
    return tfxio.TFExampleRecord(files, schema=schema).TensorFlowDataset(options)


def _flat(i: int) -> np.ndarray:
  return np.full((32, 32, 3), i, np.uint8)


def _located(i: int) -> np.ndarray:
  """Image i: red is i, green and blue are 8 x the pixel's row and column."""
  rows, columns = np.meshgrid(np.arange(32), np.arange(32), indexing='ij')
  return np.stack([np.full((32, 32), i), 8 * rows, 8 * columns], axis=-1).astype(np.uint8)


def _split(tmp_path_factory, image_config: dict, image=_flat):
  from fakedetect.components import features
  root = tmp_path_factory.mktemp('transformed')
  rows = [{features.IMAGE_KEY: [conftest.encode_image(image(i))],
           features.LABEL_KEY: [i % 2]} for i in range(COUNT)]
  output_dir, transformed = conftest.run_transform(root, image_config, rows)
  import tensorflow_transform as tft
  tf_transform_output = tft.TFTransformOutput(output_dir)
  schema = tf_transform_output.transformed_metadata.schema
  return (tf_transform_output, _write_split(root, 'train', transformed, schema),
          _write_split(root, 'eval', transformed[:COUNT // 2], schema))


@pytest.fixture(scope='module')
def global_split(tmp_path_factory):
  return _split(tmp_path_factory, {'view': 'global', 'size': 32})


def _dataset(split, training, in_memory, batch_size=8, view=None):
  from fakedetect.components import train_input
  from fakedetect.components import views
  tf_transform_output, train_files, _ = split
  return train_input.dataset([train_files], _Accessor, tf_transform_output,
                             view or views.View(views.GLOBAL, 32), batch_size, training=training,
                             seed=3, in_memory=in_memory)


def _epoch(dataset):
  """(example ids in order, labels, batch sizes) of one pass over the global view."""
  ids, labels, sizes = [], [], []
  for inputs, label in dataset:
    images = inputs['image'].numpy()
    ids += list(np.rint(images[:, 0, 0, 0] * 255).astype(int))
    labels += list(label.numpy())
    sizes.append(len(label))
  return ids, labels, sizes


def test_in_memory_training_gives_every_example_once_per_epoch_reshuffled(global_split):
  dataset = _dataset(global_split, training=True, in_memory=COUNT)
  epochs = [_epoch(dataset) for _ in range(3)]
  for ids, labels, sizes in epochs:
    assert sorted(ids) == list(range(COUNT))
    assert labels == [i % 2 for i in ids]  # each image keeps its own label
    assert sizes == [8] * 5
  orders = [tuple(ids) for ids, _, _ in epochs]
  assert len(set(orders)) == 3 and orders[0] != tuple(range(COUNT))  # a new order every epoch
  # Shuffled over the whole split, not within a window: early batches reach the last examples.
  assert any(i >= COUNT // 2 for i in orders[0][:8])


def test_evaluation_batches_are_the_same_in_memory_as_streamed(global_split):
  streamed = _epoch(_dataset(global_split, training=False, in_memory=None, batch_size=16))
  held = _dataset(global_split, training=False, in_memory=COUNT, batch_size=16)
  assert _epoch(held) == streamed == _epoch(held)  # file order, then again from memory
  assert streamed[0] == list(range(COUNT)) and streamed[2] == [16, 16, 8]


def test_streamed_training_is_shuffled_with_every_example(global_split):
  ids, labels, _ = _epoch(_dataset(global_split, training=True, in_memory=None))
  assert sorted(ids) == list(range(COUNT)) and labels == [i % 2 for i in ids]


@pytest.mark.parametrize('in_memory', [None, COUNT])
def test_input_runs_without_tf_data_autotuning(global_split, in_memory):
  """Autotuning cost whole epochs half the cores (train_input.dataset); augmentation's map
  downstream inherits the setting."""
  from fakedetect.components import train_input
  dataset = _dataset(global_split, training=True, in_memory=in_memory)
  assert dataset.options().autotune.enabled is False
  assert train_input.augmented(dataset, {'flip': True}).options().autotune.enabled is False


def test_split_size_counts_examples_and_their_bytes(global_split, tmp_path):
  from fakedetect.components import train_input
  count, size = train_input.split_size([global_split[1]])
  assert count == COUNT
  image_bytes = 32 * 32 * 3 * 4  # float32, what the parsed example holds
  assert COUNT * image_bytes < size < COUNT * image_bytes * 1.05
  with pytest.raises(FileNotFoundError, match='run the pipeline again'):
    train_input.split_size([str(tmp_path / 'nothing' / '*')])


def test_memory_budget_is_the_setting_capped_at_half_the_memory():
  from fakedetect.components import train_input
  half = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2
  assert train_input.memory_budget(10**6) == 10**6
  assert train_input.memory_budget(0) == 0
  assert train_input.memory_budget(10**18) == half


@pytest.mark.parametrize('cache_bytes, expected', [
    (0, (None, None)),  # 0 always streams
    (10**9, (COUNT, COUNT // 2)),  # both fit
    (COUNT * 12_500, (COUNT, None)),  # training split first; eval gets what is left: too little
    (COUNT * 8_000, (None, COUNT // 2)),  # training split too large; eval fits
])
def test_train_and_eval_hold_the_splits_that_fit_the_budget(global_split, monkeypatch,
                                                            cache_bytes, expected):
  from fakedetect.components import train_input
  from fakedetect.components import views
  from fakedetect.pipeline import config as config_lib
  seen = []
  real = train_input.dataset
  monkeypatch.setattr(train_input, 'dataset',
                      lambda *args, **kwargs: seen.append(kwargs) or real(*args, **kwargs))
  tf_transform_output, train_files, eval_files = global_split
  fn_args = type('FnArgs', (), {'train_files': [train_files], 'eval_files': [eval_files],
                                'data_accessor': _Accessor})
  train_set, eval_set = train_input.train_and_eval(
      fn_args, tf_transform_output, views.View(views.GLOBAL, 32),
      config_lib.TrainConfig(batch_size=8, cache_bytes=cache_bytes))
  assert tuple(kwargs['in_memory'] for kwargs in seen) == expected
  assert [kwargs['training'] for kwargs in seen] == [True, False]
  assert sorted(_epoch(train_set)[0]) == list(range(COUNT))
  assert _epoch(eval_set)[0] == list(range(COUNT // 2))


def test_local_view_in_memory_takes_a_new_random_crop_each_epoch(tmp_path_factory):
  """The native square is held serialized; the crop is drawn after, every epoch anew."""
  from fakedetect.components import views
  split = _split(tmp_path_factory, {'view': 'local', 'crop_size': 8, 'native_size': 32},
                 _located)
  view = views.View(views.LOCAL, 32, crop_size=8, native_size=32)
  dataset = _dataset(split, training=True, in_memory=COUNT, view=view)
  corners = []
  for _ in range(2):
    crops = np.concatenate([x['crops'].numpy() for x, _ in dataset])
    assert crops.shape == (COUNT, 1, 8, 8, 3)
    found = np.rint(crops[:, 0, 0, 0] * 255).astype(int)  # [id, 8 x top, 8 x left] per crop
    assert sorted(found[:, 0]) == list(range(COUNT))
    corners.append([tuple(corner[1:] // 8) for corner in found[np.argsort(found[:, 0])]])
  assert all(0 <= top <= 24 and 0 <= left <= 24 for top, left in corners[0])
  assert corners[0] != corners[1] and len(set(corners[0])) > 5  # random, and anew each epoch


def test_augmented_moves_whole_images_only():
  """Translation shifts the global image; the local view's crops are random windows already."""
  import tensorflow as tf
  from fakedetect.components import train_input
  images = tf.random.uniform([4, 16, 16, 3], seed=1)
  dataset = tf.data.Dataset.from_tensors(({'image': images, 'crops': images[:, None]},
                                          tf.zeros([4])))
  hparams = {'flip': False, 'translate': 4, 'color_jitter': 0.0, 'jpeg_fraction': 0.0,
             'blur_fraction': 0.0}
  out, _ = next(iter(train_input.augmented(dataset, hparams)))
  np.testing.assert_array_equal(out['crops'].numpy(), images[:, None].numpy())
  assert not np.array_equal(out['image'].numpy(), images.numpy())
  assert train_input.augmented(dataset, dict(hparams, translate=0)) is dataset  # nothing to do
