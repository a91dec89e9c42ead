"""What the ingested images look like per class, and the warnings a user should read.

The tallies (`ProfileFn`) are counts, folded per Beam bundle and merged, so memory stays bounded
by the distinct values, not by the images. From them and the duplicate groups come report.json's
profiles and its warnings: class differences a model could learn instead of the content (format,
colour mode, size) and byte-identical files (leakage between splits, label noise).
"""

from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import apache_beam as beam

from fakedetect.components import features

# Share difference (total variation) between the classes that triggers a bias warning.
BIAS_THRESHOLD = 0.2
# Per class tallies: name -> meta key. Dimensions are counted per value (a dimension has few
# distinct values), so the medians are exact and memory stays bounded by the distinct sizes.
_PROFILE_KEYS = {'sources': 'source', 'formats': 'format', 'modes': 'mode',
                 'size_buckets': None, 'widths': 'width', 'heights': 'height'}
# (content hash, path, split, layout split, class) of an ingested image: the duplicate index.
HashRecord = Tuple[str, str, str, Optional[str], str]


class ProfileFn(beam.CombineFn):
  """Counts per split and class, and per class sources, formats, modes and sizes."""

  def create_accumulator(self):
    return {'counts': {}, 'classes': {}}

  def add_input(self, mutable_accumulator, element):
    return ProfileFn.fold(mutable_accumulator, element)

  @staticmethod
  def fold(acc, meta, n: int = 1):
    """Counts one image (n=-1: takes one back, as if it had never been counted)."""
    by_class = acc['counts'].setdefault(meta['split'], {})
    by_class[meta['class']] = by_class.get(meta['class'], 0) + n
    tables = acc['classes'].setdefault(meta['class'], {k: {} for k in _PROFILE_KEYS})
    for table, key in _PROFILE_KEYS.items():
      value = (features.size_bucket(meta['height'], meta['width']) if key is None
               else meta[key])
      tables[table][value] = tables[table].get(value, 0) + n
      if not tables[table][value]:
        del tables[table][value]
    if not tables['formats']:
      del acc['classes'][meta['class']]
    return acc

  def merge_accumulators(self, accumulators):
    out = self.create_accumulator()
    for acc in accumulators:
      for split, by_class in acc['counts'].items():
        mine = out['counts'].setdefault(split, {})
        for name, n in by_class.items():
          mine[name] = mine.get(name, 0) + n
      for name, tables in acc['classes'].items():
        mine = out['classes'].setdefault(name, {k: {} for k in _PROFILE_KEYS})
        for table, values in tables.items():
          for value, n in values.items():
            mine[table][value] = mine[table].get(value, 0) + n
    return out

  def extract_output(self, accumulator):
    return accumulator


class MergeProfiles(ProfileFn):
  """Combines the per-bundle ProfileFn accumulators the workers emit."""

  def add_input(self, mutable_accumulator, element):
    return self.merge_accumulators([mutable_accumulator, element])


def _median(histogram: Dict[int, int]) -> float:
  """The median of the values a {value: count} histogram holds."""
  total = sum(histogram.values())
  wanted = {(total - 1) // 2, total // 2}
  picked, seen = [], 0
  for value in sorted(histogram):
    start, seen = seen, seen + histogram[value]
    picked += [value for i in wanted if start <= i < seen]
  return sum(picked) / len(picked)


def _shares(counts: Dict[str, int]) -> Dict[str, float]:
  total = sum(counts.values())
  return {k: round(n / total, 4) for k, n in sorted(counts.items(), key=lambda kv: -kv[1])}


def class_profile(tables: Dict[str, Dict[Any, int]]) -> Dict[str, Any]:
  """What report.json says about one class: shares of formats, modes, size buckets; sizes."""
  n = sum(tables['formats'].values())
  return {
      'images': n,
      'format_shares': _shares(tables['formats']),
      'mode_shares': _shares(tables['modes']),
      'size_bucket_shares': _shares(tables['size_buckets']),
      'width': {'min': min(tables['widths']), 'median': _median(tables['widths']),
                'max': max(tables['widths'])},
      'height': {'min': min(tables['heights']), 'median': _median(tables['heights']),
                 'max': max(tables['heights'])},
  }


def _describe_shares(shares: Dict[str, float], upper: bool) -> str:
  shown = [f'{share:.0%} {name.upper() if upper else name}'
           for name, share in shares.items() if share >= 0.005]
  return ', '.join(shown[:3]) + (', ...' if len(shown) > 3 else '')


def _distance(a: Dict[str, float], b: Dict[str, float]) -> float:
  """Total variation distance between two share tables: 0 same, 1 disjoint."""
  return sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b)) / 2


