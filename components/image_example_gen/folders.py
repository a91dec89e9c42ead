"""A folder of images as the ExampleGen sees it: every file in it (local or gs://, s3://), the
files that are never data, and a fingerprint that changes when the folder does.

Layouts (layouts.py) decide what a path means; this module only finds paths and reads folders.
"""

import io
import os
import posixpath
import stat
from typing import Dict, List, Optional, Tuple

# Files that are never data: listed in the report (quarantined as not_image), never read.
_SYSTEM_FILES = frozenset({'.ds_store', 'thumbs.db', 'desktop.ini'})
_SYSTEM_FOLDERS = frozenset({'__macosx'})

# (path relative to data_dir, why it cannot be read or None): a folder the walk could not enter
# is listed too, so that nothing found disappears without a trace. A problem is quarantined as
# `unreadable`, or as `unlabelled` when it starts with UNLABELLED (a bad manifest row).
Entry = Tuple[str, Optional[str]]
UNLABELLED = 'unlabelled: '


def problem_reason(problem: str) -> Tuple[str, str]:
  """(quarantine reason, detail) of an Entry's problem."""
  if problem.startswith(UNLABELLED):
    return 'unlabelled', problem[len(UNLABELLED):]
  return 'unreadable', problem


def is_system_file(rel_path: str) -> bool:
  """Hidden files/folders and OS droppings (.DS_Store, Thumbs.db, __MACOSX/)."""
  parts = rel_path.split('/')
  return (any(p.startswith('.') or p.lower() in _SYSTEM_FOLDERS for p in parts)
          or parts[-1].lower() in _SYSTEM_FILES)


def list_files(data_dir: str) -> List[Entry]:
  """All files under data_dir, sorted. Local folder links are followed once, never in a loop."""
  if is_remote(data_dir):
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
  return sorted(utf8(rel, problem) for rel, problem in entries)


def utf8(rel: str, problem: Optional[str]) -> Entry:
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
      if is_remote(data_dir):
        from tfx.dsl.io import fileio  # pylint: disable=g-import-not-at-top
        info = fileio.stat(join(data_dir, rel))
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


def is_remote(path: str) -> bool:
  """A URI (gs://, s3://, ...) rather than a local path."""
  return '://' in path


def join(base: str, rel: str) -> str:
  """A layout's relative path under its folder, local or remote (gs://, s3://: '/' always)."""
  return posixpath.join(base, rel) if is_remote(base) else os.path.join(base, rel)


def isdir(path: str) -> bool:
  if is_remote(path):
    from tfx.dsl.io import fileio  # pylint: disable=g-import-not-at-top
    return fileio.isdir(path)
  return os.path.isdir(path)


def listdir(path: str) -> List[str]:
  if is_remote(path):
    from tfx.dsl.io import fileio  # pylint: disable=g-import-not-at-top
    return [name.rstrip('/') for name in fileio.listdir(path)]
  return os.listdir(path)


def subfolders(path: str) -> Dict[str, str]:
  """Lower-cased name -> actual name of the folders directly in path."""
  try:
    if not is_remote(path):
      with os.scandir(path) as it:
        return {e.name.lower(): e.name for e in it if e.is_dir()}
    names = listdir(path)
  except OSError:
    return {}
  return {name.lower(): name for name in names if isdir(join(path, name))}


def describe_top(data_dir: str, limit: int = 20) -> str:
  names = sorted(listdir(data_dir))
  if not names:
    return 'an empty folder'
  shown = [n + '/' if isdir(join(data_dir, n)) else n for n in names[:limit]]
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


def open_text(path: str):
  if is_remote(path):
    from tfx.dsl.io import fileio  # pylint: disable=g-import-not-at-top
    with fileio.open(path, 'rb') as f:
      return io.StringIO(f.read().decode('utf-8-sig'), newline='')
  return open(path, newline='', encoding='utf-8-sig')


def open_binary(path: str):
  if is_remote(path):
    from tfx.dsl.io import fileio  # pylint: disable=g-import-not-at-top
    return fileio.open(path, 'rb')
  return open(path, 'rb')
