"""`fakedetect predict` and `fakedetect explain` on a real pushed model, with hostile inputs."""

import csv
import io
import json
import os
import struct
import zlib

import numpy as np
import pytest
from click.testing import CliRunner

from tests import serving_helpers as helpers
from tests.conftest import encode_image, random_image

OLD, NEW = (version for version, _ in helpers.VERSIONS)


def _png_declaring(width: int, height: int) -> bytes:
  """A tiny PNG whose (CRC-valid) header declares width x height: a decompression bomb's face."""
  data = bytearray(encode_image(random_image(4, 4, 0), 'PNG'))
  ihdr = bytearray(data[12:29])  # b'IHDR' + 13 bytes of fields
  ihdr[4:12] = struct.pack('>II', width, height)
  data[12:29] = ihdr
  data[29:33] = struct.pack('>I', zlib.crc32(bytes(ihdr)))
  return bytes(data)


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory):
  """Good images of four formats, and every kind of file a user's folder may hold instead."""
  root = tmp_path_factory.mktemp('images')
  good = dict(zip(['a.jpg', 'b.png', 'c.gif', 'd.bmp'], helpers.sample_images()))
  jpeg = encode_image(random_image(64, 64, 5), 'JPEG')
  bad = {
      'empty.jpg': b'',
      'truncated.jpg': jpeg[:len(jpeg) // 3],
      'truncated.png': good['b.png'][:60],
      'notes.txt': b'not an image at all\n',
      'random.bin': np.random.default_rng(0).bytes(2048),
      'bomb.png': _png_declaring(60000, 60000),
      'sub/huge.png': encode_image(random_image(1200, 1000, 6), 'PNG'),  # over the test's limit
  }
  for name, data in {**good, **bad}.items():
    (root / name).parent.mkdir(exist_ok=True)
    (root / name).write_bytes(data)
  (root / '.hidden.jpg').write_bytes(good['a.jpg'])
  return root, good, bad


LIMITS = {'max_bytes': 1_000_000, 'max_pixels': 1_000_000}


def test_expand_paths_walks_folders_and_globs_and_reports_what_names_nothing(image_dir):
  from fakedetect import predict
  root, good, bad = image_dir
  found = predict.expand_paths([str(root), str(root / '*.jpg'), str(root / 'nope.png'),
                                str(root / '*.webp')])
  paths = [os.path.relpath(p, root) for p, error in found if error is None]
  assert sorted(paths[:len(good) + len(bad)]) == sorted(list(good) + list(bad))
  assert '.hidden.jpg' not in paths
  assert paths[len(good) + len(bad):] == ['a.jpg', 'empty.jpg', 'truncated.jpg']
  errors = {os.path.basename(p): e for p, e in found if e}
  assert errors == {'nope.png': 'no such file or folder',
                    '*.webp': 'no file matches this pattern'}


def test_every_hostile_file_gets_a_reason_and_good_ones_match_serving_default(pushed, image_dir):
  import tensorflow as tf
  from fakedetect import predict
  from fakedetect.components import image_checks, scoring, views
  root, good, bad = image_dir
  scorer = scoring.Scorer(pushed['versions'][NEW])
  assert scorer.threshold == pytest.approx(0.63) and scorer.view == views.View('global', 16)
  paths = predict.expand_paths([str(root)])
  rows = {os.path.relpath(r['path'], root): r for r in predict.predict(
      scorer, paths, batch_size=3, limits=image_checks.Limits(**LIMITS))}
  reasons = {name: rows[name]['error'] for name in bad}
  assert reasons['empty.jpg'] == 'empty file'
  assert reasons['sub/huge.png'].startswith('file too large') or 'too many pixels' in reasons[
      'sub/huge.png']
  assert reasons['bomb.png'] == 'too many pixels: 3,600,000,000 > limit 1,000,000'
  for name in ('truncated.jpg', 'truncated.png', 'notes.txt', 'random.bin'):
    assert reasons[name].startswith('not an image TensorFlow can decode'), (name, reasons[name])
    assert '{{' not in reasons[name] and '[Op:' not in reasons[name]
  served = scorer.saved_model.signatures['serving_default'](
      image_bytes=tf.constant(list(good.values())))['fake_probability'].numpy()
  for (name, _), probability in zip(good.items(), served):
    row = rows[name]
    assert row['error'] is None and row['fake_probability'] == pytest.approx(probability, abs=1e-6)
    assert row['label'] == ('fake' if probability >= 0.63 else 'real')
    assert row['uncertain'] == (abs(probability - 0.63) < 0.1)
  # Scores do not depend on which (partly broken) batch an image landed in.
  again = {os.path.relpath(r['path'], root): r['fake_probability'] for r in predict.predict(
      scorer, paths, batch_size=64, limits=image_checks.Limits(**LIMITS))}
  assert all(again[name] == pytest.approx(rows[name]['fake_probability'], abs=1e-6)
             for name in good)


def test_a_batch_the_signature_refuses_is_retried_image_by_image(pushed):
  import tensorflow as tf
  from fakedetect.components import export, scoring
  scorer = scoring.Scorer(pushed['versions'][NEW])
  good = helpers.sample_images()[:3]
  images = [good[0], _png_declaring(60000, 60000), good[1], b'not an image', good[2]]
  with pytest.raises(tf.errors.OpError):
    scorer.score(images)  # the strict call: refused as a whole
  results = scorer.score_safely(images, batch_size=4)
  assert [r.error is None for r in results] == [True, False, True, False, True]
  probabilities, decisions = scorer.score(good, batch_size=2)
  assert probabilities.dtype == np.float32 and decisions.dtype == np.int64
  # is_fake is the signature's own verdict, at the threshold exported with the model.
  assert decisions.tolist() == [int(p >= scorer.threshold) for p in probabilities]
  for result, probability, decision in zip(results[::2], probabilities, decisions):
    assert result.fake_probability == pytest.approx(float(probability), abs=1e-6)
    assert result.is_fake == decision
  # The signature's own reason for the image it names, without TF's graph preamble.
  assert results[1].error == (f'the model refused it: declares more than {export.MAX_IMAGE_PIXELS} '
                              'pixels (width x height in its header), the limit for one image')
  assert results[3].error.startswith('the model refused it: is not an image'), results[3].error
  assert [len(a) for a in scorer.score([])] == [0, 0] and scorer.score_safely([]) == []


def test_a_folder_without_the_serving_contract_is_refused_with_what_to_do(tmp_path):
  import tensorflow as tf
  from fakedetect.components import errors, scoring
  module = tf.Module()
  module.serve = tf.function(lambda: {'x': tf.constant(1.0)}, input_signature=[])
  tf.saved_model.save(module, str(tmp_path),
                      signatures={'serving_default': module.serve.get_concrete_function()})
  with pytest.raises(scoring.ModelError, match='no metadata signature') as raised:
    scoring.Scorer(str(tmp_path))
  assert isinstance(raised.value, errors.UserError) and '--model' in str(raised.value)


def test_predict_cli_writes_csv_and_jsonl_and_exits_0_with_unreadable_files(pushed, image_dir,
                                                                             tmp_path):
  from fakedetect import cli
  root, good, bad = image_dir
  runner = CliRunner()
  args = ['predict', str(root), str(root / 'missing.jpg'), '--model', pushed['model_dir'],
          '--max-bytes', str(LIMITS['max_bytes']), '--batch-size', '4']
  result = runner.invoke(cli.main, args)
  assert result.exit_code == 0, result.output
  rows = list(csv.DictReader(io.StringIO(result.stdout)))
  assert list(rows[0]) == ['path', 'fake_probability', 'label', 'uncertain', 'error']
  assert len(rows) == len(good) + len(bad) + 1
  scored = [r for r in rows if not r['error']]
  assert len(scored) == len(good)
  assert {r['label'] for r in scored} <= {'real', 'fake'}
  assert {r['uncertain'] for r in scored} <= {'true', 'false'}
  assert 'could not be scored' in result.stderr and 'threshold 0.6300' in result.stderr

  out = tmp_path / 'rows.jsonl'
  result = runner.invoke(cli.main, args + ['--format', 'jsonl', '--output', str(out),
                                           '--no-progress'])
  assert result.exit_code == 0, result.output
  lines = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r['path'] for r in lines] == [r['path'] for r in rows]
  assert sum(r['error'] is None for r in lines) == len(good)
  assert all(isinstance(r['fake_probability'], float) for r in lines if r['error'] is None)