def bias_warnings(profile: Dict[str, Dict[str, Any]]) -> List[str]:
  """Sentences on what differs between the classes besides their content."""
  if not all(name in profile for name in features.LABEL_NAMES):
    return []
  real, fake = (profile[name] for name in features.LABEL_NAMES)
  names = features.LABEL_NAMES
  out = []
  for key, upper, what in (
      ('format_shares', True, 'the container (file format and its compression) instead of '
       'the content'),
      ('mode_shares', False, 'the colour mode (greyscale, alpha, palette) instead of the content')):
    if _distance(real[key], fake[key]) >= BIAS_THRESHOLD:
      out.append(f'{names[0]} is {_describe_shares(real[key], upper)} but {names[1]} is '
                 f'{_describe_shares(fake[key], upper)}: a model can learn {what}.')
  size = {name: (profile[name]['width']['median'], profile[name]['height']['median'])
          for name in names}
  ratio = max(max(a, b) / max(min(a, b), 1) for a, b in zip(*size.values()))
  if (ratio >= 1.5 or _distance(real['size_bucket_shares'], fake['size_bucket_shares'])
      >= BIAS_THRESHOLD):
    out.append(
        f'{names[0]} images have a median size of {size[names[0]][0]:g}x{size[names[0]][1]:g} '
        f'({_describe_shares(real["size_bucket_shares"], False)}) but {names[1]} '
        f'{size[names[1]][0]:g}x{size[names[1]][1]:g} '
        f'({_describe_shares(fake["size_bucket_shares"], False)}): a model can learn the image '
        'size (and resizing traces) instead of the content.')
  return out


def duplicate_groups(item: Tuple[str, Iterable[List[HashRecord]]]) -> Iterator[Dict[str, Any]]:
  """(hash prefix, [HashRecords of each bundle]) -> the groups of identical files in them."""
  _, batches = item
  by_hash: Dict[str, List[HashRecord]] = {}
  for records in batches:
    for record in records:
      by_hash.setdefault(record[0], []).append(record)
  for content_hash, members in by_hash.items():
    if len(members) > 1:
      splits = sorted({split for _, _, split, _, _ in members})
      layout_splits = {s for _, _, _, s, _ in members if s is not None}
      classes = sorted({class_name for _, _, _, _, class_name in members})
      yield {'content_hash': content_hash, 'paths': sorted(path for _, path, _, _, _ in members),
             'splits': splits, 'crosses_splits': len(splits) > 1,
             'kept_in_one_split': len(layout_splits) > 1 and len(splits) == 1,
             'classes': classes, 'crosses_classes': len(classes) > 1}


def duplicate_warnings(groups: List[Dict[str, Any]]) -> List[str]:
  out = []
  moved = [g for g in groups if g['kept_in_one_split']]
  crossing = [g for g in groups if g['crosses_splits']]
  labels = [g for g in groups if g['crosses_classes']]
  if moved:
    out.append(f"{len(moved)} group(s) of byte-identical files lay in more than one of the "
               "layout's splits; each group was kept in its most held-out split to prevent "
               f"leakage, e.g. {', '.join(moved[0]['paths'][:3])} -> {moved[0]['splits'][0]}.")
  if crossing:
    out.append(f'{len(crossing)} group(s) of byte-identical files are in more than one split '
               f"(leakage: evaluation sees training images), e.g. "
               f"{', '.join(crossing[0]['paths'][:3])} in {' and '.join(crossing[0]['splits'])}.")
  if labels:
    out.append(f'{len(labels)} group(s) of byte-identical files carry both labels (label '
               f"noise), e.g. {', '.join(labels[0]['paths'][:3])}.")
  quiet = [g for g in groups if not (g['crosses_splits'] or g['crosses_classes'])]
  if quiet:
    out.append(f'{len(quiet)} group(s) of byte-identical files '
               f"({sum(len(g['paths']) for g in quiet)} files) stay within one split and class; "
               'they do not leak, but each copy weighs again in training and metrics, e.g. '
               f"{', '.join(quiet[0]['paths'][:3])}.")
  return out
