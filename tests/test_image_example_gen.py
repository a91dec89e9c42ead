"""ImageExampleGen on real folders of images, good and broken, through its real executor."""

import csv
import hashlib
import io
import json
import os
import struct
import threading
import zlib

import numpy as np
import pytest

SPLIT_RATIOS = {'train': 40, 'eval': 30, 'test': 30}
MAX_PIXELS = 1_000_000


def _write(root, rel_path: str, data: bytes) -> str:
  path = os.path.join(root, rel_path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data)
  return rel_path


def _image(seed: int, fmt: str, height: int = 12, width: int = 16, mode: str = 'RGB') -> bytes:
  """Noise encoded by Pillow, as a user's file would be; distinct seeds give distinct bytes."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  array = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(array).convert(mode).save(buffer, format=fmt)
  return buffer.getvalue()


def _png_declaring(width: int, height: int) -> bytes:
  """A valid little PNG whose IHDR (with a correct CRC) claims width x height."""
  data = bytearray(_image(1, 'PNG', 4, 4))
  data[16:24] = struct.pack('>II', width, height)
  data[29:33] = struct.pack('>I', zlib.crc32(bytes(data[12:29])))
  return bytes(data)


def _png_with_bad_idat_crc() -> bytes:
  """Pillow decodes it (it skips IDAT CRCs), libpng in TensorFlow refuses it."""
  data = bytearray(_image(2, 'PNG'))
  start = data.find(b'IDAT')
  length = struct.unpack('>I', data[start - 4:start])[0]
  data[start + 4 + length] ^= 0xFF
  return bytes(data)


def _mode_corpus():
  """(rel path, bytes, format, (height, width), Pillow mode) of images in every colour layout."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rgb = Image.fromarray(
      np.random.default_rng(9).integers(0, 256, (10, 14, 3), dtype=np.uint8))

  def encode(image, fmt, **args):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **args)
    return buffer.getvalue()

  ramp16 = (np.arange(10 * 14, dtype=np.uint16).reshape(10, 14) * 450).astype(np.uint16)
  return [
      ('real/grey.jpg', encode(rgb.convert('L'), 'JPEG'), 'jpeg', (10, 14), 'L'),
      ('real/grey16.png', encode(Image.fromarray(ramp16), 'PNG'), 'png', (10, 14), 'I;16'),
      ('real/cmyk.jpg', encode(rgb.convert('CMYK'), 'JPEG', quality=95), 'jpeg', (10, 14),
       'CMYK'),
      ('real/one_pixel.png', encode(Image.new('RGB', (1, 1), (200, 30, 60)), 'PNG'), 'png',
       (1, 1), 'RGB'),
      ('Fake/gen_c/rgba.png', encode(rgb.convert('RGBA'), 'PNG'), 'png', (10, 14), 'RGBA'),
      ('Fake/gen_c/palette.gif', encode(rgb.convert('P'), 'GIF'), 'gif', (10, 14), 'P'),
      ('Fake/gen_c/animated.gif', encode(rgb.convert('P'), 'GIF', save_all=True,
                                         append_images=[rgb.rotate(180).convert('P')]),
       'gif', (10, 14), 'P'),
  ]


def _run(data_dir, out_dir, beam_pipeline_args=None, **exec_properties):
  """Executor().Do on real artifacts, as TFX's own executor tests do."""
  from tfx.dsl.components.base import base_beam_executor  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from fakedetect.components.image_example_gen import component, executor  # pylint: disable=g-import-not-at-top
  examples = standard_artifacts.Examples()
  examples.uri = os.path.join(out_dir, 'examples')
  report = component.IngestReport()
  report.uri = os.path.join(out_dir, 'report')
  for artifact in (examples, report):
    os.makedirs(artifact.uri, exist_ok=True)
  properties = {'data_dir': str(data_dir), 'split_ratios': json.dumps(SPLIT_RATIOS),
                'max_pixels': MAX_PIXELS}
  properties.update(exec_properties)
  error = None
  try:
    context = base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=beam_pipeline_args, tmp_dir=os.path.join(out_dir, 'tmp'))
    executor.Executor(context).Do({}, {'examples': [examples], 'report': [report]}, properties)
  except ValueError as e:
    error = e
  report_path = os.path.join(report.uri, 'report.json')
  result = json.load(open(report_path)) if os.path.exists(report_path) else None
  return examples, report, result, error


