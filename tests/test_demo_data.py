"""The demo set must be reproducible, shaped like user data, free of label leaks and learnable."""

import collections
import os

import numpy as np
import pytest
from PIL import Image

from fakedetect.components import features
from fakedetect.components import views
from fakedetect import demo_data as demo

PER_CLASS = 30
REAL_DIR = demo.REAL_SOURCES[0]


def _files(root):
  """relative path -> bytes of every non-hidden file under root/real and root/fake."""
  out = {}
  for label in ('real', 'fake'):
    for dirpath, _, names in os.walk(os.path.join(root, label)):
      for name in names:
        if not name.startswith('.'):
          path = os.path.join(dirpath, name)
          with open(path, 'rb') as f:
            out[os.path.relpath(path, root)] = f.read()
  return out


@pytest.fixture(scope='module')
def demo_set(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('demo') / 'data')
  summary = demo.generate(root, per_class=PER_CLASS, seed=0)
  return root, summary, _files(root)


def _images(files, summary):
  """(relative path, PIL format, width, height, grey mean in [0, 1]) of the non-broken files."""
  broken = set(summary['broken'])
  rows = []
  for rel in sorted(files):
    if rel in broken:
      continue
    with Image.open(os.path.join(summary['out_dir'], rel)) as im:
      im.load()
      rows.append((rel, im.format, im.width, im.height,
                   float(np.asarray(im.convert('L'), np.float64).mean() / 255.0)))
  return rows


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, demo_set):
  _, _, files = demo_set
  again = demo.generate(str(tmp_path / 'again'), per_class=PER_CLASS, seed=0)
  assert _files(again['out_dir']) == files
  other = _files(demo.generate(str(tmp_path / 'other'), per_class=PER_CLASS, seed=1)['out_dir'])
  broken = set(demo_set[1]['broken'])
  common = [rel for rel in files if rel in other and rel not in broken]
  different = [rel for rel in common if files[rel] != other[rel]]
  assert len(different) >= 0.9 * len(common), 'a different seed should give different images'


def test_layout_counts_and_summary(demo_set):
  root, summary, files = demo_set
  assert summary['out_dir'] == os.path.abspath(root)
  assert summary['real'] == summary['fake'] == PER_CLASS
  broken = set(summary['broken'])
  assert 3 <= len(broken) <= 6 and broken <= set(files)
  by_dir = collections.Counter(os.path.dirname(rel) for rel in files if rel not in broken)
  real_dirs = [d for d in by_dir if d.split(os.sep)[0] == 'real']
  fake_dirs = [d for d in by_dir if d.split(os.sep)[0] == 'fake']
  assert len(fake_dirs) >= 2, 'at least two generators'
  assert sum(by_dir[d] for d in real_dirs) == PER_CLASS
  assert sum(by_dir[d] for d in fake_dirs) == PER_CLASS
  assert sum(summary['sources'].values()) == 2 * PER_CLASS
  for rel in files:
    assert rel.split(os.sep)[0] in ('real', 'fake') and rel.endswith(('.jpg', '.png'))


def test_formats_and_sizes_carry_no_label(demo_set):
  _, summary, files = demo_set
  rows = _images(files, summary)
  per_class = {label: [r for r in rows if r[0].startswith(label + os.sep)]
               for label in ('real', 'fake')}
  expected_png = round(PER_CLASS * demo.PNG_FRACTION)
  for label, items in per_class.items():
    formats = collections.Counter(r[1] for r in items)
    assert formats == {'PNG': expected_png, 'JPEG': PER_CLASS - expected_png}, label
    for rel, fmt, width, height, _ in items:
      assert (fmt == 'JPEG') == rel.endswith('.jpg'), rel
      assert demo.MIN_SIDE <= width <= demo.MAX_SIDE and demo.MIN_SIDE <= height <= demo.MAX_SIDE
      assert demo.LONGER_SIDE[0] <= max(width, height) <= demo.LONGER_SIDE[1], rel
      ratio = max(width, height) / min(width, height)
      assert min(abs(ratio - r) for r in demo.ASPECT_RATIOS) < 0.02, (rel, ratio)
  sizes = {label: sorted((r[2], r[3]) for r in items) for label, items in per_class.items()}
  assert sizes['real'] == sizes['fake'], 'both classes must share one size distribution'
  assert len(set(sizes['real'])) > PER_CLASS // 2, 'sizes should vary'
  assert any(w != h for w, h in sizes['real']), 'not all square'
  assert any(w > h for w, h in sizes['real']) and any(w < h for w, h in sizes['real']), 'both ways'
  longer = [max(size) for size in sizes['real']]
  assert min(longer) < 160 and max(longer) > 256, 'small and large files, as a user folder has'
  brightness = {label: np.mean([r[4] for r in items]) for label, items in per_class.items()}
  assert abs(brightness['real'] - brightness['fake']) < 0.08, brightness


