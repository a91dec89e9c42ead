"""How a folder of images says what each file is: its class, its source and, maybe, its split.

Image datasets arrive in a few shapes (plain real/ + fake/, CIFAKE's train|test/REAL|FAKE, and
later ForenSynths, GenImage, 140k faces, a CSV manifest). Each shape is one `Layout`: it is
detected once, before the Beam pipeline starts, and the workers then only call `parse` on a
relative path. Supporting a new dataset means writing one subclass and adding it to `LAYOUTS`;
the executor, the splits and the report do not change.
"""

import abc
import dataclasses
import os
import posixpath
import stat
from typing import Dict, List, Optional, Tuple

from components import features

# Class folder names, compared in lower case.
CLASS_FOLDERS = {name: label for label, name in enumerate(features.LABEL_NAMES)}

# Files that are never data: listed in the report (quarantined as not_image), never read.
_SYSTEM_FILES = frozenset({'.ds_store', 'thumbs.db', 'desktop.ini'})
_SYSTEM_FOLDERS = frozenset({'__macosx'})

# (path relative to data_dir, why it cannot be read or None): a folder the walk could not enter
# is listed too, so that nothing found disappears without a trace.
Entry = Tuple[str, Optional[str]]


@dataclasses.dataclass(frozen=True)
class Labelled:
  label: int  # features.REAL or features.FAKE
  source: str  # generator for fakes, camera/source for reals
  split: Optional[str] = None  # the layout's own split (canonical name), None if it has none


class Layout(abc.ABC):
  """One way of encoding labels (and maybe splits) in paths. Must stay picklable: Beam ships it."""

  name: str = ''  # written to report.json
  description: str = ''  # shown when no layout matches
  splits: Tuple[str, ...] = ()  # splits the layout assigns itself; () = split by content hash

  @abc.abstractmethod
  def matches(self, data_dir: str) -> bool:
    """Whether data_dir looks like this layout (folder names compared case-insensitively)."""

  @abc.abstractmethod
  def parse(self, rel_path: str) -> Optional[Labelled]:
    """The label of one file ('/'-separated path), None if it lies outside the class folders."""

  def list_files(self, data_dir: str) -> List[Entry]:
    """Every file to account for. A manifest layout would list its rows instead of walking."""
    return list_files(data_dir)


def _source(parts: List[str], class_depth: int, label: int) -> str:
  """The first folder below the class folder names the source, else the class itself."""
  if len(parts) > class_depth + 2:
    return parts[class_depth + 1]
  return features.LABEL_NAMES[label]


class PlainLayout(Layout):
  """real/[<source>/...]file and fake/[<generator>/...]file."""

  name = 'plain'
  description = ('plain: real/ and fake/ at the top, each optionally with sub-folders naming '
                 'the source (fake/<generator>/...); split by content hash')

  def matches(self, data_dir: str) -> bool:
    return set(CLASS_FOLDERS) <= set(_subfolders(data_dir))

  def parse(self, rel_path: str) -> Optional[Labelled]:
    parts = rel_path.split('/')
    label = CLASS_FOLDERS.get(parts[0].lower())
    if label is None or len(parts) < 2:
      return None
    return Labelled(label, _source(parts, 0, label))


class CifakeLayout(Layout):
  """CIFAKE (Kaggle): train/REAL, train/FAKE, test/REAL, test/FAKE. Its splits are kept."""

  name = 'cifake'
  description = ('cifake: train/ and/or test/ at the top, each with REAL/ and FAKE/ inside; '
                 'test stays test, eval is carved out of train by content hash')
  splits = ('train', 'test')

  def matches(self, data_dir: str) -> bool:
    top = _subfolders(data_dir)
    present = [top[s] for s in self.splits if s in top]
    return bool(present) and all(
        set(CLASS_FOLDERS) <= set(_subfolders(_join(data_dir, folder))) for folder in present)

  def parse(self, rel_path: str) -> Optional[Labelled]:
    parts = rel_path.split('/')
    if len(parts) < 3 or parts[0].lower() not in self.splits:
      return None
    label = CLASS_FOLDERS.get(parts[1].lower())
    if label is None:
      return None
    return Labelled(label, _source(parts, 1, label), parts[0].lower())


# Order matters only for the error message; detection requires exactly one match.
LAYOUTS: Tuple[Layout, ...] = (PlainLayout(), CifakeLayout())


def detect(data_dir: str) -> Layout:
  """The one layout data_dir follows; ValueError naming what was found and what is understood."""
  if not _isdir(data_dir):
    raise ValueError(f'data_dir {data_dir!r} is not a folder.')
  found = [layout for layout in LAYOUTS if layout.matches(data_dir)]
  if len(found) == 1:
    return found[0]
  understood = '\n'.join(f'  - {layout.description}' for layout in LAYOUTS)
  if found:
    raise ValueError(
        f'The folder {data_dir} matches several layouts ({", ".join(l.name for l in found)}); '
        f'keep only one of them at its top level. Layouts understood:\n{understood}')
  raise ValueError(
      f'Unrecognised layout in {data_dir}: found {_describe_top(data_dir)}. '
      f'Layouts understood (folder names are case-insensitive):\n{understood}')


