"""The ArtifactSimulator (issue #17): its GAN, its re-encoding, and the real component in a real
TFX pipeline (ImageExampleGen -> ArtifactSimulator -> Transform, as the DAG wires them), run
twice so its cache is exercised. Nothing is mocked."""

import glob
import io
import os

import numpy as np
from PIL import Image
import pytest

from fakedetect.components import reencode
from fakedetect.pipeline import config as config_lib
from fakedetect.pipeline import names
from fakedetect.pipeline import validation


def _photo(seed, height=48, width=40):
  rng = np.random.default_rng(seed)
  return (rng.uniform(0, 255, [height, width, 3])).astype(np.uint8)


def _encoded(pixels, fmt, **options):
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format=fmt, **options)
  return buffer.getvalue()


# --- re-encoding: the container tells nothing ------------------------------------------------


@pytest.mark.parametrize('quality,subsampling', [(62, 2), (93, 0)])
def test_a_jpeg_fake_has_its_sources_quantization_tables_and_subsampling(quality, subsampling):
  from PIL import JpegImagePlugin  # pylint: disable=g-import-not-at-top
  source = _encoded(_photo(1), 'JPEG', quality=quality, subsampling=subsampling)
  fake = reencode.like(source, _photo(2))
  a, b = Image.open(io.BytesIO(source)), Image.open(io.BytesIO(fake))
  assert (b.format, b.size, b.mode) == ('JPEG', a.size, a.mode)
  assert b.quantization == a.quantization
  assert JpegImagePlugin.get_sampling(b) == JpegImagePlugin.get_sampling(a)


def test_lossless_sources_stay_lossless_in_their_colour_mode():
  pixels = _photo(3)
  grey = _encoded(pixels[..., 0], 'PNG')
  fake = Image.open(io.BytesIO(reencode.like(grey, pixels)))
  assert (fake.format, fake.mode) == ('PNG', 'L')
  rgba = _encoded(np.dstack([pixels, np.full(pixels.shape[:2], 77, np.uint8)]), 'PNG')
  fake = Image.open(io.BytesIO(reencode.like(rgba, pixels)))
  assert (fake.format, fake.mode) == ('PNG', 'RGBA')
  assert np.all(np.asarray(fake)[..., 3] == 77)  # the source's alpha, carried over
  fake = Image.open(io.BytesIO(reencode.like(_encoded(pixels, 'PNG'), pixels)))
  assert np.array_equal(np.asarray(fake), pixels)  # lossless: the pixels exactly


# --- the GAN -------------------------------------------------------------------------------


@pytest.mark.parametrize('decoder', ['transposed', 'nearest'])
def test_the_generator_trains_and_reconstructs_odd_sized_images_whole(decoder):
  from fakedetect.components import autogan  # pylint: disable=g-import-not-at-top
  images = [_photo(i, 36, 44) for i in range(6)]
  simulator = autogan.Simulator(autogan.Shape(decoder=decoder, width=4))
  history = simulator.train(images, epochs=2, crop=64, batch_size=4, steps_per_epoch=3)
  assert set(history) == {'l1', 'adversarial', 'discriminator'}
  assert all(len(v) == 2 and all(np.isfinite(v)) for v in history.values())
  odd = [_photo(9, 37, 50), _photo(10, 37, 50)]
  out = simulator.reconstruct(odd)
  assert [o.shape for o in out] == [(37, 50, 3)] * 2 and out[0].dtype == np.uint8
  assert not np.array_equal(out[0], odd[0])  # rebuilt by the generator, not copied


def test_the_training_crop_fits_the_smallest_image_and_the_down_sampling():
  from fakedetect.components import autogan  # pylint: disable=g-import-not-at-top
  assert autogan.crop_size([_photo(0, 90, 70)], 64, 4) == 64
  assert autogan.crop_size([_photo(0, 90, 70), _photo(1, 33, 50)], 64, 4) == 32
  with pytest.raises(ValueError, match='cannot go through'):
    autogan.crop_size([_photo(0, 3, 50)], 64, 4)
  sizes = [_photo(0, 8, 8)] * 3 + [_photo(0, 8, 9)] + [_photo(0, 8, 8)]
  assert autogan.same_size_runs(sizes, 2) == [[0, 1], [2], [3], [4]]


def test_simulate_settings_are_checked_before_any_work():
  config = config_lib.PipelineConfig()
  for setting, message in (('simulate.mode=both', "simulate.mode='both' is not one of add, only"),
                           ('simulate.decoder=bilinear', 'is not one of transposed, nearest'),
                           ('simulate.images=0', 'simulate.images=0 is outside its range'),
                           ('simulate.epochs=0', 'simulate.epochs=0 is outside its range')):
    assert message in validation.problem(config.with_overrides([setting])), setting
  assert validation.problem(config.with_overrides(['simulate.enabled=true'])) is None


# --- the component, in a real pipeline ---------------------------------------------------------

IMAGES = 9  # fewer than the training split's reals, so exactly this many are simulated


def _examples(uri, split):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fakedetect.components import features  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(os.path.join(uri, f'Split-{split}', '*')))
  spec = features.raw_feature_spec()
  return [{k: v.numpy() for k, v in tf.io.parse_single_example(record, spec).items()}
          for record in tf.data.TFRecordDataset(files, compression_type='GZIP')]


