"""Transform module: raw examples -> model input, one graph for training and serving.

The Transform component runs `preprocessing_fn` over the data and saves it as a TF graph; the
Trainer bakes that graph into every exported signature, so serving decodes, resizes and crops
exactly as training did (the views themselves are defined in components/views.py).
"""

from typing import Any, Dict, Optional

import tensorflow as tf

from fakedetect.components import features
from fakedetect.components import views
from fakedetect.pipeline import config as config_lib


def preprocessing_fn(inputs: Dict[str, tf.Tensor],
                     custom_config: Optional[Dict[str, Any]] = None) -> Dict[str, tf.Tensor]:
  """The configured view's features of each image; passes the label through."""
  view = config_lib.ModuleConfig.from_custom_config(custom_config).image.resolved()
  outputs = views.transform(inputs[features.IMAGE_KEY], view)
  if features.LABEL_KEY in inputs:  # absent when serving
    outputs[features.TRANSFORMED_LABEL_KEY] = tf.reshape(inputs[features.LABEL_KEY], [-1])
  return outputs
