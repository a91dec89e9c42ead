"""Scoring encoded images through a pushed model's `serving_default`, as TF Serving runs it.

The one place that calls the serving signature and reads its outputs (the names are
components/export.py's). `fakedetect predict`, `evaluate`, `explain` and the RobustnessGate all
score through a Scorer, so every verdict is the model's own `is_fake` at the threshold exported
with it, never recomputed beside it, and every caller's bytes go in as a client posting them to
TF Serving would send them.
"""

import dataclasses
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from fakedetect.components import errors
from fakedetect.components import export
from fakedetect.components import image_checks
from fakedetect.components import views


class ModelError(errors.UserError):
  """The folder holds no model exported by components/export.py."""


@dataclasses.dataclass(frozen=True)
class Scored:
  """One image's answer: P(fake) and the model's verdict (1 = fake), or why it has none."""
  fake_probability: Optional[float] = None
  is_fake: Optional[int] = None
  error: Optional[str] = None


class Scorer:
  """A pushed SavedModel, loaded once per caller; its threshold and view are read from its
  `metadata` signature, so they are the values its graph decides with."""

  def __init__(self, model_dir: str):
    self.model_dir = model_dir
    self.saved_model = tf.saved_model.load(model_dir)
    missing = [name for name in (export.SERVING_SIGNATURE, export.METADATA_SIGNATURE)
               if name not in self.saved_model.signatures]
    if missing:
      raise ModelError(
          f'{model_dir} has no {" or ".join(missing)} signature, so it is not a model '
          '`fakedetect run` exported: pass --model a version folder under '
          '<output>/serving_model/.')
    self._serve = self.saved_model.signatures[export.SERVING_SIGNATURE]
    metadata = self.saved_model.signatures[export.METADATA_SIGNATURE]()
    self.threshold = float(metadata['threshold'])
    self.view = views.from_metadata(metadata)

  def score(self, images: Sequence[bytes], batch_size: int = 64
            ) -> Tuple[np.ndarray, np.ndarray]:
    """(fake_probability float32 [n], is_fake int64 [n]), one signature call per batch.

    Raises what the signature raises when it refuses a batch (an image over the serving
    limits, bytes that do not decode): for callers whose images were checked before (the gate's
    ingested examples, evaluate's files), where a refusal is a bug to see, not a row to write.
    """
    probabilities = [np.zeros([0], np.float32)]
    decisions = [np.zeros([0], np.int64)]
    for start in range(0, len(images), batch_size):
      out = self._serve(image_bytes=tf.constant(list(images[start:start + batch_size]),
                                                dtype=tf.string))
      probabilities.append(out[export.PROBABILITY_KEY].numpy())
      decisions.append(out[export.DECISION_KEY].numpy())
    return np.concatenate(probabilities), np.concatenate(decisions)

  def score_safely(self, images: Sequence[bytes], batch_size: int = 64) -> List[Scored]:
    """One Scored per image, in order. A batch the signature refuses is retried image by image,
    so one bad file costs its own row, not its batch's."""
    results: List[Scored] = []
    for start in range(0, len(images), batch_size):
      batch = images[start:start + batch_size]
      try:
        probabilities, decisions = self.score(batch, batch_size)
      except Exception as e:  # pylint: disable=broad-except  (whatever TF raises: one row each)
        if len(batch) > 1:
          results += [scored for image in batch for scored in self.score_safely([image])]
        else:
          results.append(Scored(error='the model refused it: ' + refusal(e)))
        continue
      results += [Scored(float(p), int(d)) for p, d in zip(probabilities, decisions)]
    return results


def refusal(error: Exception) -> str:
  """Why serving_default refused an image, in one line: the reason the signature gives for the
  image it names (export.refused_image), else the op's own message, without the 'Graph execution
  error' preamble a signature call adds, nor the ' : Tensor had Inf values' of a check."""
  refused = export.refused_image(error)
  if refused is not None:
    return refused[1]
  lines = str(getattr(error, 'message', error)).splitlines()
  node = next((i for i, line in enumerate(lines) if line.lstrip().startswith('[[')), 0)
  if lines and lines[0].startswith('Graph execution error') and node > 0:
    return lines[node - 1].replace(' : Tensor had Inf values', '').strip()
  return image_checks.error_message(error)
