"""How a folder of images says what each file is: its class, its source and, maybe, its split.

Image datasets arrive in a few shapes: plain real/ + fake/, CIFAKE's train|test/REAL|FAKE,
ForenSynths (CNNDetection), GenImage, 140k real and fake faces, or a CSV manifest for anything
else. Each shape is one `Layout`: it is detected once, before the Beam pipeline starts (`detect`
returns it bound to the folder, with the splits the folder really has), and the workers then only
call `parse` on a relative path. Supporting a new dataset means writing one subclass and adding it
to `LAYOUTS`; the executor, the splits and the report do not change.
"""

import abc
import copy
import csv
import dataclasses
import io
import os
import posixpath
import stat
from typing import Dict, List, Optional, Tuple

from fakedetect.components import errors
from fakedetect.components import features

# Class folder names, compared in lower case.
CLASS_FOLDERS = {name: label for label, name in enumerate(features.LABEL_NAMES)}
# Split folder names (lower case) -> the pipeline's split names.
SPLIT_FOLDERS = {'train': 'train', 'val': 'eval', 'valid': 'eval', 'validation': 'eval',
                 'test': 'test'}
_SPLIT_ORDER = ('train', 'eval', 'test')

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

  def bind(self, data_dir: str) -> 'Layout':
    """This layout for data_dir: a copy whose `splits` are the ones the folder really has."""
    del data_dir
    return self

  def _with_splits(self, splits: Tuple[str, ...]) -> 'Layout':
    bound = copy.copy(self)
    bound.splits = splits
    return bound

  def list_files(self, data_dir: str) -> List[Entry]:
    """Every file to account for. The manifest layout lists its rows instead of walking."""
    return list_files(data_dir)


def _splits_present(names) -> Tuple[str, ...]:
  """Pipeline split names of the split folders among names (lower case), in canonical order."""
  present = {SPLIT_FOLDERS[n] for n in names if n in SPLIT_FOLDERS}
  return tuple(s for s in _SPLIT_ORDER if s in present)


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


class _TopSplitsLayout(Layout):
  """A layout whose top folders are its splits (train, val|valid, test): it has those present."""

  def bind(self, data_dir: str) -> Layout:
    return self._with_splits(_splits_present(_subfolders(data_dir)))


class SplitClassLayout(_TopSplitsLayout):
  """<split>/<class>/...: CIFAKE (train|test/REAL|FAKE) and 140k faces (train|valid|test/real|fake).

  The two are one shape; they differ only in their splits, so the name follows the folder: a
  val/valid folder makes it 140k faces. The folder's splits are kept (val/valid -> eval); the
  ratio splits it lacks are carved out of its train by content hash.
  """

  _with_eval = False

  def matches(self, data_dir: str) -> bool:
    top = _subfolders(data_dir)
    present = [name for name in top if name in SPLIT_FOLDERS]
    if not present or any(SPLIT_FOLDERS[n] == 'eval' for n in present) != self._with_eval:
      return False
    return all(set(CLASS_FOLDERS) <= set(_subfolders(join(data_dir, top[n]))) for n in present)

  def parse(self, rel_path: str) -> Optional[Labelled]:
    parts = rel_path.split('/')
    split = SPLIT_FOLDERS.get(parts[0].lower())
    if len(parts) < 3 or split not in self.splits:
      return None
    label = CLASS_FOLDERS.get(parts[1].lower())
    if label is None:
      return None
    return Labelled(label, _source(parts, 1, label), split)


class CifakeLayout(SplitClassLayout):
  name = 'cifake'
  description = ('cifake: train/ and/or test/ at the top, each with REAL/ and FAKE/ inside; '
                 'test stays test, eval is carved out of train by content hash')
  splits = ('train', 'test')


class Faces140kLayout(SplitClassLayout):
  name = '140k_faces'
  description = ('140k_faces: train/, valid/ (or val/) and test/ at the top, each with real/ and '
                 'fake/ inside; all three splits are kept')
  splits = ('train', 'eval', 'test')
  _with_eval = True


# ForenSynths / CNNDetection (Wang et al. 2020) and GenImage (Zhu et al. 2023) class folders.
_FORENSYNTHS_CLASSES = {'0_real': features.REAL, '1_fake': features.FAKE}
_GENIMAGE_CLASSES = {'nature': features.REAL, 'ai': features.FAKE}


