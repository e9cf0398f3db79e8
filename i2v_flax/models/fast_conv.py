"""Convolutions with a hand-written VJP, built from the formulations XLA-CPU is fast at.

Why: on XLA-CPU a 3x3x3 video convolution is slow in all three of its parts (forward,
input gradient, kernel gradient), while 2-D convolutions and matrix products run near the
machine's matmul speed. Writing the 3-D conv as a sum over temporal taps of 2-D convs makes the
forward ~2x faster, but autodiff of that sum gains little in the backward (it differentiates
through pads/slices of the whole video per tap, and XLA's filter gradient is slow on the big
decoder layers; issue 15 measured it 2x slower than native). Here the backward is written by
hand, so every heavy op in forward and backward is a 2-D conv or one matmul:

  forward       y[t]  = sum_i conv2d(x_pad[i + s*t], k[i])
  input grad    dx    = sum_i place_i(conv2d_transpose(dy, k[i]))      (temporal scatter = pad)
  kernel grad   dk[i] = conv2d_kernel_grad(x_pad[i + s*t], dy)         (batch = B*T_out)

Each 2-D part has several formulations: 'xla' (XLA's own conv / transposed conv / filter
gradient), 'dots' (one `dot_general` per spatial tap contracting N*H*W over shifted copies of
x) and, for the kernel gradient, 'dyshift' (shift dy instead of x and contract once: a single
matmul, 1.5-2.5x XLA's filter gradient on the big decoder layers). `Plan` picks one per part;
`CPU_PLAN` holds the measured winners on CPU (benchmarks/conv_ops.py, benchmarks/README.md).
On GPU/TPU `layers.resolve_conv3d_impl('auto')` returns 'native' and none of this runs: XLA's
native convolutions are fast there.

Mathematically identical to `lax.conv_general_dilated` (only float summation order differs);
tests/test_fast_conv.py checks values and both gradients at rel. 1e-4.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

Padding = tuple[tuple[int, int], ...]
_DN = {2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}


@dataclasses.dataclass(frozen=True)
class Plan:
  """Which formulation each part of a 2-D convolution uses ('xla' or 'dots').

  The 3-D conv always decomposes into temporal taps; each tap uses this plan.
  """

  forward: str = "xla"
  input_grad: str = "xla"
  # 'xla', 'dots', 'dyshift' (stride 1; else 'xla') or 'auto': 'dyshift' on stacked 3-D taps
  # (wide inputs: 1.75x XLA), 'xla' on plain 2-D convs and summed taps (0.85x there).
  kernel_grad: str = "auto"
  # 3-D: 'stack' the kt taps along channels (one 2-D conv), 'sum' kt 2-D convs, or 'auto':
  # 'sum' when the kernel outweighs the input (the 1024-wide 4x4 decoder head: stacking would
  # transpose a 113 MB kernel per call), else 'stack'.
  temporal: str = "auto"


# Measured winners on a 2-core CPU (benchmarks/README.md, conv_ops.py --plans).
CPU_PLAN = Plan()


# ---------------------------------------------------------------- 2-D parts (NHWC, HWIO)

def _conv2d(x: jax.Array, k: jax.Array, strides: Sequence[int], pad: Padding) -> jax.Array:
  return lax.conv_general_dilated(x, k, tuple(strides), tuple(pad), dimension_numbers=_DN[2])


def _pad_for_taps(x: jax.Array, pad: Padding, axes: Sequence[int]) -> jax.Array:
  cfg = [(0, 0, 0)] * x.ndim
  for ax, (lo, hi) in zip(axes, pad):
    cfg[ax] = (lo, hi, 0)
  return lax.pad(x, jnp.zeros((), x.dtype), cfg)


def _tap_slice(x_pad: jax.Array, offsets: Sequence[int], strides: Sequence[int],
               out_sizes: Sequence[int], axes: Sequence[int]) -> jax.Array:
  """x_pad[..., o + s*m, ...] for m < out_size on each of `axes`: the inputs one tap sees."""
  start, limit, step = [0] * x_pad.ndim, list(x_pad.shape), [1] * x_pad.ndim
  for ax, o, s, n in zip(axes, offsets, strides, out_sizes):
    start[ax], limit[ax], step[ax] = o, o + s * (n - 1) + 1, s
  return lax.slice(x_pad, start, limit, step)


def _conv2d_forward(x, k, strides, pad, plan: Plan):
  if plan.forward == "xla":
    return _conv2d(x, k, strides, pad)
  kh, kw = k.shape[:2]
  xp = _pad_for_taps(x, pad, (1, 2))
  ho = (xp.shape[1] - kh) // strides[0] + 1
  wo = (xp.shape[2] - kw) // strides[1] + 1
  out = None
  for i in range(kh):
    for j in range(kw):
      xs = _tap_slice(xp, (i, j), strides, (ho, wo), (1, 2))
      yi = lax.dot_general(xs, k[i, j], (((3,), (0,)), ((), ())))
      out = yi if out is None else out + yi
  return out


def _conv2d_input_grad(dy, k, x_shape, strides, pad, plan: Plan):
  """d(loss)/dx of a 2-D conv: XLA's transposed conv ('xla') or per-tap matmuls placed by pad."""
  if plan.input_grad == "xla":
    x0 = jnp.zeros(x_shape, dy.dtype)
    return jax.vjp(lambda x: _conv2d(x, k, strides, pad), x0)[1](dy)[0]
  kh, kw = k.shape[:2]
  hp, wp = x_shape[1] + sum(pad[0]), x_shape[2] + sum(pad[1])
  ho, wo = dy.shape[1:3]
  out = None
  for i in range(kh):
    for j in range(kw):
      zi = lax.dot_general(dy, k[i, j], (((3,), (1,)), ((), ())))
      cfg = [(0, 0, 0),
             (i, hp - i - strides[0] * (ho - 1) - 1, strides[0] - 1),
             (j, wp - j - strides[1] * (wo - 1) - 1, strides[1] - 1),
             (0, 0, 0)]
      zi = lax.pad(zi, jnp.zeros((), zi.dtype), cfg)
      out = zi if out is None else out + zi
  return out[:, pad[0][0]:pad[0][0] + x_shape[1], pad[1][0]:pad[1][0] + x_shape[2]]