def _read_examples(examples):
  """{split: [parsed example dict]}, parsed with the project's raw feature spec."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfx.types import artifact_utils  # pylint: disable=g-import-not-at-top
  from fakedetect.components import features  # pylint: disable=g-import-not-at-top
  spec = features.raw_feature_spec()
  out = {}
  for split in artifact_utils.decode_split_names(examples.split_names):
    files = tf.io.gfile.glob(os.path.join(examples.uri, f'Split-{split}', 'data_tfrecord-*.gz'))
    assert files, split
    out[split] = []
    for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
      keys = set(tf.train.Example.FromString(record.numpy()).features.feature)
      assert keys == set(spec)
      parsed = tf.io.parse_single_example(record, spec)
      out[split].append({k: v.numpy() for k, v in parsed.items()})
  return out


def _expected_split(content: bytes, ratios) -> str:
  bucket = int(hashlib.sha256(content).hexdigest(), 16) % sum(ratios.values())
  bound = 0
  for name, weight in ratios.items():
    bound += weight
    if bucket < bound:
      return name
  raise AssertionError


# --- the plain layout, with every kind of broken file --------------------------------------------

@pytest.fixture(scope='module')
def plain(tmp_path_factory):
  root = tmp_path_factory.mktemp('plain')
  data = root / 'data'
  good = {}  # rel path -> (label, source, format, height, width)
  for i in range(12):
    fmt = 'JPEG' if i % 2 else 'PNG'
    sub = 'phone/' if i >= 9 else ''
    deep = 'deep/' if i == 11 else ''
    rel = _write(data, f'real/{sub}{deep}r{i}.{fmt.lower()}', _image(i, fmt, 10 + i, 16))
    good[rel] = (0, 'phone' if sub else 'real', fmt.lower(), 10 + i, 16)
  for i in range(12):
    gen = 'gen_a' if i % 2 else 'gen_b'
    fmt = 'PNG' if i % 3 else 'JPEG'
    rel = _write(data, f'Fake/{gen}/f{i}.{fmt.lower()}', _image(100 + i, fmt, 20, 8 + i))
    good[rel] = (1, gen, fmt.lower(), 20, 8 + i)
  # A JPEG named .png: format comes from the content.
  good[_write(data, 'Fake/gen_a/misnamed.png', _image(200, 'JPEG'))] = (1, 'gen_a', 'jpeg', 12, 16)
  good[_write(data, 'Fake/direct.png', _image(201, 'PNG'))] = (1, 'fake', 'png', 12, 16)
  # Byte-identical files: within fakes, and one real image copied among the fakes.
  dup = _image(300, 'PNG')
  good[_write(data, 'Fake/gen_a/dup.png', dup)] = (1, 'gen_a', 'png', 12, 16)
  good[_write(data, 'Fake/gen_b/dup_copy.png', dup)] = (1, 'gen_b', 'png', 12, 16)
  good[_write(data, 'Fake/gen_b/copy_of_real.png', (data / 'real/r0.png').read_bytes())] = (
      1, 'gen_b', 'png', 10, 16)

  # Modes that must decode correctly: greyscale, 16-bit, RGBA, palette, CMYK, animated, 1x1.
  modes = {}  # rel path -> Pillow mode recorded in the report
  for rel, content, fmt, size, mode in _mode_corpus():
    good[_write(data, rel, content)] = (1 if rel.startswith('Fake/') else 0,
                                        rel.split('/')[1] if rel.count('/') > 1 else 'real',
                                        fmt, size[0], size[1])
    modes[rel] = mode

  jpeg = _image(400, 'JPEG', 64, 64)
  png = _image(401, 'PNG', 64, 64)
  broken = {
      _write(data, 'real/empty.jpg', b''): 'empty',
      _write(data, 'Fake/gen_a/notes.jpg', b'these are my notes, not a picture\n'): 'not_image',
      _write(data, 'real/truncated.jpg', jpeg[:len(jpeg) // 2]): 'truncated',
      _write(data, 'real/truncated.png', png[:len(png) // 2]): 'truncated',
      _write(data, 'Fake/gen_b/huge.png', _png_declaring(30000, 30000)): 'too_many_pixels',
      _write(data, 'Fake/gen_b/big.png', _png_declaring(1200, 1000)): 'too_many_pixels',
      _write(data, 'real/bad_crc.png', _png_with_bad_idat_crc()): 'corrupt',
      _write(data, 'real/mono.bmp', _image(5, 'BMP', mode='1')): 'unsupported_mode',
      _write(data, 'real/scan.tiff', _image(6, 'TIFF')): 'unsupported_format',
      _write(data, 'Fake/gen_a/g.webp', _image(7, 'WEBP')): 'unsupported_format',
      _write(data, 'real/.DS_Store', b'\x00\x00\x00\x01Bud1'): 'not_image',
      _write(data, 'real/._r0.png', b'\x00\x05\x16\x07AppleDouble'): 'not_image',
      _write(data, 'README.txt', b'about this dataset'): 'unlabelled',
  }
  os.symlink('loop.jpg', data / 'real' / 'loop.jpg')
  broken['real/loop.jpg'] = 'unreadable'
  os.symlink('missing.png', data / 'Fake' / 'dangling.png')
  broken['Fake/dangling.png'] = 'unreadable'
  # A link leaving the data folder is not followed (tests/test_ingest_trust.py reads this one
  # with follow_outside_links, where it is a real I/O error, even for root).
  os.symlink('/proc/self/mem', data / 'real' / 'mem.png')
  broken['real/mem.png'] = 'outside_data_folder'
  os.mkfifo(data / 'real' / 'pipe.jpg')
  broken['real/pipe.jpg'] = 'unreadable'
  with open(os.fsencode(data) + b'/real/caf\xe9.png', 'wb') as f:  # a Latin-1 name, not UTF-8
    f.write(_image(8, 'PNG'))
  broken['real/caf\\xe9.png'] = 'unreadable'

  examples, report, result, error = _run(data, root / 'out')
  assert error is None, error
  return {'data': data, 'good': good, 'broken': broken, 'modes': modes, 'examples': examples,
          'report': report, 'result': result, 'by_split': _read_examples(examples)}


def test_writes_splits_as_tfx_example_gens_do(plain):
  from tfx.types import artifact_utils  # pylint: disable=g-import-not-at-top
  examples = plain['examples']
  assert artifact_utils.decode_split_names(examples.split_names) == ['train', 'eval', 'test']
  assert examples.get_string_custom_property('payload_format') == 'FORMAT_TF_EXAMPLE'
  assert examples.get_string_custom_property('file_format') == 'tfrecords_gzip'
  assert examples.get_int_custom_property('span') == 0
  assert sorted(os.listdir(examples.uri)) == ['Split-eval', 'Split-test', 'Split-train']
  for split in ('train', 'eval', 'test'):
    assert plain['by_split'][split], f'{split} is empty'


def test_every_good_file_becomes_one_faithful_example(plain):
  from fakedetect.components import features  # pylint: disable=g-import-not-at-top
  data, good = plain['data'], plain['good']
  seen = []
  for split, rows in plain['by_split'].items():
    for row in rows:
      path = row[features.PATH_KEY].decode()
      seen.append(path)
      content = (data / path).read_bytes()
      label, source, fmt, height, width = good[path]
      assert row[features.IMAGE_KEY] == content, path
      assert row[features.HASH_KEY].decode() == hashlib.sha256(content).hexdigest()
      assert row[features.LABEL_KEY] == label, path
      assert row[features.SOURCE_KEY].decode() == source, path
      assert row[features.FORMAT_KEY].decode() == fmt, path
      assert (row[features.HEIGHT_KEY], row[features.WIDTH_KEY]) == (height, width), path
      assert row[features.SIZE_BUCKET_KEY].decode() == features.size_bucket(height, width)
      assert split == _expected_split(content, SPLIT_RATIOS), path
  assert sorted(seen) == sorted(good)


def test_every_file_is_accounted_for_with_its_reason(plain):
  result, report = plain['result'], plain['report']
  on_disk = sum(len(files) for _, _, files in os.walk(plain['data']))
  assert result['files_found'] == on_disk == len(plain['good']) + len(plain['broken'])
  assert result['ingested'] == len(plain['good'])
  assert result['ingested'] + len(result['quarantined']) == result['files_found']
  assert {q['path']: q['reason'] for q in result['quarantined']} == plain['broken']
  assert all(q['detail'] for q in result['quarantined'])
  details = {q['path']: q['detail'] for q in result['quarantined']}
  assert 'TensorFlow could not decode' in details['real/bad_crc.png']
  # Both before any pixel is decoded: ours at max_pixels (with the declared size), Pillow's own
  # past twice its process-wide guard (with the declared pixel count).
  assert details['Fake/gen_b/big.png'] == (
      'too many pixels: 1200x1000 = 1,200,000 > limit 1,000,000')
  assert details['Fake/gen_b/huge.png'] == 'too many pixels: 900,000,000 > limit 1,000,000'
  assert 'loop' in details['real/loop.jpg']
  assert 'not a regular file' in details['real/pipe.jpg']
  assert 'hidden' in details['real/.DS_Store'] and 'hidden' in details['real/._r0.png']
  assert 'not valid UTF-8' in details['real/caf\\xe9.png']
  for key in ('files_found', 'ingested'):
    assert report.get_int_custom_property(key) == result[key]
  assert report.get_int_custom_property('quarantined') == len(plain['broken'])
  assert result['layout'] == 'plain'
  assert result['data_dir'] == str(plain['data'])


def test_report_counts_sources_and_formats_match_the_examples(plain):
  from fakedetect.components import features  # pylint: disable=g-import-not-at-top
  counts, sources, formats = {}, {'real': {}, 'fake': {}}, {'real': {}, 'fake': {}}
  for split, rows in plain['by_split'].items():
    counts[split] = {'real': 0, 'fake': 0}
    for row in rows:
      name = features.LABEL_NAMES[row[features.LABEL_KEY]]
      counts[split][name] += 1
      src, fmt = row[features.SOURCE_KEY].decode(), row[features.FORMAT_KEY].decode()
      sources[name][src] = sources[name].get(src, 0) + 1
      formats[name][fmt] = formats[name].get(fmt, 0) + 1
  result = plain['result']
  assert result['counts'] == counts
  assert result['sources'] == sources
  assert result['sources']['real'] == {'real': 13, 'phone': 3}  # 9 + 4 of _mode_corpus
  assert result['formats'] == formats


def test_identical_files_share_a_split_and_are_reported(plain):
  from fakedetect.components import features  # pylint: disable=g-import-not-at-top
  split_of = {row[features.PATH_KEY].decode(): split
              for split, rows in plain['by_split'].items() for row in rows}
  groups = {tuple(g['paths']): g for g in plain['result']['duplicates']}
  assert set(groups) == {('Fake/gen_a/dup.png', 'Fake/gen_b/dup_copy.png'),
                         ('Fake/gen_b/copy_of_real.png', 'real/r0.png')}
  for paths, group in groups.items():
    assert len({split_of[p] for p in paths}) == 1
    assert group['crosses_splits'] is False
    content = (plain['data'] / paths[0]).read_bytes()
    assert group['content_hash'] == hashlib.sha256(content).hexdigest()
  assert groups[('Fake/gen_b/copy_of_real.png', 'real/r0.png')]['crosses_classes'] is True
  assert groups[('Fake/gen_a/dup.png', 'Fake/gen_b/dup_copy.png')]['crosses_classes'] is False


def test_every_colour_layout_decodes_like_pillow_sees_it(plain):
  """Grey, 16-bit, CMYK, RGBA, palette and animated images: the pipeline's own decode of the
  stored bytes gives the picture Pillow sees (first frame, alpha dropped), within JPEG loss."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from fakedetect.components import views  # pylint: disable=g-import-not-at-top
  from fakedetect.components import features  # pylint: disable=g-import-not-at-top
  rows = {row[features.PATH_KEY].decode(): row
          for rows in plain['by_split'].values() for row in rows}
  for rel, mode in plain['modes'].items():
    stored = rows[rel][features.IMAGE_KEY]
    assert stored == (plain['data'] / rel).read_bytes(), rel
    image = Image.open(io.BytesIO(stored))
    assert image.mode == mode
    if mode == 'I;16':  # Pillow's RGB conversion clips 16-bit values; scale them ourselves
      expected = np.repeat((np.asarray(image, np.float64) / 65535)[..., None], 3, axis=2)
    else:
      expected = np.asarray(image.convert('RGB'), np.float64) / 255
    height, width = expected.shape[:2]
    decoded = views.decode_and_resize(tf.constant([stored]), 1)  # shape check only
    assert decoded.shape == (1, 1, 1, 3)
    pixels = tf.io.decode_image(stored, channels=3, dtype=tf.float32,
                                expand_animations=False).numpy()
    assert pixels.shape == (height, width, 3), rel
    tolerance = 0.05 if rel.endswith('.jpg') else 0.002
    assert np.abs(pixels - expected).mean() < tolerance, rel
  modes = plain['result']['modes']
  assert modes['real']['CMYK'] == 1 and modes['real']['I;16'] == 1 and modes['real']['L'] == 1
  assert modes['fake']['RGBA'] == 1 and modes['fake']['P'] == 2


