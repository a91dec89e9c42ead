"""Which folder names say which class: the names users give (ai/, human/, synthetic/, ...) or the
user's own (`data.fake_dirs`, `data.real_dirs`).

Layouts that label by class folder (plain, cifake, 140k_faces) ask `ClassNames` what a folder
means; a folder read under a silently chosen meaning would train on wrong labels, so every doubt
(a name given for both classes, two built-in names for one class side by side) is a LayoutError
naming the folders and the settings that settle it.
"""

import dataclasses
import json
from typing import Dict, List, Optional, Sequence, Tuple, Union

from fakedetect.components import errors
from fakedetect.components import features

# The names users give class folders, compared in lower case. nature/ and ai/ are GenImage's
# (its own layout reads them under split folders; here they work as plain class folders too).
BUILTIN = {
    features.REAL: ('real', 'human', 'authentic', 'nature'),
    features.FAKE: ('fake', 'ai', 'ai_generated', 'ai-generated', 'generated', 'synthetic'),
}
SETTINGS = {features.REAL: 'data.real_dirs', features.FAKE: 'data.fake_dirs'}


class LayoutError(errors.UserError):
  """The folder follows no layout this project reads, or reads ambiguously; the message says
  what was found and what is understood."""


def _names(value: Union[None, str, Sequence[str]], setting: str) -> Tuple[str, ...]:
  """Folder names, lower case, from a list or its JSON (an exec property) or a, b, c text."""
  if isinstance(value, str):
    value = json.loads(value) if value.strip().startswith('[') else value.split(',')
  names = tuple(str(name).strip().strip('/').lower() for name in value or ())
  for name in names:
    if not name or '/' in name or name in ('.', '..'):
      raise LayoutError(f'{setting}: {name!r} is not a folder name; give names of folders '
                        f'(comma-separated, no "/"), e.g. --set {setting}=gan_out,diffusion.')
  return tuple(dict.fromkeys(names))


@dataclasses.dataclass(frozen=True)
class ClassNames:
  """The class folder names in force. Empty fake_dirs / real_dirs: the built-in names."""
  fake_dirs: Tuple[str, ...] = ()
  real_dirs: Tuple[str, ...] = ()

  def __post_init__(self):
    object.__setattr__(self, 'fake_dirs', _names(self.fake_dirs, SETTINGS[features.FAKE]))
    object.__setattr__(self, 'real_dirs', _names(self.real_dirs, SETTINGS[features.REAL]))
    both = sorted(set(self.names(features.REAL)) & set(self.names(features.FAKE)))
    if both:
      given = ' and '.join(f'{SETTINGS[label]}={",".join(self.names(label))}'
                           + ('' if self.explicit(label) else ' (built-in)')
                           for label in (features.REAL, features.FAKE))
      raise LayoutError(f'The folder name(s) {", ".join(both)} would mean both real and fake '
                        f'({given}): name each folder for one class only, e.g. --set '
                        f'{SETTINGS[features.REAL]}=... and --set {SETTINGS[features.FAKE]}=...')

  def explicit(self, label: int) -> bool:
    """Whether the user named this class's folders."""
    return bool(self.fake_dirs if label == features.FAKE else self.real_dirs)

  def names(self, label: int) -> Tuple[str, ...]:
    given = self.fake_dirs if label == features.FAKE else self.real_dirs
    return given or BUILTIN[label]

  def label_of(self, name: str) -> Optional[int]:
    lower = name.lower()
    return next((label for label in BUILTIN if lower in self.names(label)), None)

  def present(self, subfolders: Dict[str, str]) -> Dict[int, List[str]]:
    """{label: actual folder names} among a folder's subfolders ({lower: actual})."""
    found: Dict[int, List[str]] = {}
    for lower, actual in sorted(subfolders.items()):
      label = self.label_of(lower)
      if label is not None:
        found.setdefault(label, []).append(actual)
    return found

  def pick(self, subfolders: Dict[str, str], where: str) -> Dict[int, List[str]]:
    """`present`, refusing two built-in names for one class side by side (ai/ and fake/): which
    one holds that class is the user's to say. Several names the user gave are all read."""
    found = self.present(subfolders)
    for label, actual in found.items():
      if len(actual) > 1 and not self.explicit(label):
        name = features.LABEL_NAMES[label]
        raise LayoutError(
            f'{where} has {len(actual)} folders that each could hold the {name} images: '
            f'{", ".join(a + "/" for a in actual)}. Keep one, or say which to read: '
            f'--set {SETTINGS[label]}={",".join(a.lower() for a in actual)} reads them all '
            f'as {name}.')
    return found

  def source_of(self, parts: List[str], depth: int, label: int) -> str:
    """The first folder below the class folder names the source; else the class folder itself
    when the user named several for the class (gan_out/, diffusion/); else the class."""
    if len(parts) > depth + 2:
      return parts[depth + 1]
    if self.explicit(label) and len(self.names(label)) > 1:
      return parts[depth]
    return features.LABEL_NAMES[label]

  def describe(self) -> str:
    """The names in force and the settings, for the "Unrecognised layout" message."""
    lines = [f'    {features.LABEL_NAMES[label]}: '
             f'{", ".join(name + "/" for name in self.names(label))}'
             + ('' if self.explicit(label) else f' (or your own: --set {SETTINGS[label]}=a,b)')
             for label in (features.REAL, features.FAKE)]
    return 'Class folder names (case-insensitive):\n' + '\n'.join(lines)


def folders_by_class(found: Dict[int, List[str]], prefix: str = '') -> Dict[str, List[str]]:
  """{class name: [folder/, ...]} for report.json: which folder became which class."""
  return {features.LABEL_NAMES[label]: [f'{prefix}{name}/' for name in names]
          for label, names in sorted(found.items())}