def test_predict_uses_the_served_version_and_says_what_to_do_without_a_model(pushed, tmp_path):
  from fakedetect import cli
  from fakedetect.components import scoring
  runner = CliRunner()
  image = tmp_path / 'x.png'
  image.write_bytes(helpers.sample_images()[1])
  missing = runner.invoke(cli.main, ['predict', str(image), '--model', str(tmp_path / 'none')])
  assert missing.exit_code == 1
  assert 'fakedetect run' in missing.stderr and '--model' in missing.stderr
  root = tmp_path / 'serving_model'
  for version, path in pushed['versions'].items():
    helpers.push(path, str(root / 'fakedetect'), version)
  from fakedetect import registry
  registry.rollback(str(root), OLD)
  result = runner.invoke(cli.main, ['predict', str(image), '--model', str(tmp_path)])
  assert result.exit_code == 0 and 'threshold 0.3700' in result.stderr
  assert scoring.Scorer(registry.find_model(str(tmp_path))).threshold == pytest.approx(0.37)


def test_explain_rebuilds_the_classifier_from_the_push_and_matches_serving(pushed):
  import keras
  from fakedetect import explain
  version_dir = pushed['versions'][NEW]
  classifier = explain.load_classifier(version_dir)
  for rebuilt, original in zip(classifier.weights, pushed['classifier'].weights):
    np.testing.assert_array_equal(np.asarray(rebuilt), np.asarray(original))
  image = helpers.sample_images()[0]
  result = explain.explain(version_dir, image, classifier=classifier)
  assert result.layer == explain.last_convolution(classifier).name
  assert isinstance(explain.last_convolution(classifier), keras.layers.Conv2D)
  # Two blocks, one pooling: the last convolution sees 16 / 2 = 8 pixels a side.
  assert result.heatmap.shape == (8, 8)
  assert result.heatmap.min() >= 0 and result.heatmap.max() <= 1
  assert result.label == ('fake' if result.fake_probability >= 0.63 else 'real')
  assert result.target == result.label
  other = explain.explain(version_dir, image, target='fake' if result.label == 'real' else 'real',
                          classifier=classifier)
  assert other.target != result.label and other.fake_probability == result.fake_probability
  with pytest.raises(explain.ExplainError, match='not an image'):
    explain.explain(version_dir, b'not an image', classifier=classifier)