def test_report_profiles_each_class(plain):
  from fakedetect.components import features  # pylint: disable=g-import-not-at-top
  result = plain['result']
  for name in features.LABEL_NAMES:
    profile = result['profile'][name]
    rows = [row for rows in plain['by_split'].values() for row in rows
            if features.LABEL_NAMES[row[features.LABEL_KEY]] == name]
    assert profile['images'] == len(rows)
    for key in ('format_shares', 'mode_shares', 'size_bucket_shares'):
      assert abs(sum(profile[key].values()) - 1) < 1e-3, key
    jpeg = sum(row[features.FORMAT_KEY] == b'jpeg' for row in rows) / len(rows)
    assert profile['format_shares']['jpeg'] == round(jpeg, 4)
    widths = sorted(int(row[features.WIDTH_KEY]) for row in rows)
    assert profile['width']['min'] == widths[0] and profile['width']['max'] == widths[-1]
    assert profile['width']['median'] == float(np.median(widths))
  assert isinstance(result['warnings'], list)
  assert any('carry both labels' in w for w in result['warnings'])  # copy_of_real.png
  assert any(w.startswith('1 group(s) of byte-identical files (2 files) stay within one split')
             for w in result['warnings'])  # dup.png and dup_copy.png
  with open(os.path.join(plain['report'].uri, 'quarantine.csv'), newline='') as f:
    rows = list(csv.DictReader(f))
  assert {r['path']: r['reason'] for r in rows} == plain['broken']
  assert plain['report'].get_int_custom_property('warnings') == len(result['warnings'])