class ForenSynthsLayout(_TopSplitsLayout):
  """{train,val}/<object class>/{0_real,1_fake}/ and test/<generator>/[<class>/]{0_real,1_fake}/.

  The source of a test image is its generator folder (for reals: the real set paired with that
  generator); train and val name no generator (ForenSynths trains on ProGAN), so their source is
  the class name, as in the plain layout.
  """

  name = 'forensynths'
  description = ('forensynths: ForenSynths / CNNDetection, train/, val/ and/or test/ at the top; '
                 '{train,val}/<class>/{0_real,1_fake}/ and '
                 'test/<generator>/[<class>/]{0_real,1_fake}/')
  splits = ('train', 'eval', 'test')

  def matches(self, data_dir: str) -> bool:
    top = _subfolders(data_dir)
    present = [top[n] for n in top if n in SPLIT_FOLDERS]
    return bool(present) and all(
        _has_class_folder(join(data_dir, folder), _FORENSYNTHS_CLASSES, depth=3)
        for folder in present)

  def parse(self, rel_path: str) -> Optional[Labelled]:
    parts = rel_path.split('/')
    split = SPLIT_FOLDERS.get(parts[0].lower())
    if split not in self.splits:
      return None
    lower = [p.lower() for p in parts[:-1]]
    depth = next((i for i in (1, 2, 3) if i < len(lower) and lower[i] in _FORENSYNTHS_CLASSES),
                 None)
    if depth is None:
      return None
    label = _FORENSYNTHS_CLASSES[lower[depth]]
    if split == 'test' and depth >= 2:
      return Labelled(label, parts[1], split)
    return Labelled(label, features.LABEL_NAMES[label], split)


class GenImageLayout(Layout):
  """<generator>/[<subset>/]{train,val}/{ai,nature}/: GenImage; the source is the generator folder.

  GenImage has no test split: it is carved out of train by content hash (split_ratios' weights),
  as eval is for CIFAKE. For reals (nature/, ImageNet) the source names the generator subset they
  came with.
  """

  name = 'genimage'
  description = ('genimage: <generator>/[<subset>/]{train,val}/{ai,nature}/; '
                 'test is carved out of train by content hash')
  splits = ('train', 'eval')

  def matches(self, data_dir: str) -> bool:
    top = _subfolders(data_dir)
    if not top or any(n in SPLIT_FOLDERS or n in CLASS_FOLDERS for n in top):
      return False
    return any(self._split_roots(join(data_dir, folder)) for folder in top.values())

  def _split_roots(self, generator_dir: str) -> List[str]:
    """Split folders holding ai/ or nature/, directly in generator_dir or one level down."""
    found = []
    for level in (generator_dir, *[join(generator_dir, f)
                                   for f in _subfolders(generator_dir).values()]):
      for name, actual in _subfolders(level).items():
        if name in SPLIT_FOLDERS and set(_subfolders(join(level, actual))) & set(
            _GENIMAGE_CLASSES):
          found.append(name)
      if found:
        break
    return found

  def bind(self, data_dir: str) -> Layout:
    names = [n for folder in _subfolders(data_dir).values()
             for n in self._split_roots(join(data_dir, folder))]
    return self._with_splits(_splits_present(names))

  def parse(self, rel_path: str) -> Optional[Labelled]:
    parts = rel_path.split('/')
    lower = [p.lower() for p in parts[:-1]]
    for i in (1, 2):
      if (i + 1 < len(lower) and SPLIT_FOLDERS.get(lower[i]) in self.splits
          and lower[i + 1] in _GENIMAGE_CLASSES):
        return Labelled(_GENIMAGE_CLASSES[lower[i + 1]], parts[0], SPLIT_FOLDERS[lower[i]])
    return None


# Labels a manifest may give, lower case.
_MANIFEST_LABELS = {'real': features.REAL, '0': features.REAL, 'nature': features.REAL,
                    'fake': features.FAKE, '1': features.FAKE, 'ai': features.FAKE}