def _conv2d_kernel_grad(x, dy, k_shape, strides, pad, plan: Plan):
  """d(loss)/dk of a 2-D conv: XLA's filter gradient or one dot_general per tap over N*H*W."""
  if plan.kernel_grad == "xla" or (plan.kernel_grad == "dyshift" and tuple(strides) != (1, 1)):
    k0 = jnp.zeros(k_shape, dy.dtype)
    return jax.vjp(lambda k: _conv2d(x, k, strides, pad), k0)[1](dy)[0]
  kh, kw = k_shape[:2]
  xp = _pad_for_taps(x, pad, (1, 2))
  ho, wo = dy.shape[1:3]
  if plan.kernel_grad == "dyshift" and tuple(strides) == (1, 1):
    return _kernel_grad_dyshift(xp, dy, kh, kw)
  rows = []
  for i in range(kh):
    row = []
    for j in range(kw):
      xs = _tap_slice(xp, (i, j), strides, (ho, wo), (1, 2))
      row.append(lax.dot_general(xs, dy, (((0, 1, 2), (0, 1, 2)), ((), ()))))
    rows.append(jnp.stack(row))
  return jnp.stack(rows)


def _kernel_grad_dyshift(xp: jax.Array, dy: jax.Array, kh: int, kw: int) -> jax.Array:
  """Stride-1 kernel gradient as ONE matmul: shift dy (not x) by each tap, contract N*Hp*Wp.

  dk[i, j] = sum_{n,h,w} xp[n, h+i, w+j] dy[n, h, w] = sum_{n,h',w'} xp[n, h', w'] dy_ij[n, h', w']
  with dy_ij = dy moved by (i, j) inside an Hp x Wp frame of zeros. The shifted copies are of
  dy, whose channels are usually fewer than x's (and x is not copied per tap), and the single
  (C x NHpWp) @ (NHpWp x kh*kw*O) product runs at matmul speed.
  """
  hp, wp = xp.shape[1:3]
  ho, wo = dy.shape[1:3]
  shifted = [lax.pad(dy, jnp.zeros((), dy.dtype),
                     [(0, 0, 0), (i, hp - ho - i, 0), (j, wp - wo - j, 0), (0, 0, 0)])
             for i in range(kh) for j in range(kw)]
  dk = lax.dot_general(xp, jnp.concatenate(shifted, axis=-1), (((0, 1, 2), (0, 1, 2)), ((), ())))
  c, o = xp.shape[-1], dy.shape[-1]
  return dk.reshape(c, kh, kw, o).transpose(1, 2, 0, 3)


# ---------------------------------------------------------------- N-D with temporal taps

def _split_time(x: jax.Array, pad_t: tuple[int, int], kt: int, st: int):
  """Temporally padded x and its output length."""
  xp = _pad_for_taps(x, (pad_t,), (1,))
  return xp, (xp.shape[1] - kt) // st + 1


def _merge(x: jax.Array) -> jax.Array:
  return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def _temporal(plan: Plan, x: jax.Array, k: jax.Array) -> str:
  if plan.temporal != "auto":
    return plan.temporal
  return "sum" if x.size < k.size else "stack"


def _stack_taps(xp: jax.Array, kt: int, st: int, to: int) -> jax.Array:
  """(B, Tp, H, W, C) -> (B*To, H, W, kt*C): the kt frames each output frame sees, as channels."""
  taps = [_tap_slice(xp, (i,), (st,), (to,), (1,)) for i in range(kt)]
  return _merge(jnp.concatenate(taps, axis=-1))