def test_bias_warnings_name_what_differs():
  from fakedetect.components.image_example_gen import profile as profile_lib  # pylint: disable=g-import-not-at-top

  def profile(formats, modes, widths, heights, buckets):
    return profile_lib.class_profile({'formats': formats, 'modes': modes, 'widths': widths,
                                      'heights': heights, 'size_buckets': buckets,
                                      'sources': {}})

  same = profile({'jpeg': 5}, {'RGB': 5}, {32: 5}, {32: 5}, {'small': 5})
  assert profile_lib.bias_warnings({'real': same, 'fake': same}) == []
  fake = profile({'png': 4, 'jpeg': 1}, {'RGBA': 5}, {512: 3, 256: 2}, {512: 5}, {'large': 5})
  real_warning, mode_warning, size_warning = profile_lib.bias_warnings({'real': same,
                                                                        'fake': fake})
  assert real_warning == ('real is 100% JPEG but fake is 80% PNG, 20% JPEG: a model can learn '
                          'the container (file format and its compression) instead of the '
                          'content.')
  assert mode_warning.startswith('real is 100% RGB but fake is 100% RGBA')
  assert size_warning.startswith('real images have a median size of 32x32 (100% small) but '
                                 'fake 512x512 (100% large)')
  assert profile_lib.class_profile({'formats': {'png': 4}, 'modes': {'RGB': 4},
                                    'widths': {1: 1, 2: 1, 10: 2}, 'heights': {5: 4},
                                    'size_buckets': {'small': 4}, 'sources': {}})['width'] == {
                                        'min': 1, 'median': 6.0, 'max': 10}