def _labels_of_transformed(uri, split):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fakedetect.components import features  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(os.path.join(uri, f'Split-{split}', '*')))
  spec = {features.TRANSFORMED_LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
  return [int(tf.io.parse_single_example(r, spec)[features.TRANSFORMED_LABEL_KEY])
          for r in tf.data.TFRecordDataset(files, compression_type='GZIP')]


@pytest.fixture(scope='module')
def only_mode(tmp_path_factory):
  """ImageExampleGen -> ArtifactSimulator (mode only) -> ImportSchemaGen -> Transform, the nodes
  and wiring create_components makes, run twice on the demo set with the cache on."""
  from ml_metadata import metadata_store  # pylint: disable=g-import-not-at-top
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  from fakedetect import demo_data  # pylint: disable=g-import-not-at-top
  from fakedetect.pipeline import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('simulator')
  demo_data.generate(str(root / 'data'), per_class=24, broken=False)
  config = config_lib.PipelineConfig(output_dir=str(root / 'out')).with_overrides([
      f'data.data_dir={root / "data"}', 'simulate.enabled=true', 'simulate.mode=only',
      f'simulate.images={IMAGES}', 'simulate.epochs=1', 'image.view=global', 'image.size=32',
      'model.backbone=cnn'])
  wanted = (names.IMAGE_EXAMPLE_GEN, names.ARTIFACT_SIMULATOR, names.IMPORT_SCHEMA_GEN,
            names.TRANSFORM)
  nodes = [n for n in pipeline_lib.create_components(config) if n.id in wanted]
  connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(
      config.metadata_path)
  for _ in range(2):
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name='simulate', pipeline_root=config.pipeline_root, components=nodes,
        enable_cache=True, metadata_connection_config=connection))
  store = metadata_store.MetadataStore(connection)
  types = {t.id: t.name for t in store.get_artifact_types()}
  by_type = {}
  for artifact in store.get_artifacts():
    by_type.setdefault(types[artifact.type_id], []).append(artifact)
  return {'store': store, 'by_type': by_type, 'root': root}


def _uris(only_mode, node, key):
  folder = os.path.join(str(only_mode['root'] / 'out'), names.PIPELINE_ROOT_DIR, node, key)
  return sorted(os.path.join(folder, d) for d in os.listdir(folder))


@pytest.mark.pipeline
def test_the_simulator_emits_the_requested_number_of_decodable_fakes(only_mode):
  from fakedetect.components import features  # pylint: disable=g-import-not-at-top
  [out] = _uris(only_mode, names.ARTIFACT_SIMULATOR, 'simulated_examples')
  [source] = _uris(only_mode, names.IMAGE_EXAMPLE_GEN, 'examples')
  originals = {e[features.HASH_KEY]: e for e in _examples(source, 'train')}
  train = _examples(out, 'train')
  fakes = [e for e in train if e[features.LABEL_KEY] == features.FAKE]
  assert len(fakes) == IMAGES
  for fake in fakes:
    assert fake[features.SOURCE_KEY] == b'simulated/transposed'
    path = fake[features.PATH_KEY].decode()
    real = next(e for e in originals.values() if path == f'simulated/transposed/'
                f'{e[features.PATH_KEY].decode()}')
    image = Image.open(io.BytesIO(fake[features.IMAGE_KEY]))
    image.load()  # decodes whole
    original = Image.open(io.BytesIO(real[features.IMAGE_KEY]))
    assert (image.format, image.size) == (original.format, original.size)
    assert fake[features.FORMAT_KEY] == real[features.FORMAT_KEY]
    assert (fake[features.HEIGHT_KEY], fake[features.WIDTH_KEY]) == image.size[::-1]
  for name in ('pairs.png', 'losses.png', 'simulation.json'):
    [simulation] = _uris(only_mode, names.ARTIFACT_SIMULATOR, 'simulation')
    assert os.path.getsize(os.path.join(simulation, name)) > 0


@pytest.mark.pipeline
def test_nothing_simulated_enters_eval_or_test(only_mode):
  [out] = _uris(only_mode, names.ARTIFACT_SIMULATOR, 'simulated_examples')
  [source] = _uris(only_mode, names.IMAGE_EXAMPLE_GEN, 'examples')
  for split in ('eval', 'test'):
    assert _examples(out, split) == _examples(source, split)
    assert all(not e['source'].startswith(b'simulated/') for e in _examples(out, split))


@pytest.mark.pipeline
def test_in_only_mode_the_trainers_input_holds_no_real_fake(only_mode):
  """The Transform's transformed training split, which the Trainer reads, has as many fakes as
  were simulated, and the Transform read the simulator's output, not the ExampleGen's."""
  from fakedetect.components import features  # pylint: disable=g-import-not-at-top
  [transformed] = _uris(only_mode, names.TRANSFORM, 'transformed_examples')
  labels = _labels_of_transformed(transformed, 'train')
  [source] = _uris(only_mode, names.IMAGE_EXAMPLE_GEN, 'examples')
  reals = sum(e[features.LABEL_KEY] == features.REAL for e in _examples(source, 'train'))
  assert labels.count(features.FAKE) == IMAGES and labels.count(features.REAL) == reals
  # The eval split keeps its real fakes: metrics and the threshold are about real fakes.
  assert _labels_of_transformed(transformed, 'eval').count(features.FAKE) > 0


@pytest.mark.pipeline
def test_the_second_run_takes_the_simulator_from_the_cache(only_mode):
  # One execution's outputs only: the second run reused them (a new run would add artifacts).
  assert len(only_mode['by_type']['fakedetect.Simulation']) == 1
  assert len(_uris(only_mode, names.ARTIFACT_SIMULATOR, 'simulated_examples')) == 1
  [simulation] = only_mode['by_type']['fakedetect.Simulation']
  assert simulation.custom_properties['simulated'].int_value == IMAGES
  assert simulation.custom_properties['simulate_mode'].string_value == 'only'
