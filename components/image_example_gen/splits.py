"""Which split each image goes to: the split plan, content-hash assignment, duplicate policy.

Assignment is by content hash, never by path or order, so byte-identical files always share a
split and a rerun on the same folder puts every image where it was.
"""

import bisect
import json
import re
from typing import Dict, List, Mapping, Optional, Tuple, Union

DEFAULT_SPLIT_RATIOS = {'train': 70, 'eval': 15, 'test': 15}
_SPLIT_NAME = re.compile(r'^[A-Za-z0-9_-]+$')

# What to do with byte-identical files that a layout's own splits put in different splits.
SAME_SPLIT = 'same_split'  # default: the whole group goes to its most held-out split
KEEP_LAYOUT = 'keep_layout'  # honour the layout's splits; the leak is only reported
DUPLICATE_POLICIES = (SAME_SPLIT, KEEP_LAYOUT)
# Which split a duplicate group crossing the layout's splits is kept in: the most held-out one.
_HELD_OUT_ORDER = ('test', 'eval', 'train')

# Candidate (split, weight) pairs for a file, keyed by the layout's own split (None: no split).
SplitPlan = Dict[Optional[str], List[Tuple[str, int]]]


def parse_split_ratios(value: Union[None, str, Mapping[str, int]]) -> Dict[str, int]:
  """{split: positive int weight}, in order; weights are percent when they sum to 100."""
  ratios = json.loads(value) if isinstance(value, str) else dict(value or DEFAULT_SPLIT_RATIOS)
  if not isinstance(ratios, dict) or not ratios:
    raise ValueError(f'split_ratios must be a non-empty JSON object, got {value!r}.')
  for name, weight in ratios.items():
    if not _SPLIT_NAME.match(str(name)):
      raise ValueError(f'split name {name!r} must be letters, digits, - or _.')
    if not isinstance(weight, int) or isinstance(weight, bool) or weight <= 0:
      raise ValueError(f'split_ratios[{name!r}] must be a positive integer, got {weight!r}.')
  return ratios


def plan_splits(ratios: Dict[str, int],
                layout_splits: Tuple[str, ...]) -> Tuple[List[str], SplitPlan]:
  """Output split names and, per layout split, where its files may go.

  A layout without splits is split by content hash with `ratios`. A layout with splits keeps them;
  the ratio splits it lacks (e.g. eval for CIFAKE, test for GenImage) are carved out of its train
  split (or out of its only split) by content hash, with the weights in `ratios`.
  """
  if not layout_splits:
    return list(ratios), {None: list(ratios.items())}
  plan: SplitPlan = {s: [(s, 1)] for s in layout_splits}
  missing = [s for s in ratios if s not in layout_splits]
  # Carved out of the layout's train, or out of its only split (e.g. a test-only download).
  source = 'train' if 'train' in layout_splits else (
      layout_splits[0] if len(layout_splits) == 1 else None)
  if missing and source:
    if source not in ratios:
      raise ValueError(f'split_ratios {ratios} must weigh {source} to carve {missing} out of it.')
    plan[source] = [(source, ratios[source])] + [(s, ratios[s]) for s in missing]
  carved = {name for candidates in plan.values() for name, _ in candidates}
  names = [s for s in ratios if s in carved] + [s for s in layout_splits if s not in ratios]
  return names, plan


def describe_plan(names: List[str], plan: SplitPlan) -> Dict[str, str]:
  """{split: where its files come from}, in words, for the report."""
  out = {}
  for layout_split, candidates in plan.items():
    total = sum(weight for _, weight in candidates)
    for name, weight in candidates:
      if layout_split is None:
        out[name] = f'{weight}/{total} of all files, by content hash'
      elif len(candidates) == 1:
        out[name] = f"the layout's own {layout_split} split"
      elif name == layout_split:
        out[name] = (f"the layout's own {layout_split} split, less what was carved out of it "
                     f'({weight}/{total} kept, by content hash)')
      else:
        out[name] = (f"carved out of the layout's {layout_split} split by content hash "
                     f'({weight}/{total} of it): the layout has no {name} split')
  return {name: out[name] for name in names if name in out}


def assign_split(content_hash: str, candidates: List[Tuple[str, int]]) -> str:
  """Deterministic by content, so byte-identical files always share a split."""
  if len(candidates) == 1:
    return candidates[0][0]
  bounds, total = [], 0
  for _, weight in candidates:
    total += weight
    bounds.append(total)
  return candidates[bisect.bisect(bounds, int(content_hash, 16) % total)][0]


def held_out_split(layout_splits: List[str]) -> str:
  """Where a group of identical files found in all these layout splits is kept (SAME_SPLIT)."""
  ranked = [s for s in _HELD_OUT_ORDER if s in layout_splits]
  return ranked[0] if ranked else sorted(layout_splits)[0]
