"""A real push directory for the serving tests, built once per session without the pipeline.

One tiny CNN (components/model.py) over the real Transform output of conftest's
`transform_output_dir`, exported by `components.export.export` twice (two thresholds) and copied as
TFX's Pusher copies: into `<root>/fakedetect/<unix time>/`, saved_model.pb last.
"""

import os
import shutil

from tests.conftest import encode_image, random_image

MODEL_NAME = 'fakedetect'
IMAGE_SIZE = 16
HPARAMS = {'learning_rate': 3e-3, 'width': 4, 'depth': 2, 'dropout': 0.1, 'flip': False,
           'rotation': 0.0, 'color_jitter': 0.0, 'jpeg_fraction': 0.0, 'blur_fraction': 0.0}
# Two pushes: (version, threshold). The newer one is served unless a pin says otherwise.
VERSIONS = ((1700000000, 0.37), (1700000100, 0.63))


def push(export_dir: str, model_dir: str, version: int) -> str:
  """Copies as TFX's Pusher does: everything, then saved_model.pb (the server's 'ready' mark)."""
  target = os.path.join(model_dir, str(version))
  shutil.copytree(export_dir, target, ignore=shutil.ignore_patterns('saved_model.pb'))
  shutil.copyfile(os.path.join(export_dir, 'saved_model.pb'),
                  os.path.join(target, 'saved_model.pb'))
  return target


def build_classifier(seed: int = 1):
  import keras  # pylint: disable=g-import-not-at-top
  from fakedetect.components import model as model_lib  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(seed)
  from fakedetect.components import views  # pylint: disable=g-import-not-at-top
  return model_lib.build_from_hparams(views.View(views.GLOBAL, IMAGE_SIZE),
                                      model_lib.Architecture(), HPARAMS)


def export(classifier, transform_dir: str, export_dir: str, threshold: float) -> str:
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  from fakedetect.components import export  # pylint: disable=g-import-not-at-top
  from fakedetect.components import views  # pylint: disable=g-import-not-at-top
  export.export(classifier, tft.TFTransformOutput(transform_dir), export_dir, threshold=threshold,
                view=views.View(views.GLOBAL, IMAGE_SIZE),
                extra_metadata={'hyperparameters': HPARAMS, 'backbone': 'cnn'})
  return export_dir


def pushed_models(base, transform_output_dir):
  """{'root': serving root, 'model_dir', 'versions': {version: path}, 'classifier', 'output'}:
  the `pushed` fixture of conftest.py, built once per session under `base`."""
  classifier = build_classifier()
  root = str(base / 'output' / 'serving_model')
  model_dir = os.path.join(root, MODEL_NAME)
  paths = {}
  for version, threshold in VERSIONS:
    staging = export(classifier, transform_output_dir[0], str(base / f'export-{version}'),
                     threshold)
    paths[version] = push(staging, model_dir, version)
  return {'root': root, 'model_dir': model_dir, 'versions': paths, 'classifier': classifier,
          'output': str(base / 'output')}


def sample_images():
  """A few real encoded images of different formats and sizes."""
  return [encode_image(random_image(40, 25, 1), 'JPEG', quality=90),
          encode_image(random_image(16, 16, 2), 'PNG'),
          encode_image(random_image(33, 50, 3), 'GIF'),
          encode_image(random_image(9, 7, 4), 'BMP')]


def session_predict(model_dir: str, images, signature: str = 'serving_default'):
  """The signature run as TF Serving runs it: the SavedModel restored into a TF1 session (C++
  LoadSavedModel does the same), fed a string tensor. {output: numpy array}; raises the
  InvalidArgumentError a client would get."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with tf.Graph().as_default(), tf.compat.v1.Session() as session:
    meta_graph = tf.compat.v1.saved_model.load(session, ['serve'], model_dir)
    signature_def = meta_graph.signature_def[signature]
    (input_info,) = signature_def.inputs.values()
    return session.run({k: v.name for k, v in signature_def.outputs.items()},
                       {input_info.name: np.array(list(images), dtype=object)})
