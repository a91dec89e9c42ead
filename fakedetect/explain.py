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

from fakedetect import output_files
from fakedetect.components import errors
from fakedetect.components import features
from fakedetect.components import image_checks

TARGETS = ('predicted', 'fake', 'real')
_MIN_SIDE = 256  # small images are drawn larger so the heatmap is visible
_AGREEMENT = 1e-3  # the rebuilt classifier must match serving_default this closely
# The PNG text chunk that marks a heatmap as explain's own, so a rerun may replace it.
_MARKER_KEY, _MARKER = 'Software', 'fakedetect explain'


class ExplainError(errors.UserError):
  """The model cannot be explained faithfully; the message says why."""


@dataclasses.dataclass
class Explanation:
  fake_probability: float
  label: str
  target: str  # the class the heatmap explains
  layer: str  # the convolution Grad-CAM was computed on
  heatmap: np.ndarray  # float [h, w] in [0, 1] at that layer's resolution
  # The heatmap covers the whole image, or (local view) the central square of this side.
  square: Optional[int] = None


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
  from fakedetect.components import views  # pylint: disable=g-import-not-at-top
  model = model_lib.build_from_hparams(views.from_metadata(metadata),
                                       model_lib.Architecture.from_dict(metadata),
                                       metadata['hyperparameters'], weights='none')
  checkpoint = tf.train.Checkpoint(model=model)
  try:
    status = checkpoint.read(os.path.join(version_dir, 'variables', 'variables'))
    status.assert_existing_objects_matched().expect_partial()  # the rest: optimizer, Transform
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    raise ExplainError(f'The weights in {version_dir} do not fit the architecture '
                       f'components/model.py builds from its metadata: {e}') from None
  return model


def last_convolution(model):
  """The last Conv2D of `model`, looking inside nested models (a backbone) too."""
  import keras  # pylint: disable=g-import-not-at-top
  convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
  if not convs:
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    convs = [last_convolution(inner) for inner in nested[-1:]]
  if not convs:
    raise ExplainError(f'{model.name} has no convolution to compute Grad-CAM on.')
  return convs[-1]


def _global_branch(model):
  """(filter or None, backbone) of the global view; (None, model) for a flat classifier (models
  exported before views existed)."""
  from fakedetect.components import model as model_lib  # pylint: disable=g-import-not-at-top
  names = {layer.name for layer in model.layers}
  if model_lib.GLOBAL_BACKBONE not in names:
    return None, model
  return (model.get_layer(model_lib.GLOBAL_FILTER) if model_lib.GLOBAL_FILTER in names else None,
          model.get_layer(model_lib.GLOBAL_BACKBONE))


def _head(model, found):
  """The classifier's probability from its feature vectors, at inference (dropout is off)."""
  import keras  # pylint: disable=g-import-not-at-top
  from fakedetect.components import model as model_lib  # pylint: disable=g-import-not-at-top
  fused = found[0] if len(found) == 1 else keras.ops.concatenate(found, axis=-1)
  return model.get_layer(model_lib.HEAD)(fused)


def grad_cam(model, inputs, target: int):
  """(heatmap [h, w] in [0, 1], fake probability, layer name) for one image's model inputs.

  Grad-CAM (Selvaraju et al.) on the global view: the last convolution's feature maps, weighted by
  the mean gradient of the target class's probability over each map, summed, ReLU'd and scaled to
  [0, 1]. A model with a local view too keeps its crops' features fixed while the gradient flows.
  """
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fakedetect.components import model as model_lib  # pylint: disable=g-import-not-at-top
  from fakedetect.components import views  # pylint: disable=g-import-not-at-top
  if not isinstance(inputs, dict):  # a preprocessed global image
    inputs = {views.GLOBAL_INPUT: inputs[np.newaxis]}
  layer, backbone = _global_branch(model)
  conv = last_convolution(backbone)
  probe = keras.Model(backbone.inputs, [conv.output, backbone.outputs[0]])
  image = tf.convert_to_tensor(inputs[views.GLOBAL_INPUT], tf.float32)
  with tf.GradientTape() as tape:
    maps, found = probe(layer(image) if layer is not None else image, training=False)
    if backbone is model:  # flat: `found` is the probability
      probability = found
    else:
      local = ([model.get_layer(model_lib.LOCAL_FEATURES)(inputs[views.CROPS_INPUT])]
               if views.CROPS_INPUT in inputs else [])
      probability = _head(model, [found] + local)
    score = probability[:, 0] if target == features.FAKE else 1.0 - probability[:, 0]
  gradients = tape.gradient(score, maps)
  weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
  cam = tf.nn.relu(tf.reduce_sum(maps * weights, axis=-1))[0].numpy()
  peak = cam.max()
  return (cam / peak if peak > 0 else cam), float(probability[0, 0]), conv.name