def test_examples_are_serialized_as_tensorflow_serializes_them():
  """The workers build examples without TensorFlow: they must parse to the same message."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fakedetect.components import features  # pylint: disable=g-import-not-at-top
  from fakedetect.components.image_example_gen import encoding  # pylint: disable=g-import-not-at-top
  images = [(bytes(range(256)) * 3, {'label': 1, 'source': 'caf\u00e9 \u732b', 'format': 'png',
                                     'height': 2**40, 'width': -7, 'hash': 'ab' * 32,
                                     'path': 'fake/caf\u00e9 \u732b.png'}),
            (b'', {'label': 0, 'source': '', 'format': 'jpeg', 'height': 0, 'width': 300,
                   'hash': '', 'path': 'real/empty'})]
  for (data, meta), serialized in zip(images, encoding.encode_examples(images)):
    expected = tf.train.Example()
    for key, value in {features.IMAGE_KEY: data, features.LABEL_KEY: meta['label'],
                       features.SOURCE_KEY: meta['source'], features.FORMAT_KEY: meta['format'],
                       features.HEIGHT_KEY: meta['height'], features.WIDTH_KEY: meta['width'],
                       features.HASH_KEY: meta['hash'], features.PATH_KEY: meta['path'],
                       features.SIZE_BUCKET_KEY: features.size_bucket(meta['height'],
                                                                      meta['width'])}.items():
      feature = expected.features.feature[key]
      if isinstance(value, int):
        feature.int64_list.value.append(value)
      else:
        feature.bytes_list.value.append(value.encode() if isinstance(value, str) else value)
    assert tf.train.Example.FromString(serialized) == expected
  assert encoding.encode_examples([]) == []


def test_runner_choice():
  """Worker processes for a large folder unless the user chose a mode; TensorFlow's decode in
  the launcher on the direct runner, in the workers on a distributed one."""
  from fakedetect.components.image_example_gen import executor  # pylint: disable=g-import-not-at-top
  many = executor.MULTI_PROCESSING_MIN_FILES
  args, in_workers = executor.beam_args([], many)
  assert not in_workers
  if (os.cpu_count() or 1) > 1:
    assert args == ['--direct_running_mode=multi_processing', '--direct_num_workers=0']
  assert executor.beam_args([], many - 1) == ([], False)
  assert executor.beam_args(['--direct_num_workers=3'], many)[0] == [
      '--direct_num_workers=3', '--direct_running_mode=multi_processing']
  for chosen in (['--direct_running_mode=multi_processing', '--direct_num_workers=2'],
                 ['--runner=DirectRunner', '--direct_running_mode=in_memory',
                  '--direct_num_workers=1']):
    assert executor.beam_args(chosen, many) == (chosen, False)
  dataflow = ['--runner=DataflowRunner', '--project=p']
  assert executor.beam_args(dataflow, many) == (dataflow, True)


@pytest.fixture(scope='module')
def undecodable(tmp_path_factory):
  """Good images, and files whose header Pillow reads but whose pixels TensorFlow cannot decode."""
  data = tmp_path_factory.mktemp('undecodable') / 'data'
  for i in range(4):
    _write(data, f'real/{i}.png', _image(40 + i, 'PNG'))
    _write(data, f'fake/{i}.jpg', _image(50 + i, 'JPEG'))
  jpeg = _image(60, 'JPEG', 64, 64)
  _write(data, 'real/truncated.jpg', jpeg[:len(jpeg) // 2])
  _write(data, 'fake/bad_crc.png', _png_with_bad_idat_crc())
  _write(data, 'real/bad_crc_copy.png', _png_with_bad_idat_crc())  # a duplicate group, dropped
  return data


@pytest.mark.parametrize('where', ['launcher', 'workers', 'multi_processing', 'fixed_shards'])
def test_decode_check_is_the_same_wherever_it_runs(undecodable, tmp_path, monkeypatch, where):
  """The launcher's batched check beside the pipeline (direct runner), the workers' own
  (distributed runners), two worker processes (the multi-processing runner profile's flags) and
  fixed shards (num_shards: examples grouped by shard before they are written) agree."""
  from fakedetect.components.image_example_gen import executor  # pylint: disable=g-import-not-at-top
  beam_args, num_shards = None, None
  if where == 'workers':
    monkeypatch.setattr(executor, 'beam_args', lambda args, num_files: (args, True))
  elif where == 'multi_processing':
    beam_args = ['--direct_running_mode=multi_processing', '--direct_num_workers=2']
  elif where == 'fixed_shards':
    num_shards = 2
  from fakedetect.components.image_example_gen import verify  # pylint: disable=g-import-not-at-top
  checked_in = []  # the launcher's threads that ran the batched check
  check = verify.undecodable
  monkeypatch.setattr(verify, 'undecodable', lambda *a: (
      checked_in.append(threading.current_thread().name), check(*a))[1])
  examples, _, result, error = _run(undecodable, tmp_path, beam_args,
                                    split_ratios=json.dumps({'train': 1}), num_shards=num_shards)
  assert error is None, error
  assert checked_in == {'launcher': ['DecodeCheck'], 'multi_processing': ['DecodeCheck'],
                        'fixed_shards': ['DecodeCheck'], 'workers': []}[where]
  assert {q['path']: q['reason'] for q in result['quarantined']} == {
      'real/truncated.jpg': 'truncated', 'fake/bad_crc.png': 'corrupt',
      'real/bad_crc_copy.png': 'corrupt'}
  assert all('TensorFlow could not decode' in q['detail']
             for q in result['quarantined'] if 'bad_crc' in q['path'])
  assert result['counts'] == {'train': {'real': 4, 'fake': 4}}
  assert result['profile']['real']['format_shares'] == {'png': 1.0}
  assert result['formats'] == {'real': {'png': 4}, 'fake': {'jpeg': 4}}
  assert result['duplicates'] == []
  assert len(_read_examples(examples)['train']) == 8


def test_permission_denied_is_quarantined_as_unreadable(tmp_path):
  """chmod 000 stops a non-root reader only: as root, the read runs in an unprivileged child."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  data = tempfile.mkdtemp(prefix='unreadable-')  # outside pytest's root-only tmp folder
  try:
    os.chmod(data, 0o755)
    _write(data, 'real/secret.png', _image(1, 'PNG'))
    _write(data, 'fake/open.png', _image(2, 'PNG'))
    os.chmod(os.path.join(data, 'real', 'secret.png'), 0)
    script = (
        'import json, sys\n'
        'from fakedetect.components.image_checks import ImageRejected\n'
        'from fakedetect.components.image_example_gen import layouts, reading, splits\n'
        'layout = layouts.detect(sys.argv[1])\n'
        '_, plan = splits.plan_splits({"train": 1}, layout.splits)\n'
        'reader = reading.ImageReader(sys.argv[1], layout, plan, 1000)\n'
        'out = {}\n'
        'for entry in layout.list_files(sys.argv[1]):\n'
        '  try:\n'
        '    out[entry[0]] = reader.read(entry)[0]\n'
        '  except ImageRejected as r:\n'
        '    out[entry[0]] = [r.reason, r.detail]\n'
        'print(json.dumps(out))\n')
    command = [sys.executable, '-c', script, data]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONWARNINGS='ignore', PYTHONPATH=repo)
    if os.geteuid() == 0:
      setpriv = shutil.which('setpriv')
      if not setpriv:
        pytest.skip('running as root (chmod 000 does not stop root) and setpriv is missing')
      command = [setpriv, '--reuid=65534', '--regid=65534', '--clear-groups'] + command
      probe = subprocess.run(command[:5] + ['-c', 'import fakedetect.components.features'],
                             env=env, cwd=data, capture_output=True, check=False)
      if probe.returncode:
        pytest.skip('running as root, and an unprivileged user cannot run this interpreter or '
                    f'read the repository ({probe.stderr.decode()[-200:].strip()})')
    done = subprocess.run(command, env=env, capture_output=True, check=True, cwd=data)
    out = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert out['fake/open.png'] == 'train'
    assert out['real/secret.png'] == ['unreadable', 'PermissionError: Permission denied']
  finally:
    shutil.rmtree(data, ignore_errors=True)