def _stack_kernel(k: jax.Array) -> jax.Array:
  """(kt, kh, kw, C, O) -> (kh, kw, kt*C, O), channel order matching `_stack_taps`."""
  kt, kh, kw, c, o = k.shape
  return k.transpose(1, 2, 0, 3, 4).reshape(kh, kw, kt * c, o)


def _forward(x, k, strides, pad, plan):
  if k.ndim == 4:
    return _conv2d_forward(x, k, strides, pad, plan)
  kt, st = k.shape[0], strides[0]
  xp, to = _split_time(x, pad[0], kt, st)
  if _temporal(plan, x, k) == "stack":
    out = _conv2d_forward(_stack_taps(xp, kt, st, to), _stack_kernel(k), strides[1:], pad[1:],
                          plan)
    return out.reshape((x.shape[0], to) + out.shape[1:])
  out = None
  for i in range(kt):
    xi = _merge(_tap_slice(xp, (i,), (st,), (to,), (1,)))
    yi = _conv2d_forward(xi, k[i], strides[1:], pad[1:], plan)
    out = yi if out is None else out + yi
  return out.reshape((x.shape[0], to) + out.shape[1:])


def _place_in_time(g: jax.Array, i: int, st: int, tp: int) -> jax.Array:
  """Scatter g (B, To, ...) to padded frames i + st*t (zeros elsewhere) with one lax.pad."""
  cfg = [(0, 0, 0)] * g.ndim
  cfg[1] = (i, tp - i - st * (g.shape[1] - 1) - 1, st - 1)
  return lax.pad(g, jnp.zeros((), g.dtype), cfg)


def _backward(x, k, dy, strides, pad, plan):
  if plan.kernel_grad == "auto":
    stacked = k.ndim == 5 and _temporal(plan, x, k) == "stack"
    plan = dataclasses.replace(plan, kernel_grad="dyshift" if stacked else "xla")
  if k.ndim == 4:
    return (_conv2d_input_grad(dy, k, x.shape, strides, pad, plan),
            _conv2d_kernel_grad(x, dy, k.shape, strides, pad, plan))
  kt, st = k.shape[0], strides[0]
  b, t = x.shape[:2]
  xp, to = _split_time(x, pad[0], kt, st)
  tp = xp.shape[1]
  dy2 = _merge(dy)
  c = x.shape[-1]
  if _temporal(plan, x, k) == "stack":
    k3 = _stack_kernel(k)
    x3 = _stack_taps(xp, kt, st, to)
    g3 = _conv2d_input_grad(dy2, k3, x3.shape, strides[1:], pad[1:], plan)
    g3 = g3.reshape((b, to) + g3.shape[1:])
    dx = None
    for i in range(kt):
      gi = _place_in_time(g3[..., i * c:(i + 1) * c], i, st, tp)
      dx = gi if dx is None else dx + gi
    dk3 = _conv2d_kernel_grad(x3, dy2, k3.shape, strides[1:], pad[1:], plan)
    kh, kw, _, o = dk3.shape
    dk = dk3.reshape(kh, kw, kt, c, o).transpose(2, 0, 1, 3, 4)
  else:
    shape2 = (b * to,) + x.shape[2:]
    dx, dks = None, []
    for i in range(kt):
      gi = _conv2d_input_grad(dy2, k[i], shape2, strides[1:], pad[1:], plan)
      gi = _place_in_time(gi.reshape((b, to) + gi.shape[1:]), i, st, tp)
      dx = gi if dx is None else dx + gi
      xi = _merge(_tap_slice(xp, (i,), (st,), (to,), (1,)))
      dks.append(_conv2d_kernel_grad(xi, dy2, k.shape[1:], strides[1:], pad[1:], plan))
    dk = jnp.stack(dks)
  dx = lax.slice_in_dim(dx, pad[0][0], pad[0][0] + t, axis=1)
  return dx, dk


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def fast_conv(x: jax.Array, k: jax.Array, strides: tuple[int, ...], pad: Padding,
              plan: Plan = CPU_PLAN) -> jax.Array:
  """Channels-last 2-D (NHWC, HWIO) or 3-D (NDHWC, DHWIO) conv; same result as lax's."""
  return _forward(x, k, strides, pad, plan)


def _fast_conv_fwd(x, k, strides, pad, plan):
  return _forward(x, k, strides, pad, plan), (x, k)


def _fast_conv_bwd(strides, pad, plan, res, dy):
  x, k = res
  dx, dk = _backward(x, k, dy.astype(x.dtype), strides, pad, plan)
  return dx.astype(x.dtype), dk.astype(k.dtype)


fast_conv.defvjp(_fast_conv_fwd, _fast_conv_bwd)


def native_conv(x: jax.Array, k: jax.Array, strides: Sequence[int], pad: Padding) -> jax.Array:
  """XLA's own convolution (the reference formulation; fast on GPU/TPU)."""
  return lax.conv_general_dilated(x, k, tuple(strides), tuple(pad),
                                  dimension_numbers=_DN[k.ndim - 2])
