"""Small image classifiers in Flax NNX: an MLP and a CNN for 8x8 digits.

The CNN keeps each convolution kernel as a 2-D ``(kh * kw * in, out)`` matrix
and reshapes it when applied, the usual way to hand conv filters to Muon: the
optimizer sees a tall matrix instead of a 4-D tensor. The output layer is
named ``head`` so that ``quantmuon.muon_labels`` sends it to AdamW.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array


class Conv(nnx.Module):
  """SAME-padded 2-D convolution whose kernel is stored as a matrix."""

  def __init__(self, in_features: int, out_features: int, size: int,
               rngs: nnx.Rngs):
    fan_in = size * size * in_features
    init = nnx.initializers.lecun_normal()
    self.size = size
    self.in_features = in_features
    self.kernel = nnx.Param(init(rngs.params(), (fan_in, out_features)))
    self.bias = nnx.Param(jnp.zeros((out_features,)))

  def __call__(self, x: Array) -> Array:
    k = self.kernel[...].reshape(self.size, self.size, self.in_features, -1)
    y = jax.lax.conv_general_dilated(
        x, k, window_strides=(1, 1), padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + self.bias[...]


class MLPClassifier(nnx.Module):
  """Flattened pixels -> ``depth`` hidden ReLU layers -> class logits."""

  def __init__(self, in_features: int, classes: int, width: int, depth: int,
               rngs: nnx.Rngs):
    sizes = [in_features] + [width] * depth
    self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs)
                            for a, b in zip(sizes[:-1], sizes[1:],
                                            strict=True)])
    self.head = nnx.Linear(sizes[-1], classes, rngs=rngs)

  def __call__(self, images: Array) -> Array:
    """Logits ``(batch, classes)`` of images ``(batch, h, w)``."""
    x = images.reshape(images.shape[0], -1)
    for layer in self.hidden:
      x = jax.nn.relu(layer(x))
    return self.head(x)


class CNNClassifier(nnx.Module):
  """Two 3x3 conv layers, 2x2 average pooling, a hidden dense layer."""

  def __init__(self, image_size: int, classes: int, width: int,
               rngs: nnx.Rngs):
    self.conv_1 = Conv(1, width // 2, 3, rngs)
    self.conv_2 = Conv(width // 2, width, 3, rngs)
    pooled = (image_size // 2) ** 2 * width
    self.dense = nnx.Linear(pooled, 2 * width, rngs=rngs)
    self.head = nnx.Linear(2 * width, classes, rngs=rngs)

  def __call__(self, images: Array) -> Array:
    """Logits ``(batch, classes)`` of images ``(batch, h, w)``."""
    x = images[..., None]
    x = jax.nn.relu(self.conv_1(x))
    x = jax.nn.relu(self.conv_2(x))
    b, h, w, c = x.shape
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    x = jax.nn.relu(self.dense(x.reshape(b, -1)))
    return self.head(x)
