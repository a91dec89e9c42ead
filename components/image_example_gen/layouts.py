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
import os
import posixpath
from typing import Dict, List, Optional, Tuple

from fakedetect.components import features
from fakedetect.components.image_example_gen import classes as classes_lib
from fakedetect.components.image_example_gen import folders
from fakedetect.components.image_example_gen.classes import ClassNames
from fakedetect.components.image_example_gen.classes import LayoutError

# Split folder names (lower case) -> the pipeline's split names.
SPLIT_FOLDERS = {'train': 'train', 'val': 'eval', 'valid': 'eval', 'validation': 'eval',
                 'test': 'test'}
_SPLIT_ORDER = ('train', 'eval', 'test')

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
  classes: ClassNames = ClassNames()  # the class folder names in force (detect sets them)
  class_folders: Dict[str, List[str]] = {}  # once bound: {class: [folder/, ...]}, for the report

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

  def _copy(self, **attributes) -> 'Layout':
    bound = copy.copy(self)
    for name, value in attributes.items():
      setattr(bound, name, value)
    return bound

  def with_classes(self, class_names: ClassNames) -> 'Layout':
    return self._copy(classes=class_names)

  def list_files(self, data_dir: str, follow_outside_links: bool = False) -> List[folders.Entry]:
    """Every file to account for. The manifest layout lists its rows instead of walking."""
    return folders.list_files(data_dir, follow_outside_links)


def _splits_present(names) -> Tuple[str, ...]:
  """Pipeline split names of the split folders among names (lower case), in canonical order."""
  present = {SPLIT_FOLDERS[n] for n in names if n in SPLIT_FOLDERS}
  return tuple(s for s in _SPLIT_ORDER if s in present)


class PlainLayout(Layout):
  """real/[<source>/...]file and fake/[<generator>/...]file."""

  name = 'plain'
  description = ('plain: real/ and fake/ at the top (or other class folder names, below), each '
                 'optionally with sub-folders naming the source (fake/<generator>/...); split by '
                 'content hash')

  def matches(self, data_dir: str) -> bool:
    return len(self.classes.present(folders.subfolders(data_dir))) == 2

  def bind(self, data_dir: str) -> Layout:
    found = self.classes.pick(folders.subfolders(data_dir), data_dir)
    return self._copy(class_folders=classes_lib.folders_by_class(found))

  def parse(self, rel_path: str) -> Optional[Labelled]:
    parts = rel_path.split('/')
    label = self.classes.label_of(parts[0])
    if label is None or len(parts) < 2:
      return None
    return Labelled(label, self.classes.source_of(parts, 0, label))


class _TopSplitsLayout(Layout):
  """A layout whose top folders are its splits (train, val|valid, test): it has those present."""

  def bind(self, data_dir: str) -> Layout:
    return self._copy(splits=_splits_present(folders.subfolders(data_dir)))


class SplitClassLayout(_TopSplitsLayout):
  """<split>/<class>/...: CIFAKE (train|test/REAL|FAKE) and 140k faces (train|valid|test/real|fake).

  The two are one shape; they differ only in their splits, so the name follows the folder: a
  val/valid folder makes it 140k faces. The folder's splits are kept (val/valid -> eval); the
  ratio splits it lacks are carved out of its train by content hash.
  """

  _with_eval = False

  def matches(self, data_dir: str) -> bool:
    top = folders.subfolders(data_dir)
    present = [name for name in top if name in SPLIT_FOLDERS]
    if not present or any(SPLIT_FOLDERS[n] == 'eval' for n in present) != self._with_eval:
      return False
    return all(len(self.classes.present(folders.subfolders(folders.join(data_dir, top[n])))) == 2
               for n in present)

  def bind(self, data_dir: str) -> Layout:
    by_class: Dict[str, List[str]] = {}
    for lower, actual in sorted(folders.subfolders(data_dir).items()):
      if lower in SPLIT_FOLDERS:
        split_dir = folders.join(data_dir, actual)
        found = self.classes.pick(folders.subfolders(split_dir), split_dir)
        for name, paths in classes_lib.folders_by_class(found, actual + '/').items():
          by_class.setdefault(name, []).extend(paths)
    return super().bind(data_dir)._copy(class_folders=by_class)

  def parse(self, rel_path: str) -> Optional[Labelled]:
    parts = rel_path.split('/')
    split = SPLIT_FOLDERS.get(parts[0].lower())
    if len(parts) < 3 or split not in self.splits:
      return None
    label = self.classes.label_of(parts[1])
    if label is None:
      return None
    return Labelled(label, self.classes.source_of(parts, 1, label), split)


