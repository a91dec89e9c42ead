"""Files the user names for a command's output: where one may go, and writing it whole.

`predict -o`, `explain -o`, `evaluate --json/--predictions`, `inspect`'s index.html and
`models config`'s models.config all go through here, so that every one of them
  - refuses to write over one of the command's inputs (`predict x.jpg -o x.jpg`) or over an
    existing image (`predict -o *.jpg`: the shell puts the first photo after -o), by name or by
    content, unless the caller recognises the file as its own earlier output;
  - refuses, naming it, a folder that does not exist, rather than creating it silently or
    failing with a traceback;
  - writes a temporary file beside the target and renames it into place, so a crash or a full
    disk never leaves half a file where the user looks for the result.
A pipe or device the user names (/dev/stdout, /dev/null, a shell's <(...)) is written as named.
"""

import contextlib
import mimetypes
import os
import secrets
import stat
from typing import Callable, Iterable, Iterator, Optional

import click

from fakedetect.components import errors

STDOUT = '-'


class OutputError(errors.UserError):
  """An output path the command must not or cannot write; the message says why and what to do."""


def is_image_file(path: str) -> bool:
  """An image by name (an extension Pillow registers, or one the system's MIME table calls an
  image: HEIC, camera raw) or by content (Pillow recognises its header; nothing is decoded)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.init()
  extension = os.path.splitext(path)[1].lower()
  if extension in Image.registered_extensions():
    return True
  if (mimetypes.guess_type(path)[0] or '').startswith('image/'):
    return True
  try:
    with Image.open(path):
      return True
  except Exception:  # pylint: disable=broad-except  (not an image, or unreadable: not one)
    return False


def _same_file(info: os.stat_result, path: str) -> bool:
  try:
    other = os.stat(path)
  except (OSError, ValueError):  # an input that names nothing (an error row), or a URI
    return False
  return (other.st_dev, other.st_ino) == (info.st_dev, info.st_ino)


def check(path: str, inputs: Iterable[str] = (),
          replaceable: Optional[Callable[[str], bool]] = None) -> str:
  """The resolved path an output named `path` goes to, once it is safe to write there.

  inputs: the files the command reads; none of them is ever written over.
  replaceable: says whether an existing image is the caller's own earlier output (explain's
    heatmaps), which a rerun may replace.
  Raises OutputError for a folder that is not there or not writable, a path that is a folder,
  an input, or an existing image.
  """
  if path == STDOUT:
    return path
  real = os.path.realpath(path)
  folder = os.path.dirname(real)
  if not os.path.isdir(folder):
    problem = 'is not a folder' if os.path.exists(folder) else 'does not exist'
    raise OutputError(f'Cannot write {path}: the folder {folder} {problem}. Create it first, or '
                      'name a file in an existing folder.')
  if os.path.isdir(real):
    raise OutputError(f'Cannot write {path}: it is a folder. Name a file to write.')
  if os.path.exists(real):
    info = os.stat(real)
    same = next((item for item in inputs if _same_file(info, item)), None)
    if same is not None:
      raise OutputError(f'Refusing to write {path}: it is one of the inputs ({same}), which '
                        'the output would replace. Name another output file.')
    if not stat.S_ISREG(info.st_mode):
      return real  # a pipe or device, written as named: its folder does not matter
    if is_image_file(real) and not (replaceable and replaceable(real)):
      raise OutputError(f'Refusing to write over {path}: it is an existing image, which the '
                        'output would replace. Name a new output file (or delete it first). A '
                        'shell pattern such as *.jpg right after -o puts its first match there.')
  probe = _temporary_name(real)
  try:  # a real probe, before any work: permissions, a read-only or pseudo file system
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    os.unlink(probe)
  except OSError as e:
    raise OutputError(f'Cannot write {path}: {folder} takes no new file ({e.strerror or e}). '
                      'Choose a folder you can write to.') from None
  return real


def _temporary_name(real: str) -> str:
  """A new name beside `real`, hidden, that no other writer picks."""
  folder, name = os.path.split(real)
  return os.path.join(folder, f'.{name}.{secrets.token_hex(4)}.tmp')


@contextlib.contextmanager
def atomic_write(path: str, binary: bool = False, inputs: Iterable[str] = (),
                 replaceable: Optional[Callable[[str], bool]] = None) -> Iterator:
  """A file object to write the whole output into (text: UTF-8, no newline translation).

  `path` is checked first (`check`); '-' is stdout. The content goes to a temporary file in the
  target's folder, renamed over the target when the block ends without an error; otherwise the
  temporary file is removed and the target is left as it was. OSErrors of the output itself (a
  full disk, a permission) become OutputError.
  """
  real = check(path, inputs, replaceable)
  if real == STDOUT:
    stream = (click.get_binary_stream('stdout') if binary
              else click.get_text_stream('stdout', encoding='utf-8'))
    yield stream
    stream.flush()
    return
  text = {} if binary else {'encoding': 'utf-8', 'newline': ''}
  mode = 'wb' if binary else 'w'
  if os.path.exists(real) and not stat.S_ISREG(os.stat(real).st_mode):
    with _reporting(path, real), open(real, mode, **text) as f:  # a pipe or device: as named
      yield f
    return
  tmp = _temporary_name(real)
  with _reporting(path, real, tmp):
    try:
      with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), mode,
                     **text) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, real)
    finally:
      if os.path.exists(tmp):
        os.unlink(tmp)


@contextlib.contextmanager
def _reporting(path: str, *own: str) -> Iterator[None]:
  """OSErrors of the output's own files (or of a write, which names none) as OutputError."""
  try:
    yield
  except OSError as e:
    if e.filename is not None and e.filename not in own:
      raise
    raise OutputError(f'Cannot write {path}: {e.strerror or e}.') from None
