"""One file of the folder -> (split, bytes, what was read about it), or why it is quarantined.

The per-file work of the ExampleGen, without Beam: label from the layout, bytes, content hash,
the image checks (`image_checks`), the split. No TFX import, and TensorFlow only for `read`'s
decode and remote folders: the Beam workers run `inspect`.
"""

import hashlib
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

from fakedetect.components import features
from fakedetect.components import image_checks
from fakedetect.components.image_checks import ImageRejected
from fakedetect.components.image_example_gen import folders
from fakedetect.components.image_example_gen import layouts
from fakedetect.components.image_example_gen import splits

# What is known of an ingested image: path, hash, split, layout_split, class, label, source,
# format, mode, height, width.
Meta = Dict[str, Any]


def quarantine_record(rel_path: str, rejected: ImageRejected) -> Dict[str, str]:
  """One row of report.json's `quarantined` and of quarantine.csv."""
  return {'path': rel_path, 'reason': rejected.reason, 'detail': rejected.detail}


class ImageReader:
  """Reads and checks one file of a layout at a time; ImageRejected for the ones not ingested.

  `inspect` runs every check but TensorFlow's decode, without TensorFlow. `read` adds the decode
  (`image_checks.check_decodes`), one file at a time: the plain-loop benchmark calls it, and so
  do Beam workers on a distributed runner. On the direct runner the workers only inspect, and
  the launcher decodes what they wrote in batched passes (`verify`): the same check on the same
  bytes.
  """

  def __init__(self, data_dir: str, layout: layouts.Layout, plan: splits.SplitPlan,
               max_pixels: int):
    self._data_dir = data_dir
    self._layout = layout
    self._plan = plan
    # The limits predict, evaluate and serving apply: a file they refuse is not trained on.
    self._limits = image_checks.Limits(max_pixels=max_pixels)

  @staticmethod
  def setup(single_threaded: bool = False) -> None:
    """single_threaded: a Beam worker that decodes: parallelism comes from the workers, not
    from TensorFlow's thread pools."""
    if single_threaded:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
      except RuntimeError:  # TensorFlow already ran an op in this process
        pass

  def read(self, entry: folders.Entry, held_out: Optional[Mapping[str, str]] = None
           ) -> Tuple[str, bytes, Meta]:
    """(split, bytes, meta) of an image TensorFlow decodes, else ImageRejected.

    held_out: {content hash: layout split} for duplicate groups kept in one split.
    """
    split, data, meta = self.inspect(entry, held_out)
    image_checks.check_decodes(data, meta['format'])
    return split, data, meta

  def inspect(self, entry: folders.Entry, held_out: Optional[Mapping[str, str]] = None
              ) -> Tuple[str, bytes, Meta]:
    """`read` without the pixel decode, and without TensorFlow."""
    rel_path, problem = entry
    if problem:
      raise ImageRejected(*folders.problem_reason(problem))
    if folders.is_system_file(rel_path):
      raise ImageRejected('not_image', 'hidden or system file, not read')
    labelled = self._layout.parse(rel_path)
    if labelled is None:
      raise ImageRejected('unlabelled', f'not inside the class folders of the '
                          f'{self._layout.name} layout, so it has no label')
    data = image_checks.read_file(folders.join(self._data_dir, rel_path), self._limits.max_bytes)
    header = image_checks.check_header(data, self._limits.max_pixels)
    content_hash = hashlib.sha256(data).hexdigest()
    layout_split = (held_out or {}).get(content_hash, labelled.split)
    split = splits.assign_split(content_hash, self._plan[layout_split])
    meta = {'path': rel_path, 'hash': content_hash, 'split': split,
            'layout_split': labelled.split, 'class': features.LABEL_NAMES[labelled.label],
            'label': labelled.label, 'source': labelled.source, 'format': header.format,
            'mode': header.mode, 'height': header.height, 'width': header.width}
    return split, data, meta

  def hash_and_split(self, entry: folders.Entry) -> Iterator[Tuple[str, str]]:
    """(content hash, layout split) of a labelled readable file; nothing for the others."""
    rel_path, problem = entry
    labelled = None if problem or folders.is_system_file(rel_path) else self._layout.parse(
        rel_path)
    if labelled is None or labelled.split is None:
      return
    try:
      data = image_checks.read_file(folders.join(self._data_dir, rel_path), self._limits.max_bytes)
    except ImageRejected:
      return
    if data:
      yield hashlib.sha256(data).hexdigest(), labelled.split