def is_system_file(rel_path: str) -> bool:
  """Hidden files/folders and OS droppings (.DS_Store, Thumbs.db, __MACOSX/)."""
  parts = rel_path.split('/')
  return (any(p.startswith('.') or p.lower() in _SYSTEM_FOLDERS for p in parts)
          or parts[-1].lower() in _SYSTEM_FILES)


def list_files(data_dir: str) -> List[Entry]:
  """All files under data_dir, sorted. Local folder links are followed once, never in a loop."""
  if _is_remote(data_dir):
    return sorted(_list_remote(data_dir))
  entries: List[Entry] = []
  visited = set()
  stack = ['']
  while stack:
    rel_dir = stack.pop()
    folder = os.path.join(data_dir, rel_dir)
    try:
      st = os.stat(folder)
      if (st.st_dev, st.st_ino) in visited:
        entries.append((rel_dir, 'a folder link to a folder already read (a loop or a second '
                        'link); not followed'))
        continue
      visited.add((st.st_dev, st.st_ino))
      with os.scandir(folder) as it:
        children = list(it)
    except OSError as e:
      if not rel_dir:
        raise
      entries.append((rel_dir, f'folder could not be listed: {e.strerror or e}'))
      continue
    for child in children:
      rel = posixpath.join(rel_dir, child.name) if rel_dir else child.name
      try:
        mode = child.stat().st_mode  # follows links
      except OSError:
        entries.append((rel, None))  # a looping or dangling link: reading it names the error
        continue
      if stat.S_ISDIR(mode):
        stack.append(rel)
      elif stat.S_ISREG(mode):
        entries.append((rel, None))
      else:  # opening a pipe would block the worker forever
        entries.append((rel, 'not a regular file (a pipe, socket or device); not read'))
  return sorted(_utf8(rel, problem) for rel, problem in entries)


def _utf8(rel: str, problem: Optional[str]) -> Entry:
  """Paths travel as UTF-8 (Beam coders, string features): a name that is not is listed, escaped."""
  try:
    rel.encode('utf-8')
    return rel, problem
  except UnicodeEncodeError:
    raw = rel.encode('utf-8', 'surrogateescape')
    return raw.decode('utf-8', 'backslashreplace'), 'the file name is not valid UTF-8; rename it'


def fingerprint(data_dir: str) -> str:
  """Changes when files are added, removed or modified, as TFX's file ExampleGens fingerprint."""
  total_bytes = xor_checksum = sum_checksum = 0
  entries = list_files(data_dir)
  for rel, problem in entries:
    if problem:
      continue
    try:
      if _is_remote(data_dir):
        from tfx.dsl.io import fileio  # pylint: disable=g-import-not-at-top
        info = fileio.stat(_join(data_dir, rel))
        size, mtime = info.length, int(info.mtime_nsec // 1_000_000_000)
      else:
        info = os.stat(os.path.join(data_dir, rel))
        size, mtime = info.st_size, int(info.st_mtime)
    except Exception:  # pylint: disable=broad-except
      continue  # unreadable files are reported by the executor, not here
    total_bytes += size
    xor_checksum ^= mtime
    sum_checksum += mtime
  return (f'data_dir:{data_dir},num_files:{len(entries)},total_bytes:{total_bytes},'
          f'xor_checksum:{xor_checksum},sum_checksum:{sum_checksum}')


def _is_remote(path: str) -> bool:
  return '://' in path


def _join(base: str, rel: str) -> str:
  return posixpath.join(base, rel) if _is_remote(base) else os.path.join(base, rel)


def _isdir(path: str) -> bool:
  if _is_remote(path):
    from tfx.dsl.io import fileio  # pylint: disable=g-import-not-at-top
    return fileio.isdir(path)
  return os.path.isdir(path)


def _listdir(path: str) -> List[str]:
  if _is_remote(path):
    from tfx.dsl.io import fileio  # pylint: disable=g-import-not-at-top
    return [name.rstrip('/') for name in fileio.listdir(path)]
  return os.listdir(path)


def _subfolders(path: str) -> Dict[str, str]:
  """Lower-cased name -> actual name of the folders directly in path."""
  try:
    names = _listdir(path)
  except OSError:
    return {}
  return {name.lower(): name for name in names if _isdir(_join(path, name))}


def _describe_top(data_dir: str, limit: int = 20) -> str:
  names = sorted(_listdir(data_dir))
  if not names:
    return 'an empty folder'
  shown = [n + '/' if _isdir(_join(data_dir, n)) else n for n in names[:limit]]
  more = f' and {len(names) - limit} more' if len(names) > limit else ''
  return ', '.join(shown) + more


def _list_remote(data_dir: str) -> List[Entry]:
  """Object stores (gs://, s3://) have no links; TFX's filesystem layer walks them."""
  from tfx.dsl.io import fileio  # pylint: disable=g-import-not-at-top
  root = data_dir.rstrip('/') + '/'
  entries = []
  for folder, _, files in fileio.walk(data_dir):
    folder = folder.rstrip('/') + '/'
    rel_dir = folder[len(root):] if folder.startswith(root) else ''
    entries.extend((rel_dir + name.rstrip('/'), None) for name in files)
  return entries