def test_explain_prefers_a_keras_copy_in_assets_extra(pushed, transform_output_dir, tmp_path):
  """An export that also saves `assets.extra/model.keras` (export.KERAS_FILE)."""
  from fakedetect import explain
  from fakedetect.components import export
  classifier = helpers.build_classifier(seed=3)
  export_dir = helpers.export(classifier, transform_output_dir[0], str(tmp_path / 'm'), 0.5)
  classifier.save(os.path.join(export_dir, export.KERAS_FILE))
  with open(os.path.join(export_dir, 'assets.extra', 'fakedetect.json'), 'w') as f:  # no hparams
    json.dump({'threshold': 0.5, 'image_size': helpers.IMAGE_SIZE}, f)
  result = explain.explain(export_dir, helpers.sample_images()[1])
  assert result.heatmap.shape == (8, 8)


def test_explain_cli_writes_an_overlay_png(pushed, tmp_path):
  from PIL import Image
  from fakedetect import cli
  image = tmp_path / 'photo.jpg'
  image.write_bytes(helpers.sample_images()[0])  # 25 x 40
  out = tmp_path / 'cam.png'
  result = CliRunner().invoke(cli.main, ['explain', str(image), '--model', pushed['model_dir'],
                                         '-o', str(out)])
  assert result.exit_code == 0, result.output
  assert 'fake_probability' in result.stdout and str(out) in result.stdout
  with Image.open(out) as drawn:
    assert drawn.format == 'PNG' and drawn.size == (160, 256)  # upscaled: 40 px -> 256 px
    pixels = np.asarray(drawn.convert('RGB'), np.int32)
  assert pixels.std() > 0
  broken = tmp_path / 'broken.jpg'
  broken.write_bytes(b'\xff\xd8\xff truncated')
  result = CliRunner().invoke(cli.main, ['explain', str(broken), '--model', pushed['model_dir']])
  assert result.exit_code == 1 and 'Cannot explain this file' in result.stderr


