"""Transform module: raw examples -> model input, one graph for training and serving.

The Transform component runs `preprocessing_fn` over the data and saves it as a TF graph; the
Trainer bakes that graph into every exported signature, so serving decodes and scales exactly as
training did.
"""

from typing import Any, Dict, Optional

import tensorflow as tf

from fakedetect.components import features
from fakedetect.pipeline import config as config_lib


def preprocessing_fn(inputs: Dict[str, tf.Tensor],
                     custom_config: Optional[Dict[str, Any]] = None) -> Dict[str, tf.Tensor]:
  """Decodes, resizes to the configured size and scales to [0, 1]; passes the label through."""
  image_size = config_lib.ModuleConfig.from_custom_config(custom_config).image.size
  outputs = {
      features.TRANSFORMED_IMAGE_KEY:
          features.decode_and_resize(inputs[features.IMAGE_KEY], image_size),
  }
  if features.LABEL_KEY in inputs:  # absent when serving
    outputs[features.TRANSFORMED_LABEL_KEY] = tf.reshape(inputs[features.LABEL_KEY], [-1])
  return outputs