# --- layouts ------------------------------------------------------------------------------------

def _touch_tree(root, rel_paths):
  for rel in rel_paths:
    _write(root, rel, b'x')
  return str(root)


def test_detects_plain_layout_case_insensitively(tmp_path):
  from fakedetect.components.image_example_gen import layouts  # pylint: disable=g-import-not-at-top
  data = _touch_tree(tmp_path, ['REAL/a.png', 'Fake/SDXL/b.png', 'Fake/c.png'])
  layout = layouts.detect(data)
  assert layout.name == 'plain' and layout.splits == ()
  assert layout.parse('REAL/a.png') == layouts.Labelled(0, 'real')
  assert layout.parse('REAL/cam/x/a.png') == layouts.Labelled(0, 'cam')
  assert layout.parse('Fake/SDXL/b.png') == layouts.Labelled(1, 'SDXL')
  assert layout.parse('Fake/c.png') == layouts.Labelled(1, 'fake')
  assert layout.parse('notes.txt') is None and layout.parse('other/a.png') is None


def test_detects_cifake_layout_case_insensitively(tmp_path):
  from fakedetect.components.image_example_gen import layouts  # pylint: disable=g-import-not-at-top
  data = _touch_tree(tmp_path, ['Train/REAL/1.jpg', 'Train/FAKE/2.jpg',
                                'test/Real/3.jpg', 'test/fake/4.jpg'])
  layout = layouts.detect(data)
  assert layout.name == 'cifake'
  assert layout.parse('Train/REAL/1.jpg') == layouts.Labelled(0, 'real', 'train')
  assert layout.parse('test/fake/4.jpg') == layouts.Labelled(1, 'fake', 'test')
  assert layout.parse('Train/other/5.jpg') is None and layout.parse('test/6.jpg') is None


def test_two_layouts_at_once_is_an_error(tmp_path):
  from fakedetect.components.image_example_gen import layouts  # pylint: disable=g-import-not-at-top
  data = _touch_tree(tmp_path, ['real/a', 'fake/b', 'train/REAL/c', 'train/FAKE/d'])
  with pytest.raises(ValueError, match='matches several layouts'):
    layouts.detect(data)


