"""`auto` settings: what measured best on each kind of folder, chosen before the pipeline is built.

The choice is recorded as ordinary settings (the `--set` strings it applied), so the Transform and
Trainer only ever see concrete values, ML Metadata records them, and a user who disagrees sets them
explicitly: settings a user gave always win over a preset.

Kinds of folder, by the median longer side of a sample of their images:
  thumbnails  (<= THUMBNAIL_MAX_SIDE px, e.g. CIFAKE's 32 px): today's recipe, unchanged: the whole
              image at 32 px into the small CNN, the forensic augmentation, early stopping on loss.
  photos      (anything larger: FFHQ/StyleGAN faces, camera photos, the demo set): the preset in
              PHOTOS, measured with benchmarks/resolution.py (README, Results).
"""

import io
import statistics
from typing import Dict, List, Optional, Sequence, Tuple
import warnings

from fakedetect.components import views
from fakedetect.components.image_example_gen import folders
from fakedetect.components.image_example_gen import layouts

THUMBNAIL_MAX_SIDE = 64
SAMPLE_FILES = 64
HEADER_BYTES = 256 * 1024  # enough for any header, EXIF included, without reading whole photos

THUMBNAILS: Dict[str, str] = {
    'image.view': views.GLOBAL,
    'model.backbone': 'cnn',
}
# Measured on faces-stylegan-256 (README, Results): the CIFAKE recipe's JPEG / blur / colour
# augmentation and early stopping on loss cost several points of AUC on content-matched photos;
# the residual net on 128 px matched a 4-block CNN on 64 px (AUC 0.827 against 0.834) in 2.2x less
# pipeline time (736 s against 1,650 s on 2 cores).
PHOTOS: Dict[str, str] = {
    'image.view': views.GLOBAL,
    'image.size': '128',
    'model.backbone': 'resnet',
    'train.width': '16',
    'train.depth': '4',
    'train.learning_rate': '0.001',
    'train.weight_decay': '0.0001',
    'train.color_jitter': '0',
    'train.jpeg_fraction': '0',
    'train.blur_fraction': '0',
    'train.early_stopping_metric': 'val_auc',
    'train.early_stopping_patience': '10',
}


def needs_resolving(config) -> bool:
  return config.image.view == views.AUTO or config.model.backbone == 'auto'


def sample_sides(data_dir: str, count: int = SAMPLE_FILES, class_names=None) -> List[int]:
  """Longer sides of up to `count` labelled images spread over the folder (headers only);
  class_names: the data.fake_dirs / data.real_dirs in force (DataConfig.class_names())."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  layout = layouts.detect(data_dir, class_names)
  labelled = [rel for rel, problem in layout.list_files(data_dir)
              if problem is None and layout.parse(rel) is not None]
  step = max(1, len(labelled) // count)
  sides = []
  for rel in labelled[::step][:count]:
    try:
      with folders.open_binary(folders.join(data_dir, rel)) as f:
        head = f.read(HEADER_BYTES)
      with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        sides.append(max(Image.open(io.BytesIO(head)).size))
    except Exception:  # pylint: disable=broad-except
      continue  # broken files are the ExampleGen's to report
  return sides


def folder_kind(sides: Sequence[int]) -> str:
  if not sides or statistics.median(sides) <= THUMBNAIL_MAX_SIDE:
    return 'thumbnails'
  return 'photos'


def resolve(config, explicit: Sequence[str] = (),
            sides: Optional[Sequence[int]] = None) -> Tuple[object, List[str]]:
  """(config with no `auto` left, the `--set` strings applied); `explicit` are the user's `--set`
  strings, whose keys the preset leaves alone. `sides`: the folder's sample, read here if None;
  a folder that cannot be read here (a bucket only the platform reaches) gets the thumbnail
  recipe, today's behaviour, and the CLI says so."""
  if not needs_resolving(config):
    return config, []
  if sides is None:
    try:
      sides = sample_sides(config.data.data_dir, class_names=config.data.class_names())
    except Exception:  # pylint: disable=broad-except
      sides = []
  preset = THUMBNAILS if folder_kind(sides) == 'thumbnails' else PHOTOS
  given = {item.partition('=')[0].strip() for item in explicit}
  applied = [f'{key}={value}' for key, value in preset.items() if key not in given]
  config = config.with_overrides(applied)
  # A setting the user left at auto that the preset does not decide: today's behaviour.
  leftovers = []
  if config.image.view == views.AUTO:
    leftovers.append(f'image.view={views.GLOBAL}')
  if config.model.backbone == 'auto':
    leftovers.append('model.backbone=cnn')
  return config.with_overrides(leftovers), applied + leftovers


def describe(applied: Sequence[str], sides: Sequence[int] = ()) -> str:
  what = ' '.join(applied)
  if not sides:
    return f'auto settings: {what}'
  median = statistics.median(sides)
  return (f'auto settings for a folder of {folder_kind(sides)} (median {median:.0f} px on the '
          f'longer side): {what}')