def test_predict_never_writes_over_an_input_or_an_image_and_writes_whole_files(pushed, tmp_path,
                                                                              monkeypatch):
  from fakedetect import cli
  from fakedetect import predict as predict_lib
  runner = CliRunner()
  photos = {name: tmp_path / name for name in ('a.jpg', 'b.jpg', 'c.jpg')}
  for path, data in zip(photos.values(), helpers.sample_images()):
    path.write_bytes(data)
  originals = {name: path.read_bytes() for name, path in photos.items()}
  model = ['--model', pushed['model_dir']]
  # The input as the output; `predict -o *.jpg`, which the shell expands to -o a.jpg b.jpg c.jpg.
  same = runner.invoke(cli.main, ['predict', str(photos['a.jpg']), '-o', str(photos['a.jpg'])]
                       + model)
  assert same.exit_code == 1 and 'one of the inputs' in same.stderr, same.output
  expanded = runner.invoke(cli.main, ['predict', '-o', *map(str, photos.values())] + model)
  assert expanded.exit_code == 1 and 'existing image' in expanded.stderr, expanded.output
  notes = tmp_path / 'notes.txt'  # an input that is not an image is never written over either
  notes.write_text('my notes\n')
  refused = runner.invoke(cli.main, ['predict', str(notes), '-o', str(notes)] + model)
  assert refused.exit_code == 1 and notes.read_text() == 'my notes\n'
  assert {name: path.read_bytes() for name, path in photos.items()} == originals

  # A missing folder is named, not created, and nothing is scored first.
  missing = tmp_path / 'no' / 'such'
  result = runner.invoke(cli.main, ['predict', str(photos['a.jpg']), '-o',
                                    str(missing / 'rows.csv')] + model)
  assert result.exit_code == 1 and f'the folder {missing} does not exist' in result.stderr
  assert 'Traceback' not in result.output and not missing.parent.exists()
  unwritable = runner.invoke(cli.main, ['predict', str(photos['a.jpg']), '-o', '/proc/rows.csv']
                             + model)
  assert unwritable.exit_code == 1 and '/proc takes no new file' in unwritable.stderr
  assert unwritable.exception is None or isinstance(unwritable.exception, SystemExit)

  # An earlier output (not an image) is replaced, whole; a failure meanwhile leaves it as it was.
  rows = tmp_path / 'rows.csv'
  rows.write_text('an earlier run\n')
  result = runner.invoke(cli.main, ['predict', *map(str, photos.values()), '-o', str(rows)]
                         + model)
  assert result.exit_code == 0, result.output
  assert len(list(csv.DictReader(rows.open()))) == 3
  before = rows.read_text()

  def fails_halfway(items, out, fmt):
    out.write('path,fake_probability\n')
    raise RuntimeError('killed halfway')

  monkeypatch.setattr(predict_lib, 'write_rows', fails_halfway)
  result = runner.invoke(cli.main, ['predict', str(photos['a.jpg']), '-o', str(rows)] + model)
  assert isinstance(result.exception, RuntimeError)
  assert rows.read_text() == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ['a.jpg', 'b.jpg', 'c.jpg', 'notes.txt',
                                                        'rows.csv']  # no temporary file left