def crop_map(model, inputs, view, target: int):
  """(map [g, g] of each grid crop's own probability for the target class, fake probability,
  'crop grid') for a local-view model: where in the native square the evidence is."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fakedetect.components import model as model_lib  # pylint: disable=g-import-not-at-top
  from fakedetect.components import views  # pylint: disable=g-import-not-at-top
  crops = tf.convert_to_tensor(inputs[views.CROPS_INPUT], tf.float32)[0]  # [k, h, w, 3]
  local = model.get_layer(model_lib.LOCAL_FEATURES)
  each = _head(model, [local(crops[:, None])]).numpy()[:, 0]
  probability = float(model(inputs, training=False).numpy()[0, 0])
  side = len(view.grid())
  grid = each.reshape(side, side)
  return (grid if target == features.FAKE else 1.0 - grid), probability, 'crop grid'


def explain(version_dir: str, image_bytes: bytes, target: str = 'predicted', scorer=None,
            classifier=None, limits=None) -> Explanation:
  """A heatmap for one encoded image, after checking the classifier scores it as serving does:
  Grad-CAM when the model sees the whole image, else each native crop's own score.

  `scorer` (a scoring.Scorer of version_dir) and `classifier` may be passed in to explain many
  images with one load of each."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fakedetect.components import scoring  # pylint: disable=g-import-not-at-top
  from fakedetect.components import views  # pylint: disable=g-import-not-at-top
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
  view = scorer.view
  inputs = views.serving_inputs(views.transform(tf.constant([image_bytes]), view), view)
  index = decided if target == 'predicted' else features.LABEL_NAMES.index(target)
  if view.uses_global:
    heatmap, probability, layer = grad_cam(classifier, inputs, index)
  else:
    heatmap, probability, layer = crop_map(classifier, inputs, view, index)
  if abs(probability - served) > _AGREEMENT:
    raise ExplainError(f'The rebuilt classifier scores this image {probability:.4f} but the '
                       f'served model {served:.4f}: the heatmap would not explain the served '
                       'model.')
  return Explanation(served, features.LABEL_NAMES[decided], features.LABEL_NAMES[index], layer,
                     heatmap, None if view.uses_global else view.native_size)


def overlay(image_bytes: bytes, heatmap: np.ndarray, alpha: float = 0.45,
            square: Optional[int] = None):
  """The image (decoded as serving decodes it) with the heatmap in the jet colour map on top:
  over the whole image, or over its central `square` (a local view's)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  pixels = tf.io.decode_image(image_bytes, channels=features.CHANNELS,
                              expand_animations=False).numpy()
  height, width = pixels.shape[:2]
  scale = max(1.0, _MIN_SIDE / max(height, width))
  size = (round(width * scale), round(height * scale))
  base = np.asarray(Image.fromarray(pixels).resize(size, Image.NEAREST), np.float32) / 255.0
  top = left = 0
  box = size
  if square:  # a smaller image was mirror-tiled into the square: the map covers all of it
    top = round(max(0, (height - square) // 2) * scale)
    left = round(max(0, (width - square) // 2) * scale)
    box = (round(min(width, square) * scale), round(min(height, square) * scale))
  cam = Image.fromarray((heatmap * 255).astype(np.uint8)).resize(box, Image.BILINEAR)
  colours = matplotlib.colormaps['jet'](np.asarray(cam) / 255.0)[..., :3]
  region = base[top:top + box[1], left:left + box[0]]
  base[top:top + box[1], left:left + box[0]] = (1 - alpha) * region + alpha * colours
  return Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8))


def write_overlay(image_bytes: bytes, explanation: Explanation, path: str,
                  alpha: float = 0.45) -> str:
  """Writes the overlay as a PNG marked as a heatmap (`is_heatmap`), whole or not at all, never
  over another image (`output_files`)."""
  from PIL import PngImagePlugin  # pylint: disable=g-import-not-at-top
  marker = PngImagePlugin.PngInfo()
  marker.add_text(_MARKER_KEY, _MARKER)
  drawn = overlay(image_bytes, explanation.heatmap, alpha, explanation.square)
  with output_files.atomic_write(path, binary=True, replaceable=is_heatmap) as f:
    drawn.save(f, format='PNG', pnginfo=marker)
  return path


def is_heatmap(path: str) -> bool:
  """A PNG `write_overlay` wrote: a rerun may replace it, where any other image is refused."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      return image.format == 'PNG' and image.info.get(_MARKER_KEY) == _MARKER
  except Exception:  # pylint: disable=broad-except  (not an image Pillow reads: not ours)
    return False


def default_output(image_path: str, out_dir: Optional[str] = None) -> str:
  stem = os.path.splitext(os.path.basename(image_path))[0]
  return os.path.join(out_dir or '.', f'{stem}.gradcam.png')
