"""Control variables `eta` (SPEC §4): what the cINN is conditioned on besides x_0.

Each has a numpy version (public: sampling code builds eta from user-chosen values) and a
TensorFlow version used inside the tf.data pipeline; tests check they agree.

* bair (30-d): end-effector xyz at the clip's last frame, normalised by the reference's
  offset/range, each coordinate one-hot into 10 bins with the reference's
  bin = trunc(10u - 1e-4) (clipped to the range): [x bins | y | z].
* shapes (4-d): object 0's normalised (x, y) at the clip's last frame, then the background drift
  direction as a unit 2-vector (a zero drift gives (0, 0); the generator never draws one).
* dtdb (2-d): the global motion direction of the clip, a unit 2-vector (x right, y down) from
  phase correlation of its first and last frames ((0, 0) when no motion is detected); the
  labels are unknown for real videos, so this estimate is the control.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# float64, as the reference's loader computes the normalised position u (bin edges depend on it).
BAIR_OFFSET = np.array([0.42638585, -0.3080245, 0.19146784], np.float64)
BAIR_RANGE = np.array([0.42850533, 0.54029283, 0.12564658], np.float64)
BAIR_BINS = 10
ETA_DIMS = {"bair": 3 * BAIR_BINS, "shapes": 4, "dtdb": 2}
_EPS = 1e-8
_BIN_SHIFT = 1e-4  # The reference's bin = trunc(10u - 1e-4): exact multiples of 0.1 fall lower.


def bair_eta_from_unit(u: np.ndarray) -> np.ndarray:
  """(..., 3) normalised positions u -> (..., 30) float32 one-hot [x bins | y bins | z bins].

  bin = trunc(10u - 1e-4) in float64, the reference's rule (`stage2_cINN/modules/INN.py`): 0.3
  -> 2, 0.1 -> 0, 0.7 -> 6, 1.0 -> 9 and a slightly negative u -> 0 (trunc rounds toward 0).
  Out-of-range u is clipped to bins 0 / 9; the reference would wrap or raise there instead.
  """
  u = np.asarray(u, np.float64)
  if u.shape[-1:] != (3,):
    raise ValueError(f"bair_eta expects (..., 3) positions, got shape {u.shape}.")
  bins = np.clip(np.trunc(u * BAIR_BINS - _BIN_SHIFT), 0, BAIR_BINS - 1).astype(np.int64)
  return np.eye(BAIR_BINS, dtype=np.float32)[bins].reshape(*u.shape[:-1], 3 * BAIR_BINS)


def bair_eta(xyz: np.ndarray) -> np.ndarray:
  """(..., 3) end-effector positions -> (..., 30) float32 one-hot bins (see bair_eta_from_unit)."""
  xyz = np.asarray(xyz)
  if xyz.shape[-1:] != (3,):
    raise ValueError(f"bair_eta expects (..., 3) xyz positions, got shape {xyz.shape}.")
  return bair_eta_from_unit((xyz.astype(np.float64) - BAIR_OFFSET) / BAIR_RANGE)


def bair_eta_tf(xyz: tf.Tensor) -> tf.Tensor:
  """TensorFlow twin of `bair_eta` (float64 u, trunc(10u - 1e-4), clipped to the 10 bins)."""
  u = (tf.cast(xyz, tf.float64) - BAIR_OFFSET) / BAIR_RANGE
  bins = tf.clip_by_value(tf.cast(u * BAIR_BINS - _BIN_SHIFT, tf.int32), 0, BAIR_BINS - 1)
  one_hot = tf.one_hot(bins, BAIR_BINS, dtype=tf.float32)
  return tf.reshape(one_hot, tf.concat([tf.shape(xyz)[:-1], [3 * BAIR_BINS]], 0))


def _unit(v: np.ndarray) -> np.ndarray:
  norm = np.linalg.norm(v, axis=-1, keepdims=True)
  return np.where(norm > _EPS, v / np.maximum(norm, _EPS), 0.0)


def shapes_eta(position_xy: np.ndarray, drift_direction_xy: np.ndarray) -> np.ndarray:
  """(..., 2) object-0 position and (..., 2) drift direction (any length) -> (..., 4) float32."""
  position_xy = np.asarray(position_xy, np.float32)
  direction = np.asarray(drift_direction_xy, np.float32)
  if position_xy.shape[-1] != 2 or direction.shape[-1] != 2:
    raise ValueError(f"shapes_eta expects (..., 2) position and direction, got "
                     f"{position_xy.shape} and {direction.shape}.")
  return np.concatenate([position_xy, _unit(direction)], axis=-1).astype(np.float32)


def unit_tf(v: tf.Tensor) -> tf.Tensor:
  norm = tf.norm(v, axis=-1, keepdims=True)
  return tf.where(norm > _EPS, v / tf.maximum(norm, _EPS), tf.zeros_like(v))


def shapes_eta_tf(position_xy: tf.Tensor, drift: tf.Tensor) -> tf.Tensor:
  return tf.concat([position_xy, unit_tf(drift)], axis=-1)


def motion_direction_tf(first: tf.Tensor, last: tf.Tensor) -> tf.Tensor:
  """Unit (x, y) direction in which content moved from `first` to `last` ((H, W, 3) floats).

  Phase correlation: the normalised cross-power spectrum of last vs first is a pure phase
  ramp whose inverse FFT peaks at the (integer, wrapped) displacement.
  """
  def gray(img):
    g = tf.reduce_mean(tf.cast(img, tf.float32), axis=-1)
    return tf.complex(g - tf.reduce_mean(g), tf.zeros_like(g))
  cross = tf.signal.fft2d(gray(last)) * tf.math.conj(tf.signal.fft2d(gray(first)))
  cross = cross / tf.cast(tf.maximum(tf.abs(cross), _EPS), tf.complex64)
  corr = tf.math.real(tf.signal.ifft2d(cross))
  h, w = tf.shape(corr)[0], tf.shape(corr)[1]
  peak = tf.cast(tf.argmax(tf.reshape(corr, [-1])), tf.int32)
  dy, dx = peak // w, peak % w
  dy = tf.where(dy > h // 2, dy - h, dy)
  dx = tf.where(dx > w // 2, dx - w, dx)
  return unit_tf(tf.cast(tf.stack([dx, dy]), tf.float32))