@pytest.mark.parametrize('tree', [['cats/a.png', 'dogs/b.png'],
                                  ['real/a.png'],
                                  ['train/REAL/a.png', 'test/FAKE/b.png']])
def test_unrecognised_layout_names_what_is_understood_and_found(tmp_path, tree):
  from fakedetect.components.image_example_gen import layouts  # pylint: disable=g-import-not-at-top
  data = _touch_tree(tmp_path, tree)
  with pytest.raises(ValueError) as info:
    layouts.detect(data)
  message = str(info.value)
  assert 'Unrecognised layout' in message
  assert 'plain: real/ and fake/' in message and 'cifake: train/ and/or test/' in message
  for top in {rel.split('/')[0] for rel in tree}:
    assert f'{top}/' in message


def test_split_plans():
  from fakedetect.components.image_example_gen import splits  # pylint: disable=g-import-not-at-top
  ratios = {'train': 70, 'eval': 15, 'test': 15}
  assert splits.plan_splits(ratios, ()) == (['train', 'eval', 'test'],
                                            {None: list(ratios.items())})
  names, plan = splits.plan_splits(ratios, ('train', 'test'))
  assert names == ['train', 'eval', 'test']
  assert plan == {'train': [('train', 70), ('eval', 15)], 'test': [('test', 1)]}
  for bad in ('{"train": 0}', '{}', '{"a,b": 5}', '[70, 30]'):
    with pytest.raises(ValueError):
      splits.parse_split_ratios(bad)


def test_remote_listing_matches_the_local_walk(tmp_path):
  from fakedetect.components.image_example_gen import folders  # pylint: disable=g-import-not-at-top
  data = _touch_tree(tmp_path, ['real/a.png', 'real/x/y/b.png', 'fake/g/c.png', 'top.txt'])
  assert sorted(folders._list_remote(data)) == folders.list_files(data)  # pylint: disable=protected-access
  assert [rel for rel, _ in folders.list_files(data)] == [
      'fake/g/c.png', 'real/a.png', 'real/x/y/b.png', 'top.txt']


def test_folder_link_loops_are_listed_not_followed(tmp_path):
  from fakedetect.components.image_example_gen import folders  # pylint: disable=g-import-not-at-top
  data = _touch_tree(tmp_path, ['real/a.png', 'fake/b.png'])
  os.symlink('..', tmp_path / 'real' / 'up')
  entries = dict(folders.list_files(data))
  assert entries['real/a.png'] is None and entries['fake/b.png'] is None
  assert 'already read' in entries['real/up']
  assert len(entries) == 3


# --- end to end: CIFAKE through a real TFX pipeline, and the failures -----------------------------

def test_cifake_pipeline_keeps_test_and_carves_eval_from_train(tmp_path):
  """LocalDagRunner: the driver, the executor and ML Metadata publishing, as in production."""
  from ml_metadata import metadata_store  # pylint: disable=g-import-not-at-top
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  from fakedetect.components import features  # pylint: disable=g-import-not-at-top
  from fakedetect.components.image_example_gen import ImageExampleGen  # pylint: disable=g-import-not-at-top
  data = tmp_path / 'cifake'
  for i in range(20):
    _write(data, f'train/REAL/{i}.png', _image(500 + i, 'PNG', 8, 8))
    _write(data, f'train/FAKE/{i}.jpg', _image(600 + i, 'JPEG', 8, 8))
  for i in range(3):
    _write(data, f'test/REAL/{i}.png', _image(700 + i, 'PNG', 8, 8))
    _write(data, f'test/FAKE/{i}.jpg', _image(800 + i, 'JPEG', 8, 8))
  _write(data, 'test/REAL/leak.png', (data / 'train/REAL/0.png').read_bytes())

  db = str(tmp_path / 'mlmd.sqlite')
  pipeline = tfx.dsl.Pipeline(
      pipeline_name='ingest', pipeline_root=str(tmp_path / 'root'),
      components=[ImageExampleGen(data_dir=str(data), max_pixels=MAX_PIXELS)],
      metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(db))
  tfx.orchestration.LocalDagRunner().run(pipeline)

  store = metadata_store.MetadataStore(
      tfx.orchestration.metadata.sqlite_metadata_connection_config(db))
  [examples_proto] = store.get_artifacts_by_type('Examples')
  [report_proto] = store.get_artifacts_by_type('fakedetect.IngestReport')
  props = examples_proto.custom_properties
  assert props['span'].int_value == 0 and 'version' not in props
  assert props['input_fingerprint'].string_value.startswith(f'data_dir:{data},num_files:47,')
  assert props['payload_format'].string_value == 'FORMAT_TF_EXAMPLE'
  assert report_proto.custom_properties['ingested'].int_value == 47
  assert report_proto.custom_properties['quarantined'].int_value == 0

  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  examples = standard_artifacts.Examples()
  examples.set_mlmd_artifact(examples_proto)
  by_split = _read_examples(examples)
  assert sorted(by_split) == ['eval', 'test', 'train']
  for split, rows in by_split.items():
    for row in rows:
      path = row[features.PATH_KEY].decode()
      if path.startswith('test/') or path == 'train/REAL/0.png':
        # The copy of test/REAL/leak.png follows it: a duplicate group stays in one split.
        assert split == 'test', path
      else:
        content = (data / path).read_bytes()
        assert split == _expected_split(content, {'train': 70, 'eval': 15}), path
  assert len(by_split['test']) == 8 and by_split['eval']
  result = json.load(open(os.path.join(report_proto.uri, 'report.json')))
  assert result['layout'] == 'cifake'
  [group] = result['duplicates']
  assert group['paths'] == ['test/REAL/leak.png', 'train/REAL/0.png']
  assert group['crosses_splits'] is False and group['kept_in_one_split'] is True
  assert group['splits'] == ['test']
  assert any('kept in its most held-out split' in w for w in result['warnings'])
  assert any('real is 100% PNG but fake is 100% JPEG' in w for w in result['warnings'])
  assert result['split_plan']['eval'].startswith("carved out of the layout's train")


