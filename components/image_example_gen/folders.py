"""A folder of images as the ExampleGen sees it: every file in it (local or gs://, s3://), the
files that are never data, and a fingerprint that changes when the folder does.

Layouts (layouts.py) decide what a path means; this module only finds paths and reads folders.
"""

import hashlib
import io
import os
import posixpath
import shutil
import stat
from typing import Dict, Iterable, List, Optional, Tuple

# Files that are never data: listed in the report (quarantined as not_image), never read.
_SYSTEM_FILES = frozenset({'.ds_store', 'thumbs.db', 'desktop.ini'})
_SYSTEM_FOLDERS = frozenset({'__macosx'})
# Why a pipe (FIFO), socket or device is never read: opening a pipe blocks its reader.
NOT_REGULAR = 'not a regular file (a pipe, socket or device); not read'

# (path relative to data_dir, why it cannot be read or None): a folder the walk could not enter
# is listed too, so that nothing found disappears without a trace. A problem is quarantined as
# `unreadable`, or as the reason its prefix names: UNLABELLED (a bad manifest row), OUTSIDE (a
# manifest path or a link leaving the data folder).
Entry = Tuple[str, Optional[str]]
UNLABELLED = 'unlabelled: '
OUTSIDE = 'outside_data_folder: '
_LINK_OUTSIDE = OUTSIDE + 'a link to '


def problem_reason(problem: str) -> Tuple[str, str]:
  """(quarantine reason, detail) of an Entry's problem."""
  for prefix in (UNLABELLED, OUTSIDE):
    if problem.startswith(prefix):
      return prefix[:-2], problem[len(prefix):]
  return 'unreadable', problem


def link_outside(target: str) -> str:
  """The problem of a link leaving the data folder, not followed."""
  return (f'{_LINK_OUTSIDE}{target}, outside the data folder: not followed (set '
          'data.follow_outside_links=true to read it)')


def is_link_outside(problem: Optional[str]) -> bool:
  return bool(problem) and problem.startswith(_LINK_OUTSIDE)


def is_system_file(rel_path: str) -> bool:
  """Hidden files/folders and OS droppings (.DS_Store, Thumbs.db, __MACOSX/)."""
  parts = rel_path.split('/')
  return (any(p.startswith('.') or p.lower() in _SYSTEM_FOLDERS for p in parts)
          or parts[-1].lower() in _SYSTEM_FILES)


def list_files(data_dir: str, follow_outside_links: bool = False) -> List[Entry]:
  """All files under data_dir, sorted. Local folder links are followed once, never in a loop;
  links leaving the folder only with follow_outside_links (else listed as OUTSIDE, not read)."""
  if is_remote(data_dir):
    return sorted(_list_remote(data_dir))
  return sorted(utf8(rel, problem) for rel, problem, _, _ in _walk(data_dir, follow_outside_links))


# An Entry with the size and modification time (ns) of what it points to (0, 0 if not a file).
_Stat = Tuple[str, Optional[str], int, int]


def _walk(data_dir: str, follow_outside_links: bool) -> List[_Stat]:
  """Every entry under a local data_dir with its stat, one scandir stat per file."""
  root = os.path.realpath(data_dir)
  found: List[_Stat] = []
  visited = set()
  stack = ['']
  while stack:
    rel_dir = stack.pop()
    folder = os.path.join(data_dir, rel_dir)
    try:
      st = os.stat(folder)
      if (st.st_dev, st.st_ino) in visited:
        found.append((rel_dir, 'a folder link to a folder already read (a loop or a second '
                      'link); not followed', 0, 0))
        continue
      visited.add((st.st_dev, st.st_ino))
      with os.scandir(folder) as it:
        children = list(it)
    except OSError as e:
      if not rel_dir:
        raise
      found.append((rel_dir, f'folder could not be listed: {e.strerror or e}', 0, 0))
      continue
    for child in children:
      rel = posixpath.join(rel_dir, child.name) if rel_dir else child.name
      if not follow_outside_links and child.is_symlink():
        target = os.path.realpath(child.path)
        if not _inside(target, root):
          found.append((rel, link_outside(target), 0, 0))
          continue
      try:
        info = child.stat()  # follows links
      except OSError:
        found.append((rel, None, 0, 0))  # a looping or dangling link: reading it names the error
        continue
      if stat.S_ISDIR(info.st_mode):
        stack.append(rel)
      elif stat.S_ISREG(info.st_mode):
        found.append((rel, None, info.st_size, info.st_mtime_ns))
      else:  # opening a pipe would block the worker forever
        found.append((rel, NOT_REGULAR, 0, 0))
  return found