def test_predict_gives_a_pipe_one_error_row_instead_of_waiting_for_ever(pushed, tmp_path):
  from fakedetect import predict
  from fakedetect.components import image_checks, scoring
  from tests.test_image_checks import finishes
  (tmp_path / 'a.png').write_bytes(helpers.sample_images()[1])
  fifo = str(tmp_path / 'b.jpg')
  os.mkfifo(fifo)
  scorer = scoring.Scorer(pushed['versions'][NEW])
  paths = predict.expand_paths([str(tmp_path)])  # a folder holding a pipe
  rows = finishes(lambda: list(predict.predict(scorer, paths + predict.expand_paths([fifo]))),
                  fifo)
  assert [os.path.basename(r['path']) for r in rows] == ['a.png', 'b.jpg', 'b.jpg']
  assert rows[0]['error'] is None
  assert rows[1]['error'] == rows[2]['error'] == f'unreadable: {image_checks.NOT_REGULAR}'


def test_predict_writes_every_row_with_a_file_name_that_is_not_utf8(pushed, tmp_path):
  from fakedetect import cli
  images = helpers.sample_images()
  folder = tmp_path / 'photos'
  folder.mkdir()
  odd = os.fsdecode(b'caf\xe9-latin1.png')  # a name from an old Latin-1 camera or archive
  (folder / odd).write_bytes(images[1])
  (folder / 'z.png').write_bytes(images[1])  # sorted after it: its row must be written too
  runner = CliRunner()
  out = tmp_path / 'rows.csv'
  for target in ('-', str(out)):
    result = runner.invoke(cli.main, ['predict', str(folder), '--model', pushed['model_dir'],
                                      '-o', target, '--no-progress'])
    assert result.exit_code == 0, result.output
    text = result.stdout if target == '-' else out.read_text(encoding='utf-8')
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [os.path.basename(r['path']) for r in rows] == ['caf\\xe9-latin1.png', 'z.png']
    assert rows[0]['error'] == '' and rows[0]['fake_probability'] == rows[1]['fake_probability']


def test_explain_never_writes_over_an_input_or_an_image_nor_into_a_missing_folder(pushed,
                                                                                 tmp_path):
  from fakedetect import cli
  from tests.test_image_checks import finishes
  runner = CliRunner()
  image = tmp_path / 'photo.jpg'
  image.write_bytes(helpers.sample_images()[0])
  original = image.read_bytes()
  model = ['--model', pushed['model_dir']]
  result = runner.invoke(cli.main, ['explain', str(image), '-o', str(image)] + model)
  assert result.exit_code == 1 and 'one of the inputs' in result.stderr, result.output
  other = tmp_path / 'holiday.png'  # somebody's picture where the heatmap would go
  other.write_bytes(helpers.sample_images()[1])
  result = runner.invoke(cli.main, ['explain', str(image), '-o', str(other)] + model)
  assert result.exit_code == 1 and 'existing image' in result.stderr, result.output
  assert image.read_bytes() == original and other.read_bytes() == helpers.sample_images()[1]
  # explain's own heatmap may be replaced by a rerun.
  cam = tmp_path / 'cam.png'
  for _ in range(2):
    result = runner.invoke(cli.main, ['explain', str(image), '-o', str(cam)] + model)
    assert result.exit_code == 0, result.output
  missing = tmp_path / 'heatmaps'
  result = runner.invoke(cli.main, ['explain', str(image), '-o', str(missing / 'cam.png')] + model)
  assert result.exit_code == 1 and f'the folder {missing} does not exist' in result.stderr
  assert 'Traceback' not in result.output and not missing.exists()
  # A pipe where the image should be: a message, at once.
  fifo = str(tmp_path / 'pipe.jpg')
  os.mkfifo(fifo)
  result = finishes(lambda: runner.invoke(cli.main, ['explain', fifo, '-o', str(cam)] + model),
                    fifo)
  assert result.exit_code == 1 and 'not a regular file' in result.stderr, result.output