class ManifestLayout(Layout):
  """A CSV at the top of data_dir with a header `path,label[,generator]`: anything else.

  Paths are relative to data_dir (or absolute); labels real|fake (or 0|1). The files found are
  the manifest's rows: a row whose file is missing is quarantined as unreadable, a row without a
  valid label as unlabelled, so every row is accounted for. Splits by content hash. When data_dir
  has a manifest it wins over the folder names: a manifest is an explicit statement.
  """

  name = 'manifest'
  description = ('manifest: one CSV file at the top with a header path,label[,generator] '
                 '(label real|fake or 0|1, paths relative to the folder); split by content hash')

  def __init__(self):
    self.manifest = ''
    self._rows: Dict[str, Labelled] = {}
    self._problems: Dict[str, str] = {}

  def matches(self, data_dir: str) -> bool:
    return len(self._candidates(data_dir)) == 1

  def _candidates(self, data_dir: str) -> List[str]:
    try:
      names = sorted(_listdir(data_dir))
    except OSError:
      return []
    return [n for n in names if n.lower().endswith('.csv') and not _isdir(join(data_dir, n))
            and {'path', 'label'} <= set(_csv_header(join(data_dir, n)))]

  def bind(self, data_dir: str) -> Layout:
    """Reads the manifest once, in the driver; the workers get {path: label} with the layout."""
    bound = ManifestLayout()
    bound.manifest = self._candidates(data_dir)[0]
    with _open_text(join(data_dir, bound.manifest)) as f:
      for line, row in enumerate(csv.DictReader(f), start=2):
        path = (row.get('path') or '').strip().replace(os.sep, '/')
        path = posixpath.normpath(path) if path else ''
        if not path:
          bound._problems[f'{bound.manifest}:{line}'] = 'manifest row without a path'
          continue
        label = _MANIFEST_LABELS.get((row.get('label') or '').strip().lower())
        source = (row.get('generator') or '').strip()
        if label is None:
          bound._problems[path] = (f'{bound.manifest} line {line}: label '
                                   f'{row.get("label")!r} is not real/fake/0/1')
          continue
        labelled = Labelled(label, source or features.LABEL_NAMES[label])
        if bound._rows.get(path, labelled) != labelled:
          bound._problems[path] = f'{bound.manifest} line {line}: listed again with another label'
        bound._rows.setdefault(path, labelled)
    for path in bound._problems:
      bound._rows.pop(path, None)
    return bound

  def list_files(self, data_dir: str) -> List[Entry]:
    entries = [(path, None) for path in self._rows]
    entries += [(path, UNLABELLED + problem) for path, problem in self._problems.items()]
    return sorted(_utf8(rel, problem) for rel, problem in entries)

  def parse(self, rel_path: str) -> Optional[Labelled]:
    return self._rows.get(rel_path)


def _csv_header(path: str) -> List[str]:
  try:
    with _open_text(path) as f:
      return [name.strip().lower() for name in next(csv.reader(f), [])]
  except (OSError, UnicodeDecodeError, csv.Error):
    return []


def _open_text(path: str):
  if is_remote(path):
    from tfx.dsl.io import fileio  # pylint: disable=g-import-not-at-top
    with fileio.open(path, 'rb') as f:
      return io.StringIO(f.read().decode('utf-8-sig'), newline='')
  return open(path, newline='', encoding='utf-8-sig')


def _has_class_folder(folder: str, classes, depth: int) -> bool:
  """Whether one of classes is a folder within depth levels below folder."""
  sub = _subfolders(folder)
  if set(sub) & set(classes):
    return True
  return depth > 1 and any(_has_class_folder(join(folder, actual), classes, depth - 1)
                           for actual in sub.values())


# Order matters only for the error message; detection requires exactly one match, except that a
# manifest wins over folder names.
LAYOUTS: Tuple[Layout, ...] = (PlainLayout(), CifakeLayout(), Faces140kLayout(),
                               ForenSynthsLayout(), GenImageLayout(), ManifestLayout())


class LayoutError(errors.UserError):
  """The folder follows no layout this project reads; the message lists the ones it does."""


def detect(data_dir: str) -> Layout:
  """The one layout data_dir follows; LayoutError naming what was found and what is understood."""
  if not _isdir(data_dir):
    raise LayoutError(f'data_dir {data_dir!r} is not a folder.')
  found = [layout for layout in LAYOUTS if layout.matches(data_dir)]
  manifests = [layout for layout in found if isinstance(layout, ManifestLayout)]
  if manifests:
    found = manifests
  if len(found) == 1:
    return found[0].bind(data_dir)
  understood = '\n'.join(f'  - {layout.description}' for layout in LAYOUTS)
  if found:
    raise LayoutError(
        f'The folder {data_dir} matches several layouts '
        f'({", ".join(match.name for match in found)}); '
        f'keep only one of them at its top level. Layouts understood:\n{understood}')
  raise LayoutError(
      f'Unrecognised layout in {data_dir}: found {_describe_top(data_dir)}. '
      f'Layouts understood (folder names are case-insensitive):\n{understood}')


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


def _isdir(path: str) -> bool:
  if is_remote(path):
    from tfx.dsl.io import fileio  # pylint: disable=g-import-not-at-top
    return fileio.isdir(path)
  return os.path.isdir(path)


def _listdir(path: str) -> List[str]:
  if is_remote(path):
    from tfx.dsl.io import fileio  # pylint: disable=g-import-not-at-top
    return [name.rstrip('/') for name in fileio.listdir(path)]
  return os.listdir(path)


def _subfolders(path: str) -> Dict[str, str]:
  """Lower-cased name -> actual name of the folders directly in path."""
  try:
    if not is_remote(path):
      with os.scandir(path) as it:
        return {e.name.lower(): e.name for e in it if e.is_dir()}
    names = _listdir(path)
  except OSError:
    return {}
  return {name.lower(): name for name in names if _isdir(join(path, name))}


def _describe_top(data_dir: str, limit: int = 20) -> str:
  names = sorted(_listdir(data_dir))
  if not names:
    return 'an empty folder'
  shown = [n + '/' if _isdir(join(data_dir, n)) else n for n in names[:limit]]
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
