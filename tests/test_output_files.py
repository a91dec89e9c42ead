"""fakedetect/output_files.py: where a command may write a file the user named, and how."""

import os
import stat

import pytest

from tests.conftest import encode_image, random_image


def test_an_image_is_recognised_by_name_or_by_content(tmp_path):
  from fakedetect import output_files
  named = tmp_path / 'empty.png'
  named.write_bytes(b'')
  unnamed = tmp_path / 'IMG_0001'  # a photo without an extension
  unnamed.write_bytes(encode_image(random_image(8, 8), 'JPEG'))
  rows = tmp_path / 'rows.csv'
  rows.write_text('path,fake_probability\n')
  assert output_files.is_image_file(str(named)) and output_files.is_image_file(str(unnamed))
  assert output_files.is_image_file(str(tmp_path / 'raw.heic'))
  assert not output_files.is_image_file(str(rows))
  for image in (named, unnamed):
    with pytest.raises(output_files.OutputError, match='existing image'):
      output_files.check(str(image))
  assert output_files.check(str(rows)) == str(rows)  # an earlier output: replaced
  assert output_files.check(str(unnamed), replaceable=lambda path: True) == str(unnamed)


def test_what_cannot_be_written_is_named(tmp_path):
  from fakedetect import output_files
  with pytest.raises(output_files.OutputError, match='it is a folder'):
    output_files.check(str(tmp_path))
  afile = tmp_path / 'file'
  afile.write_text('x')
  with pytest.raises(output_files.OutputError, match=f'the folder {afile} is not a folder'):
    output_files.check(str(afile / 'out.csv'))
  with pytest.raises(output_files.OutputError, match='one of the inputs'):
    output_files.check(str(afile), inputs=['missing.jpg', str(afile)])
  # Probed, not guessed from permission bits: root is refused by /proc too.
  with pytest.raises(output_files.OutputError, match='/proc takes no new file'):
    output_files.check('/proc/rows.csv')
  if os.geteuid() != 0:  # root writes anywhere else
    locked = tmp_path / 'locked'
    locked.mkdir(mode=0o555)
    with pytest.raises(output_files.OutputError, match='takes no new file'):
      output_files.check(str(locked / 'out.csv'))
  assert sorted(os.listdir(tmp_path)) == ['file'] + (['locked'] if os.geteuid() else [])


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
  from fakedetect import output_files
  target = tmp_path / 'rows.csv'
  target.write_text('before\n')
  with pytest.raises(RuntimeError):
    with output_files.atomic_write(str(target)) as f:
      f.write('half')
      raise RuntimeError('killed')
  assert target.read_text() == 'before\n' and os.listdir(tmp_path) == ['rows.csv']
  link = tmp_path / 'link.csv'
  link.symlink_to(target)
  with output_files.atomic_write(str(link)) as f:
    f.write('café\n')
  assert link.is_symlink() and target.read_text(encoding='utf-8') == 'café\n'
  mask = os.umask(0)
  os.umask(mask)
  assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask  # as open() would create it
  with output_files.atomic_write(os.devnull, binary=True) as f:  # a device: written as named
    f.write(b'nothing')
  assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