def test_driver_fingerprint_changes_with_the_images(tmp_path):
  from fakedetect.components.image_example_gen import component  # pylint: disable=g-import-not-at-top
  data = _touch_tree(tmp_path, ['real/a.png', 'fake/b.png'])
  driver = component.Driver(None)

  def resolve():
    return driver.resolve_exec_properties({'data_dir': data}, None, None)['input_fingerprint']

  before = resolve()
  assert before == resolve()
  _write(tmp_path, 'fake/c.png', b'more')
  assert resolve() != before


def test_a_class_without_usable_images_stops_the_run(tmp_path):
  data = tmp_path / 'data'
  for i in range(4):
    _write(data, f'real/{i}.png', _image(i, 'PNG'))
  _write(data, 'fake/gen/broken.jpg', b'')
  _write(data, 'fake/gen/text.png', b'hello')
  _, report, result, error = _run(data, tmp_path / 'out')
  assert isinstance(error, ValueError)
  assert "No usable 'fake' image" in str(error) and '6 files found' in str(error)
  # The report is written before failing, so the user can see why.
  assert {q['path']: q['reason'] for q in result['quarantined']} == {
      'fake/gen/broken.jpg': 'empty', 'fake/gen/text.png': 'not_image'}


def test_a_split_without_images_stops_the_run(tmp_path):
  data = tmp_path / 'data'
  _write(data, 'real/a.png', _image(1, 'PNG'))
  _write(data, 'fake/b.png', _image(2, 'PNG'))
  _, _, result, error = _run(data, tmp_path / 'out')
  assert isinstance(error, ValueError)
  empty = [s for s, by_class in result['counts'].items() if not sum(by_class.values())]
  assert empty and f'Split {empty[0]!r} has no usable image' in str(error)


def test_fixed_shards_and_keeping_the_layouts_splits(tmp_path):
  """num_shards regroups the examples into that many files (tfrecord.py's one writer);
  duplicates='keep_layout' reports the leak."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  data = tmp_path / 'data'
  for i in range(6):
    _write(data, f'train/real/{i}.png', _image(900 + i, 'PNG'))
    _write(data, f'train/fake/{i}.png', _image(950 + i, 'PNG'))
  _write(data, 'test/real/t.png', _image(990, 'PNG'))
  _write(data, 'test/fake/leak.png', (data / 'train/fake/0.png').read_bytes())
  examples, _, result, error = _run(data, tmp_path / 'out', num_shards=2,
                                    duplicates='keep_layout',
                                    split_ratios=json.dumps({'train': 1}))
  assert error is None, error
  assert result['split_plan'] == {'train': "the layout's own train split",
                                  'test': "the layout's own test split"}
  for split in ('train', 'test'):
    assert len(tf.io.gfile.glob(os.path.join(examples.uri, f'Split-{split}', '*.gz'))) == 2
  assert sum(len(rows) for rows in _read_examples(examples).values()) == 14
  [group] = result['duplicates']
  assert group['crosses_splits'] is True and group['kept_in_one_split'] is False
  assert any('more than one split (leakage' in w for w in result['warnings'])


def test_examples_are_not_written_in_class_runs(tmp_path):
  """Folders list a class at a time; the shards must mix them, or a trainer's shuffle buffer
  sees single-class stretches (batch-norm then learns the batch, not the image)."""
  for i in range(150):
    _write(tmp_path / 'data', f'real/r{i:03d}.png', _image(i, 'PNG', 8, 8))
    _write(tmp_path / 'data', f'fake/f{i:03d}.png', _image(1000 + i, 'PNG', 8, 8))
  examples, _, result, error = _run(tmp_path / 'data', tmp_path / 'out',
                                    split_ratios=json.dumps({'train': 100}))
  assert error is None and result['ingested'] == 300
  labels = [int(e['label']) for e in _read_examples(examples)['train']]
  switches = sum(a != b for a, b in zip(labels, labels[1:]))
  # In class runs there would be 1 switch; a random order has about 150.
  assert switches > 100, switches
  longest, run = 1, 1
  for a, b in zip(labels, labels[1:]):
    run = run + 1 if a == b else 1
    longest = max(longest, run)
  assert longest < 20, longest
