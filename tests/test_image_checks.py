"""components/image_checks.py: the one check of an untrusted image, on real hostile bytes.

Ingestion (tests/test_image_example_gen.py) and predict/evaluate/explain (tests/test_predict.py,
tests/test_evaluate.py) run it end to end; here each refusal is pinned to its reason and text.
"""

import os

import pytest

from tests.conftest import encode_image, random_image
from tests.test_image_example_gen import _image, _png_declaring, _png_with_bad_idat_crc


def _why(data: bytes, **limits):
  """The sentence a user reads for refused bytes (str of ImageRejected), or None."""
  from fakedetect.components import image_checks  # pylint: disable=g-import-not-at-top
  try:
    image_checks.check_image(data, image_checks.Limits(**limits))
  except image_checks.ImageRejected as rejected:
    return str(rejected)
  return None


def test_limits_refuse_before_decoding():
  big = encode_image(random_image(300, 300, 1), 'PNG')
  assert _why(big, max_bytes=1000).startswith('file too large')
  assert _why(big, max_pixels=300 * 299).startswith('too many pixels: 300x300')
  assert _why(big) is None
  # Refused from the header alone, by our limit or (far past it) by Pillow's own guard.
  assert _why(_png_declaring(8000, 8000)) == (
      'too many pixels: 8000x8000 = 64,000,000 > limit 50,000,000')
  assert _why(_png_declaring(200000, 200000)) == (
      'too many pixels: 40,000,000,000 > limit 50,000,000')


@pytest.mark.parametrize('name, data, reason', [
    ('empty', b'', 'empty'),
    ('text', b'these are my notes, not a picture\n', 'not_image'),
    ('tiff', _image(6, 'TIFF'), 'unsupported_format'),
    ('mono_bmp', _image(5, 'BMP', mode='1'), 'unsupported_mode'),
    ('truncated_jpeg', _image(400, 'JPEG', 64, 64)[:1500], 'truncated'),
    ('bad_crc_png', _png_with_bad_idat_crc(), 'corrupt'),
    ('bomb', _png_declaring(30000, 30000), 'too_many_pixels'),
])
def test_each_refusal_has_its_quarantine_reason_and_one_user_sentence(name, data, reason):
  from fakedetect.components import image_checks  # pylint: disable=g-import-not-at-top
  with pytest.raises(image_checks.ImageRejected) as info:
    image_checks.check_image(data)
  assert info.value.reason == reason, (name, info.value.detail)
  assert info.value.reason in image_checks.REASONS and info.value.detail
  if reason in ('empty', 'too_many_pixels'):
    assert str(info.value) == info.value.detail
  else:  # what predict and evaluate print for every file TensorFlow would not decode
    assert str(info.value) == f'not an image TensorFlow can decode: {info.value.detail}'
  assert '{{' not in str(info.value) and '[Op:' not in str(info.value)


def test_good_images_pass_with_their_header():
  from fakedetect.components import image_checks  # pylint: disable=g-import-not-at-top
  for fmt, expected in (('PNG', 'png'), ('JPEG', 'jpeg'), ('GIF', 'gif'), ('BMP', 'bmp')):
    header = image_checks.check_image(_image(3, fmt, 12, 16))
    assert header == image_checks.Header(expected, 12, 16, 'P' if fmt == 'GIF' else 'RGB')


def test_read_checked_names_unreadable_and_too_large_files(tmp_path):
  from fakedetect.components import image_checks  # pylint: disable=g-import-not-at-top
  good = tmp_path / 'good.png'
  good.write_bytes(_image(1, 'PNG'))
  assert image_checks.read_checked(str(good)) == good.read_bytes()
  with pytest.raises(image_checks.ImageRejected) as info:
    image_checks.read_checked(str(good), image_checks.Limits(max_bytes=10))
  assert info.value.reason == 'too_large'
  assert str(info.value) == f'file too large: {os.path.getsize(good):,} bytes > limit 10'
  with pytest.raises(image_checks.ImageRejected) as info:
    image_checks.read_checked(str(tmp_path / 'missing.png'))
  assert (info.value.reason, str(info.value)) == (
      'unreadable', 'unreadable: FileNotFoundError: No such file or directory')
  os.symlink('loop.png', tmp_path / 'loop.png')
  with pytest.raises(image_checks.ImageRejected, match='symlink loop'):
    image_checks.read_file(str(tmp_path / 'loop.png'))


def test_pillows_process_wide_guard_is_only_ever_raised():
  """Pillow's guard is global: the checks raise it to a limit above it, never lower it, so a
  small limit here cannot make other code in the process refuse images."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from fakedetect.components import image_checks  # pylint: disable=g-import-not-at-top
  saved = Image.MAX_IMAGE_PIXELS
  try:
    Image.MAX_IMAGE_PIXELS = 1_000_000
    tiny = _image(1, 'PNG', 4, 4)
    image_checks.check_header(tiny, max_pixels=100)
    assert Image.MAX_IMAGE_PIXELS == 1_000_000
    image_checks.check_header(tiny, max_pixels=5_000_000)
    assert Image.MAX_IMAGE_PIXELS == 5_000_000
    # Under the raised guard, our own count decides, and says the declared size.
    with pytest.raises(image_checks.ImageRejected, match='3000x2000 = 6,000,000 > limit'):
      image_checks.check_header(_png_declaring(3000, 2000), max_pixels=5_000_000)
  finally:
    Image.MAX_IMAGE_PIXELS = saved


def finishes(call, fifo: str, seconds: float = 20):
  """call()'s result, run in a thread: fails the test if it is still running after `seconds`
  (blocked opening the FIFO `fifo`, as read_file did), after unblocking it by opening the
  FIFO's other end, so that a hang fails the test instead of blocking the suite."""
  import threading  # pylint: disable=g-import-not-at-top
  outcome = {}

  def target():
    try:
      outcome['value'] = call()
    except BaseException as e:  # pylint: disable=broad-except  (re-raised in the test's thread)
      outcome['error'] = e

  thread = threading.Thread(target=target, daemon=True)
  thread.start()
  thread.join(seconds)
  if thread.is_alive():
    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # the reader's open() returns
    thread.join(seconds)
    pytest.fail(f'still running after {seconds} s: blocked on the pipe {fifo}')
  if 'error' in outcome:
    raise outcome['error']
  return outcome.get('value')


def test_a_pipe_or_a_folder_is_refused_at_once_not_waited_on(tmp_path):
  """Opening a FIFO for reading blocks until a writer comes: read_file must never wait."""
  from fakedetect.components import image_checks  # pylint: disable=g-import-not-at-top
  fifo = str(tmp_path / 'photo.jpg')
  os.mkfifo(fifo)

  def reason(path):
    try:
      image_checks.read_checked(path)
    except image_checks.ImageRejected as rejected:
      return rejected.reason, str(rejected)
    return None

  assert finishes(lambda: reason(fifo), fifo) == (
      'unreadable', f'unreadable: {image_checks.NOT_REGULAR}')
  assert reason(str(tmp_path)) == ('unreadable', 'unreadable: a folder, not a file')
  good = tmp_path / 'good.png'
  good.write_bytes(_image(1, 'PNG'))
  assert image_checks.read_file(str(good), max_bytes=10**6) == good.read_bytes()
