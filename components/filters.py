"""Forensic input filters: fixed layers that take away image content and keep generation traces.

On folders whose classes show the same things (faces vs generated faces) the detector must not
learn content; a residual that removes what the eye sees leaves what up-sampling and synthesis
left behind. Each filter is a Keras layer with no weights at all (nothing to train, nothing to
warm-start or drift), registered so a `.keras` copy of the model loads without custom code, and
computed inside the model, so training, evaluation and serving apply the same filter.

The scales bring each residual's standard deviation to about 1 on natural photos: measured on
100 FFHQ and StyleGAN faces at 256 px (NPR 0.042-0.047, SRM 0.027-0.039 before scaling) and on
CIFAKE at 32 px (NPR 0.09-0.11, SRM 0.03-0.06), so the first convolution and its batch
normalization start in their usual range whatever the folder.
"""

from typing import Optional

import keras
import numpy as np

FILTERS = ('none', 'npr', 'highpass')

_PACKAGE = 'fakedetect'
NPR_SCALE = 20.0
HIGHPASS_SCALE = 25.0

# The three SRM kernels of Fridrich & Kodovsky (2012) that Zhou et al. (CVPR 2018) put in front of
# their detector's noise stream: a 5x5 second-order 'KV', a 3x3 'KB' and a first-order
# horizontal difference, each normalized by its own centre weight and summing to zero.
_SRM_KERNELS = np.stack([
    np.array([[-1, 2, -2, 2, -1],
              [2, -6, 8, -6, 2],
              [-2, 8, -12, 8, -2],
              [2, -6, 8, -6, 2],
              [-1, 2, -2, 2, -1]]) / 12.0,
    np.pad(np.array([[-1, 2, -1],
                     [2, -4, 2],
                     [-1, 2, -1]]), 1) / 4.0,
    np.pad(np.array([[1, -2, 1]]), ((2, 2), (1, 1))) / 2.0,
], axis=-1)  # [5, 5, kernels]


def channels(name: str, input_channels: int = 3) -> int:
  """How many channels the filter `name` gives for `input_channels` colour channels."""
  _check_name(name)
  return input_channels * _SRM_KERNELS.shape[-1] if name == 'highpass' else input_channels


def layer(name: str, layer_name: Optional[str] = None) -> Optional[keras.layers.Layer]:
  """The filter `name` as a layer named `layer_name` (default `<name>_filter`), or None for
  'none' (the model sees the pixels)."""
  _check_name(name)
  if name == 'npr':
    return NearestNeighbourResidual(name=layer_name or 'npr_filter')
  if name == 'highpass':
    return SRMHighPass(name=layer_name or 'highpass_filter')
  return None


def _check_name(name: str) -> None:
  if name not in FILTERS:
    raise ValueError(f'unknown input filter {name!r}: use one of {", ".join(FILTERS)}')


class _FixedFilter(keras.layers.Layer):
  """A weightless layer computed in float32 even under a mixed-precision policy: the traces it
  keeps are at the level of one grey step (1/255), below bfloat16's resolution near 1. The
  scaled residual it outputs is O(1), which the backbone may then cast to 16 bits safely."""

  def __init__(self, **kwargs):
    kwargs.setdefault('trainable', False)
    kwargs.setdefault('dtype', 'float32')
    super().__init__(**kwargs)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NearestNeighbourResidual(_FixedFilter):
  """NPR (Tan et al., CVPR 2024): x minus its 2x nearest-neighbour down- then up-sampled copy.

  Generators up-sample their feature maps, which ties neighbouring pixels together; the residual
  against a nearest-neighbour copy is zero within each 2x2 cell of an image that was itself
  nearest up-sampled, and carries the local correlations a generator leaves. Odd heights and
  widths work: the up-sampled copy is cropped back to the input's size.
  """

  def call(self, inputs):
    shape = keras.ops.shape(inputs)
    coarse = inputs[:, ::2, ::2, :]
    upsampled = keras.ops.repeat(keras.ops.repeat(coarse, 2, axis=1), 2, axis=2)
    return (inputs - upsampled[:, :shape[1], :shape[2], :]) * NPR_SCALE

  def compute_output_shape(self, input_shape):
    return input_shape


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SRMHighPass(_FixedFilter):
  """The three SRM high-pass kernels applied to each colour channel: [b, h, w, 3] -> 9 channels.

  Applied per channel rather than summed over colour, so traces that differ between channels
  (demosaicing, a generator's colour decoder) are kept. Borders are reflected rather than
  zero-padded, so a flat region gives exactly no response up to the image's edge and the output
  keeps the input's height and width.
  """

  def call(self, inputs):
    kernel = np.tile(_SRM_KERNELS[:, :, None, :], (1, 1, inputs.shape[-1], 1)) * HIGHPASS_SCALE
    margin = _SRM_KERNELS.shape[0] // 2
    padded = keras.ops.pad(
        inputs, [[0, 0], [margin, margin], [margin, margin], [0, 0]], mode='reflect')
    return keras.ops.depthwise_conv(
        padded, keras.ops.cast(kernel, inputs.dtype), strides=1, padding='valid')

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (input_shape[-1] * _SRM_KERNELS.shape[-1],)
