"""Grad-CAM on a pushed model: which regions pushed the classifier towards its answer.

The pushed SavedModel keeps the Keras classifier as the tracked attribute `model`, but
`tf.saved_model.load` restores it as plain trackables: its variables are there, its layers cannot
be called. So the classifier is rebuilt as a Keras model -- from `assets.extra/model.keras` when
the export carries one, else from the hyperparameters in `assets.extra/fakedetect.json` with
`components.model`, its weights read from the SavedModel's own checkpoint -- and checked against
the served `serving_default` on the same image before any heatmap is drawn.
"""

import dataclasses
import os
from typing import Optional

import numpy as np

from fakedetect.components import errors
from fakedetect.components import features
from fakedetect.components import image_checks

TARGETS = ('predicted', 'fake', 'real')
_MIN_SIDE = 256  # small images are drawn larger so the heatmap is visible
_AGREEMENT = 1e-3  # the rebuilt classifier must match serving_default this closely


class ExplainError(errors.UserError):
  """The model cannot be explained faithfully; the message says why."""


@dataclasses.dataclass
class Explanation:
  fake_probability: float
  label: str
  target: str  # the class the heatmap explains
  layer: str  # the convolution Grad-CAM was computed on
  heatmap: np.ndarray  # float [h, w] in [0, 1] at that layer's resolution


def load_classifier(version_dir: str):
  """The pushed model's Keras classifier, callable layer by layer."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fakedetect.components import model as model_lib  # pylint: disable=g-import-not-at-top
  from fakedetect.components import export  # pylint: disable=g-import-not-at-top
  keras_copy = os.path.join(version_dir, export.KERAS_FILE)
  if os.path.isfile(keras_copy):
    return keras.saving.load_model(keras_copy, compile=False)
  metadata = export.read_metadata(version_dir)
  if not metadata.get('hyperparameters'):
    raise ExplainError(f'{version_dir} has neither {export.KERAS_FILE} nor hyperparameters in '
                       f'{export.METADATA_FILE}: its classifier cannot be rebuilt.')
  model = model_lib.build_from_hparams(int(metadata['image_size']), metadata['hyperparameters'])
  checkpoint = tf.train.Checkpoint(model=model)
  try:
    status = checkpoint.read(os.path.join(version_dir, 'variables', 'variables'))
    status.assert_existing_objects_matched().expect_partial()  # the rest: optimizer, Transform
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    raise ExplainError(f'The weights in {version_dir} do not fit the architecture '
                       f'components/model.py builds from its hyperparameters: {e}') from None
  return model


def last_convolution(model):
  import keras  # pylint: disable=g-import-not-at-top
  convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
  if not convs:
    raise ExplainError(f'{model.name} has no convolution to compute Grad-CAM on.')
  return convs[-1]


def grad_cam(model, image: np.ndarray, target: int):
  """(heatmap [h, w] in [0, 1], fake probability, layer name) for one preprocessed image.

  Grad-CAM (Selvaraju et al.): the last convolution's feature maps, weighted by the mean gradient
  of the target class's probability over each map, summed, ReLU'd and scaled to [0, 1].
  """
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  conv = last_convolution(model)
  probe = keras.Model(model.inputs, [conv.output, model.outputs[0]])
  batch = tf.convert_to_tensor(image[np.newaxis], tf.float32)
  with tf.GradientTape() as tape:
    maps, probability = probe(batch, training=False)
    score = probability[:, 0] if target == features.FAKE else 1.0 - probability[:, 0]
  gradients = tape.gradient(score, maps)
  weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
  cam = tf.nn.relu(tf.reduce_sum(maps * weights, axis=-1))[0].numpy()
  peak = cam.max()
  return (cam / peak if peak > 0 else cam), float(probability[0, 0]), conv.name


def explain(version_dir: str, image_bytes: bytes, target: str = 'predicted', scorer=None,
            classifier=None, limits=None) -> Explanation:
  """Grad-CAM for one encoded image, after checking the classifier scores it as serving does.

  `scorer` (a scoring.Scorer of version_dir) and `classifier` may be passed in to explain many
  images with one load of each."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fakedetect.components import scoring  # pylint: disable=g-import-not-at-top
  if target not in TARGETS:
    raise ExplainError(f'target must be one of {", ".join(TARGETS)}, not {target!r}.')
  try:
    image_checks.check_image(image_bytes, limits or image_checks.Limits())
  except image_checks.ImageRejected as rejected:
    raise ExplainError(f'Cannot explain this file: {rejected}.') from None
  scorer = scorer or scoring.Scorer(version_dir)
  classifier = classifier or load_classifier(version_dir)
  scored = scorer.score_safely([image_bytes])[0]
  if scored.error:
    raise ExplainError(f'Cannot explain this file: {scored.error}.')
  served, decided = scored.fake_probability, scored.is_fake
  image = features.decode_and_resize(tf.constant([image_bytes]), scorer.image_size)[0].numpy()
  index = decided if target == 'predicted' else features.LABEL_NAMES.index(target)
  heatmap, probability, layer = grad_cam(classifier, image, index)
  if abs(probability - served) > _AGREEMENT:
    raise ExplainError(f'The rebuilt classifier scores this image {probability:.4f} but the '
                       f'served model {served:.4f}: the heatmap would not explain the served '
                       'model.')
  return Explanation(served, features.LABEL_NAMES[decided], features.LABEL_NAMES[index], layer,
                     heatmap)


def overlay(image_bytes: bytes, heatmap: np.ndarray, alpha: float = 0.45):
  """The image (decoded as serving decodes it) with the heatmap in the jet colour map on top."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  pixels = tf.io.decode_image(image_bytes, channels=features.CHANNELS,
                              expand_animations=False).numpy()
  height, width = pixels.shape[:2]
  scale = max(1.0, _MIN_SIDE / max(height, width))
  size = (round(width * scale), round(height * scale))
  base = Image.fromarray(pixels).resize(size, Image.NEAREST)
  cam = Image.fromarray((heatmap * 255).astype(np.uint8)).resize(size, Image.BILINEAR)
  colours = matplotlib.colormaps['jet'](np.asarray(cam) / 255.0)[..., :3]
  blended = (1 - alpha) * np.asarray(base, np.float32) / 255.0 + alpha * colours
  return Image.fromarray((np.clip(blended, 0, 1) * 255).astype(np.uint8))


def write_overlay(image_bytes: bytes, explanation: Explanation, path: str,
                  alpha: float = 0.45) -> str:
  overlay(image_bytes, explanation.heatmap, alpha).save(path, format='PNG')
  return path


def default_output(image_path: str, out_dir: Optional[str] = None) -> str:
  stem = os.path.splitext(os.path.basename(image_path))[0]
  return os.path.join(out_dir or '.', f'{stem}.gradcam.png')