def _inside(path: str, root: str) -> bool:
  return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def relative_inside(data_dir: str, path: str) -> Optional[str]:
  """A manifest's path ('/'-separated, relative to data_dir or absolute) relative to data_dir,
  normalized; None when it leaves the folder (../x.jpg, /etc/hostname, another bucket)."""
  if is_remote(path):
    root = data_dir.rstrip('/') + '/'
    if not path.startswith(root):
      return None
    path = path[len(root):]
  elif path.startswith('/'):
    if is_remote(data_dir):
      return None
    path = os.path.normpath(path)
    roots = (os.path.abspath(data_dir), os.path.realpath(data_dir))
    root = next((r for r in roots if _inside(path, r)), None)
    if root is None:
      return None
    path = os.path.relpath(path, root).replace(os.sep, '/')
  rel = posixpath.normpath(path)
  return None if rel == '..' or rel.startswith(('../', '/')) else rel


def links_outside(data_dir: str, rels: Iterable[str]) -> Dict[str, str]:
  """{rel: problem} of the paths (inside data_dir by name) that a link takes out of it.

  One lstat per path and one realpath per folder: cheap on a manifest of 100k rows."""
  if is_remote(data_dir):
    return {}  # object stores have no links
  root = os.path.realpath(data_dir)
  resolved: Dict[str, str] = {}
  out = {}
  for rel in rels:
    head, name = posixpath.split(rel)
    if head not in resolved:
      resolved[head] = os.path.realpath(os.path.join(data_dir, head))
    target = os.path.join(resolved[head], name)
    if os.path.islink(target):
      target = os.path.realpath(target)
    if not _inside(target, root):
      out[rel] = link_outside(target)
  return out


def utf8(rel: str, problem: Optional[str]) -> Entry:
  """Paths travel as UTF-8 (Beam coders, string features): a name that is not is listed, escaped."""
  try:
    rel.encode('utf-8')
    return rel, problem
  except UnicodeEncodeError:
    raw = rel.encode('utf-8', 'surrogateescape')
    return raw.decode('utf-8', 'backslashreplace'), 'the file name is not valid UTF-8; rename it'


def fingerprint(data_dir: str, follow_outside_links: bool = False) -> str:
  """Changes when a file is added, removed, renamed or moved (its path says its class and
  split), or modified (size, mtime), and when a CSV at the top (a manifest) is edited; an
  untouched folder keeps it, so TFX's cache reuses the ingestion. No image is read: the walk's
  own stat of each file is enough, 100k files cost a listing."""
  if is_remote(data_dir):
    stats = _remote_stats(data_dir)
  else:
    stats = _walk(data_dir, follow_outside_links)
  digest = hashlib.sha256()
  for rel, problem, size, mtime_ns in sorted(stats, key=lambda entry: entry[0]):
    digest.update(f'{rel}\0{problem or ""}\0{size}\0{mtime_ns}\n'.encode(
        'utf-8', 'surrogateescape'))
  for name in sorted(listdir(data_dir)):
    if name.lower().endswith('.csv'):
      try:
        with open_binary(join(data_dir, name)) as f:
          digest.update(f'{name}\0'.encode('utf-8', 'surrogateescape')
                        + hashlib.sha256(f.read()).digest())
      except Exception:  # pylint: disable=broad-except  (a folder, unreadable: in the walk)
        continue
  return f'data_dir:{data_dir},num_files:{len(stats)},sha256:{digest.hexdigest()}'


def _remote_stats(data_dir: str) -> List[_Stat]:
  from tfx.dsl.io import fileio  # pylint: disable=g-import-not-at-top
  stats = []
  for rel, problem in _list_remote(data_dir):
    try:
      info = fileio.stat(join(data_dir, rel))
      stats.append((rel, problem, info.length, int(info.mtime_nsec)))
    except Exception:  # pylint: disable=broad-except  (the executor reports it)
      stats.append((rel, problem, -1, -1))
  return stats


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


def link_into(source: str, target: str) -> None:
  """Puts source's file at target (a subset folder built for a run or a benchmark): a hard link,
  which is the file itself rather than a link leaving the folder (those are not followed), or a
  copy where a hard link cannot be made (another filesystem)."""
  try:
    os.link(source, target)
  except OSError:
    shutil.copyfile(source, target)
