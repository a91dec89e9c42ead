"""Batch normalisation that trains through TensorFlow's fused kernel.

Keras 3's BatchNormalization computes a training step's statistics and normalisation as a dozen
separate ops (casts to float32, mean, squared difference, multiplies, a tile for the gradient),
each a pass over the whole activation tensor. On the own backbones, whose convolutions are small,
those passes cost more than the convolutions: the CNN at 32 px trained at about 1,000 images/s in
bfloat16 on a 2-core AMX CPU with them and about 2,400 with TensorFlow's fused kernel
(FusedBatchNormV3, which oneDNN and cuDNN implement; benchmarks/train_speed.py, `keras-bn` rows).

Same weights, same statistics, same outputs: the layer only replaces the training-mode arithmetic
(inference keeps Keras' own, which is a per-channel affine either way), so weight files and
models saved with Keras' layer load into it and back.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package='fakedetect')
class FusedBatchNormalization(keras.layers.BatchNormalization):
  """keras.layers.BatchNormalization whose training step runs as one fused kernel, forward and
  backward, on 4-D channels-last inputs (anything else goes through Keras' own path)."""

  def call(self, inputs, training=None, mask=None):
    fused = (training and self.trainable and mask is None and len(inputs.shape) == 4
             and self.axis in (-1, 3) and self.center and self.scale)
    if not fused:
      return super().call(inputs, training=training, mask=mask)
    outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
        inputs, tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32),
        epsilon=self.epsilon, data_format='NHWC', is_training=True)
    # The kernel returns the batch's unbiased variance; Keras' moving variance averages the
    # biased one it normalises with.
    count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], tf.float32)
    variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
    self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
    self.moving_variance.assign(
        self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
    return tf.cast(outputs, self.compute_dtype)