class CifakeLayout(SplitClassLayout):
  name = 'cifake'
  description = ('cifake: train/ and/or test/ at the top, each with REAL/ and FAKE/ (or other '
                 'class folder names) inside; test stays test, eval is carved out of train by '
                 'content hash')
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


def _fixed_class_folders(names: Dict[str, int]) -> Dict[str, List[str]]:
  """report.json's class_folders of a layout whose class folder names are fixed."""
  return classes_lib.folders_by_class({label: [name] for name, label in names.items()})


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
  class_folders = _fixed_class_folders(_FORENSYNTHS_CLASSES)

  def matches(self, data_dir: str) -> bool:
    top = folders.subfolders(data_dir)
    present = [top[n] for n in top if n in SPLIT_FOLDERS]
    return bool(present) and all(
        _has_class_folder(folders.join(data_dir, folder), _FORENSYNTHS_CLASSES, depth=3)
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
  class_folders = _fixed_class_folders(_GENIMAGE_CLASSES)

  def matches(self, data_dir: str) -> bool:
    top = folders.subfolders(data_dir)
    if not top or any(n in SPLIT_FOLDERS or self.classes.label_of(n) is not None for n in top):
      return False
    return any(self._split_roots(folders.join(data_dir, folder)) for folder in top.values())

  def _split_roots(self, generator_dir: str) -> List[str]:
    """Split folders holding ai/ or nature/, directly in generator_dir or one level down."""
    found = []
    for level in (generator_dir, *[folders.join(generator_dir, f)
                                   for f in folders.subfolders(generator_dir).values()]):
      for name, actual in folders.subfolders(level).items():
        if name in SPLIT_FOLDERS and set(folders.subfolders(folders.join(level, actual))) & set(
            _GENIMAGE_CLASSES):
          found.append(name)
      if found:
        break
    return found

  def bind(self, data_dir: str) -> Layout:
    names = [n for folder in folders.subfolders(data_dir).values()
             for n in self._split_roots(folders.join(data_dir, folder))]
    return self._copy(splits=_splits_present(names))

  def parse(self, rel_path: str) -> Optional[Labelled]:
    parts = rel_path.split('/')
    lower = [p.lower() for p in parts[:-1]]
    for i in (1, 2):
      if (i + 1 < len(lower) and SPLIT_FOLDERS.get(lower[i]) in self.splits
          and lower[i + 1] in _GENIMAGE_CLASSES):
        return Labelled(_GENIMAGE_CLASSES[lower[i + 1]], parts[0], SPLIT_FOLDERS[lower[i]])
    return None


# Labels a manifest may give, lower case, besides the class folder names in force.
_MANIFEST_LABELS = {'real': features.REAL, '0': features.REAL, 'nature': features.REAL,
                    'fake': features.FAKE, '1': features.FAKE, 'ai': features.FAKE}


class ManifestLayout(Layout):
  """A CSV at the top of data_dir with a header `path,label[,generator]`: anything else.

  Paths are relative to data_dir (an absolute path must lead inside it); labels real|fake, 0|1
  or a class folder name (ai, human, ...). The files found are the manifest's rows: a row whose
  file is missing is quarantined as unreadable, a row without a valid label as unlabelled, a
  path leaving the folder (../x.jpg, /etc/hostname) as outside_data_folder and never read, so
  every row is accounted for. Splits by content hash. When data_dir has a manifest it wins over
  the folder names: a manifest is an explicit statement.
  """

  name = 'manifest'
  description = ('manifest: one CSV file at the top with a header path,label[,generator] '
                 '(label real|fake or 0|1, paths relative to the folder and inside it); split '
                 'by content hash')

  def __init__(self):
    self.manifest = ''
    self._rows: Dict[str, Labelled] = {}
    self._problems: Dict[str, str] = {}  # {path or manifest:line: Entry problem}

  def matches(self, data_dir: str) -> bool:
    return len(self._candidates(data_dir)) == 1

  def _candidates(self, data_dir: str) -> List[str]:
    try:
      names = sorted(folders.listdir(data_dir))
    except OSError:
      return []
    return [n for n in names if n.lower().endswith('.csv')
            and not folders.isdir(folders.join(data_dir, n))
            and {'path', 'label'} <= set(_csv_header(folders.join(data_dir, n)))]

  def bind(self, data_dir: str) -> Layout:
    """Reads the manifest once, in the driver; the workers get {path: label} with the layout."""
    bound = ManifestLayout()
    bound.classes = self.classes
    bound.manifest = self._candidates(data_dir)[0]
    with folders.open_text(folders.join(data_dir, bound.manifest)) as f:
      for line, row in enumerate(csv.DictReader(f), start=2):
        bound._add(data_dir, line, row)
    for path in bound._problems:
      bound._rows.pop(path, None)
    return bound

  def _add(self, data_dir: str, line: int, row: Dict[str, str]) -> None:
    where = f'{self.manifest} line {line}'
    given = (row.get('path') or '').strip().replace(os.sep, '/')
    if not given:
      self._problems[f'{self.manifest}:{line}'] = folders.UNLABELLED + 'manifest row without a path'
      return
    path = folders.relative_inside(data_dir, given)
    if path is None:
      self._problems[given if folders.is_remote(given) else posixpath.normpath(given)] = (
          f'{folders.OUTSIDE}{where}: {given!r} is outside the data folder, not read (manifest '
          'paths are relative to the folder and stay inside it)')
      return
    text = (row.get('label') or '').strip().lower()
    label = _MANIFEST_LABELS.get(text, self.classes.label_of(text) if text else None)
    source = (row.get('generator') or '').strip()
    if label is None:
      self._problems[path] = (f'{folders.UNLABELLED}{where}: label {row.get("label")!r} is not '
                              'real/fake/0/1')
      return
    labelled = Labelled(label, source or features.LABEL_NAMES[label])
    if self._rows.get(path, labelled) != labelled:
      self._problems[path] = f'{folders.UNLABELLED}{where}: listed again with another label'
    self._rows.setdefault(path, labelled)

  def list_files(self, data_dir: str, follow_outside_links: bool = False) -> List[folders.Entry]:
    outside = {} if follow_outside_links else folders.links_outside(data_dir, self._rows)
    entries = [(path, outside.get(path)) for path in self._rows]
    entries += list(self._problems.items())
    return sorted(folders.utf8(rel, problem) for rel, problem in entries)

  def parse(self, rel_path: str) -> Optional[Labelled]:
    return self._rows.get(rel_path)


def _csv_header(path: str) -> List[str]:
  try:
    with folders.open_text(path) as f:
      return [name.strip().lower() for name in next(csv.reader(f), [])]
  except (OSError, UnicodeDecodeError, csv.Error):
    return []


def _has_class_folder(folder: str, classes, depth: int) -> bool:
  """Whether one of classes is a folder within depth levels below folder."""
  sub = folders.subfolders(folder)
  if set(sub) & set(classes):
    return True
  return depth > 1 and any(_has_class_folder(folders.join(folder, actual), classes, depth - 1)
                           for actual in sub.values())


# Order matters only for the error message; detection requires exactly one match, except that a
# manifest wins over folder names.
LAYOUTS: Tuple[Layout, ...] = (PlainLayout(), CifakeLayout(), Faces140kLayout(),
                               ForenSynthsLayout(), GenImageLayout(), ManifestLayout())


def detect(data_dir: str, class_names: Optional[ClassNames] = None) -> Layout:
  """The one layout data_dir follows, with class_names (default: the built-in class folder
  names); LayoutError naming what was found and what is understood."""
  if not folders.isdir(data_dir):
    raise LayoutError(f'data_dir {data_dir!r} is not a folder.')
  class_names = class_names or ClassNames()
  found = [layout for layout in (layout.with_classes(class_names) for layout in LAYOUTS)
           if layout.matches(data_dir)]
  manifests = [layout for layout in found if isinstance(layout, ManifestLayout)]
  if manifests:
    found = manifests
  if len(found) == 1:
    return found[0].bind(data_dir)
  understood = '\n'.join(f'  - {layout.description}' for layout in LAYOUTS)
  understood += '\n' + class_names.describe()
  if found:
    raise LayoutError(
        f'The folder {data_dir} matches several layouts '
        f'({", ".join(match.name for match in found)}); '
        f'keep only one of them at its top level. Layouts understood:\n{understood}')
  raise LayoutError(
      f'Unrecognised layout in {data_dir}: found {folders.describe_top(data_dir)}. '
      f'Layouts understood (folder names are case-insensitive):\n{understood}')