def test_every_good_file_decodes_with_the_pipeline_preprocessing(demo_set):
  """Both views' decoders: the whole image resized, and the native square the crops come from."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  _, summary, files = demo_set
  good = [data for rel, data in sorted(files.items()) if rel not in summary['broken']]
  assert len(good) == 2 * PER_CLASS
  images = views.decode_and_resize(tf.constant(good), features.DEFAULT_IMAGE_SIZE).numpy()
  assert images.shape == (2 * PER_CLASS, features.DEFAULT_IMAGE_SIZE, features.DEFAULT_IMAGE_SIZE,
                          features.CHANNELS)
  assert images.min() >= 0.0 and images.max() <= 1.0 and images.std() > 0.05
  native = views.native_square(tf.constant(good), demo.MAX_SIDE).numpy()
  assert native.shape == (2 * PER_CLASS, demo.MAX_SIDE, demo.MAX_SIDE, features.CHANNELS)
  assert native.dtype == np.uint8 and native.std() > 0.05 * 255


def test_broken_files_are_really_broken(demo_set):
  root, summary, files = demo_set
  labels = {rel.split(os.sep)[0] for rel in summary['broken']}
  assert labels == {'real', 'fake'}, 'broken files in both classes'
  assert any(len(files[rel]) == 0 for rel in summary['broken'])
  for rel in summary['broken']:
    with pytest.raises((OSError, SyntaxError, ValueError)):
      with Image.open(os.path.join(root, rel)) as im:
        im.load()
  truncated_jpeg = [files[r] for r in summary['broken'] if files[r].startswith(b'\xff\xd8')]
  assert truncated_jpeg and b'\xff\xda' in truncated_jpeg[0], 'a JPEG cut inside its scan data'
  assert any(files[r].startswith(b'\x89PNG') for r in summary['broken']), 'a truncated PNG'


def test_broken_can_be_turned_off(tmp_path):
  summary = demo.generate(str(tmp_path / 'd'), per_class=4, seed=0, broken=False)
  assert summary['broken'] == []
  assert not any('broken' in rel for rel in _files(summary['out_dir']))
  assert len(_files(summary['out_dir'])) == 8


def _residual(img):
  """Median high-pass (Laplacian) energy of a grey image: sensor noise shows up here."""
  lap = 4 * img[1:-1, 1:-1] - img[:-2, 1:-1] - img[2:, 1:-1] - img[1:-1, :-2] - img[1:-1, 2:]
  return float(np.median(np.abs(lap)))


def test_traces_differ_between_classes(demo_set):
  """Guards the point of the data set on native pixels, what the local view's crops see: reals
  are noisy, fakes are up-sampled (clean, periodic)."""
  _, summary, files = demo_set
  broken = set(summary['broken'])

  def pixels(prefix):
    out = []
    for rel in sorted(files):
      if rel.startswith(prefix) and rel not in broken and rel.endswith('.png'):
        with Image.open(os.path.join(summary['out_dir'], rel)) as im:
          out.append(np.asarray(im.convert('L'), np.float64) / 255.0)
    return out

  real = [_residual(x) for x in pixels('real' + os.sep)]
  nearest = pixels(os.path.join('fake', 'nearest_upsampler') + os.sep)
  tconv = pixels(os.path.join('fake', 'transposed_conv') + os.sep)
  assert real and nearest and tconv
  assert np.median(real) > 2 * np.median([_residual(x) for x in nearest + tconv])
  # Nearest-neighbour up-sampling repeats pixels: most neighbours are exactly equal.
  assert np.mean([np.mean(np.diff(x, axis=1) == 0) for x in nearest]) > 0.4
  # The transposed convolution leaves a peak in the spectrum at a period of 4 pixels.
  peak = []
  for x in tconv:
    spectrum = np.abs(np.fft.fft(x - x.mean(axis=1, keepdims=True), axis=1)).mean(axis=0)
    quarter = round(x.shape[1] / 4)
    peak.append(spectrum[quarter] / np.median(spectrum[quarter - 4:quarter + 5]))
  assert np.median(peak) > 2


def test_the_global_view_keeps_a_trace(demo_set):
  """The whole image resized to 64 px (the global view) still shows the reals' sensor noise."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  _, summary, files = demo_set
  residuals = {}
  for label in ('real', 'fake'):
    good = [data for rel, data in sorted(files.items())
            if rel.startswith(label + os.sep) and rel not in summary['broken']]
    grey = views.decode_and_resize(tf.constant(good), 64).numpy().mean(axis=-1)
    residuals[label] = np.median([_residual(x) for x in grey])
  assert residuals['real'] > 2 * residuals['fake'], residuals


def test_refuses_a_foreign_non_empty_directory(tmp_path):
  target = tmp_path / 'photos'
  target.mkdir()
  (target / 'holiday.jpg').write_bytes(b'mine')
  with pytest.raises(ValueError, match='refusing'):
    demo.generate(str(target), per_class=2)
  assert os.listdir(target) == ['holiday.jpg']
  a_file = tmp_path / 'file'
  a_file.write_text('x')
  with pytest.raises(ValueError):
    demo.generate(str(a_file), per_class=2)


def test_regenerating_replaces_a_previous_demo_set(tmp_path):
  target = str(tmp_path / 'd')
  demo.generate(target, per_class=6, seed=3)
  leftover = os.path.join(target, 'real', REAL_DIR, '.img_0099.jpg.tmp')  # as a killed run leaves
  with open(leftover, 'wb') as f:
    f.write(b'half')
  summary = demo.generate(target, per_class=3, seed=0, broken=False)
  assert not os.path.exists(leftover)
  assert len(_files(target)) == 6 == summary['real'] + summary['fake']
  fresh = demo.generate(str(tmp_path / 'fresh'), per_class=3, seed=0, broken=False)
  assert _files(target) == _files(fresh['out_dir'])
  hidden = [n for _, _, names in os.walk(target) for n in names if n.startswith('.')]
  assert hidden == [demo.MARKER_NAME]



def test_rejects_bad_per_class(tmp_path):
  for bad in (0, -1, 2.5, True):
    with pytest.raises(ValueError):
      demo.generate(str(tmp_path / 'x'), per_class=bad)


def test_progress_bar(tmp_path, capsys):
  demo.generate(str(tmp_path / 'p'), per_class=2, progress=True)
  assert 'demo data' in capsys.readouterr().err
