"""Building blocks shared by the stage-1 networks: convolutions, spectral norm and normalisations.

Why our own `Conv` instead of `nn.Conv` + `nn.SpectralNorm`: (1) XLA-CPU is slow at 3-D
convolutions, and a 3x3x3 conv written as a sum over temporal taps of 2-D convs on (B*T, H, W, C)
is ~1.6x faster with identical results (PERFORMANCE.md), so the implementation must be a switch;
(2) spectral normalisation has to see the kernel whatever the implementation, and keeping the
power-iteration vectors next to the kernel (collection 'spectral') makes train/eval explicit:
`update_stats=True` runs one power iteration and stores `u` and `v`, `False` uses the stored ones
(torch's semantics exactly, so the authors' checkpoints run unchanged).
Parameters are float32; `dtype` is the compute dtype of the convolution only.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from i2v_flax import errors
from i2v_flax.image_ops import resize_bilinear_align_corners
from i2v_flax.models.fast_conv import fast_conv

SPECTRAL = "spectral"  # Variable collection that holds the power-iteration vectors.


CONV_IMPLS = ("native", "taps", "fast")


def resolve_conv3d_impl(impl: str) -> str:
  """'auto' -> 'fast' on CPU, 'native' on GPU/TPU (XLA's convolutions are fast there).

  'fast' = `fast_conv`: temporal taps stacked into one 2-D conv, with a hand-written backward
  (benchmarks/README.md: 1.7-1.8x the native 3-D conv's forward+backward on this CPU). 'taps' is
  the older forward-only decomposition differentiated by autodiff, kept for comparison.
  """
  if impl == "auto":
    return "fast" if jax.default_backend() == "cpu" else "native"
  if impl not in CONV_IMPLS:
    choices = ", ".join(map(repr, ("auto",) + CONV_IMPLS))
    raise ValueError(f"conv3d_impl={impl!r} is not one of {choices}. "
                     "Fix: --config.stage1.conv3d_impl=auto")
  return impl


def num_groups(channels: int, max_groups: int = 16) -> int:
  """The largest group count <= max_groups dividing `channels` (SPADE's 'reduced until it divides')."""
  g = min(max_groups, channels)
  while channels % g:
    g -= 1
  return g


def group_norm(channels: int, affine: bool = True, name: str | None = None) -> nn.GroupNorm:
  return nn.GroupNorm(num_groups=num_groups(channels), use_scale=affine, use_bias=affine,
                      epsilon=1e-5, name=name)


def conv3d_taps(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
                padding: Sequence[tuple[int, int]]) -> jax.Array:
  """3-D conv (NDHWC, DHWIO) as a sum over temporal taps of 2-D convs on (B*T_out, H, W, C).

  Exactly the same maths as the native conv; only the summation order of the temporal taps
  differs (float rounding). Faster on XLA-CPU, whose 3-D convolution kernels are slow.
  """
  kt = kernel.shape[0]
  st = strides[0]
  x = jnp.pad(x, ((0, 0), padding[0], (0, 0), (0, 0), (0, 0)))
  b, t = x.shape[:2]
  t_out = (t - kt) // st + 1
  out = None
  for i in range(kt):
    xi = lax.slice_in_dim(x, i, i + st * (t_out - 1) + 1, stride=st, axis=1)
    xi = xi.reshape((b * t_out,) + xi.shape[2:])
    yi = lax.conv_general_dilated(xi, kernel[i], tuple(strides[1:]), tuple(padding[1:]),
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
    out = yi if out is None else out + yi
  return out.reshape((b, t_out) + out.shape[1:])


def _l2_normalize(v: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps), torch's `F.normalize` (not x / (||x|| + eps))."""
  return v / jnp.maximum(jnp.linalg.norm(v), eps)


def spectral_normalize(module: nn.Module, kernel: jax.Array, update_stats: bool) -> jax.Array:
  """kernel / sigma with torch.nn.utils.spectral_norm's exact semantics.

  torch's W_mat is (out, in*k...); ours is `w = kernel.reshape(-1, out)`, i.e. W_mat^T with the
  rows in (k..., in) order instead of (in, k...). So torch's `W_mat^T u` is `w @ u` and
  `W_mat v` is `v @ w`. Collection 'spectral' stores u (out,) and v (prod(kernel.shape[:-1]),) in
  our row order (converting a torch `weight_v`: see `i2v_flax.convert.stage1`).

  - eval (`update_stats=False`): sigma = u . (W_mat v) with the STORED u and v, no iteration.
    Recomputing v from u is a different sigma unless they converged (7 % on the fixtures).
  - train: exactly one iteration, v = normalize(W_mat^T u), u = normalize(W_mat v), both stored,
    then sigma = u . (W_mat v). No extra half-step.
  u and v are constants for the gradient, which flows through sigma as in torch.
  """
  w = kernel.reshape(-1, kernel.shape[-1]).astype(jnp.float32)

  def init_u():
    return _l2_normalize(jax.random.normal(module.make_rng("params"), (w.shape[1],)))

  u_var = module.variable(SPECTRAL, "u", init_u)
  # v starts as normalize(W_mat^T u), so sigma is a sensible estimate right after `init`.
  v_var = module.variable(SPECTRAL, "v", lambda: _l2_normalize(w @ u_var.value))
  u, v = u_var.value, v_var.value
  if update_stats:
    v = _l2_normalize(w @ u)
    u = _l2_normalize(v @ w)
    if not module.is_initializing():
      u_var.value = lax.stop_gradient(u)
      v_var.value = lax.stop_gradient(v)
  u, v = lax.stop_gradient(u), lax.stop_gradient(v)
  sigma = jnp.dot(u, v @ w)
  return (kernel / sigma).astype(kernel.dtype)


class Conv(nn.Module):
  """2-D or 3-D convolution (channels-last) with optional spectral norm and a choice of impl.

  `padding` is per spatial dim (lo, hi) pairs, 'SAME' (= k // 2 each side) or 'VALID'.
  """

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] | None = None
  padding: str | Sequence[tuple[int, int]] = "SAME"
  use_bias: bool = True
  spectral_norm: bool = False
  impl: str = "native"  # 'native', 'taps' (3-D) or 'fast'; resolved by resolve_conv3d_impl.
  dtype: str = "float32"  # Compute dtype; parameters stay float32.
  kernel_init: Callable = nn.initializers.lecun_normal()  # zeros: a head that starts as a no-op.

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool = False) -> jax.Array:
    k = tuple(self.kernel_size)
    nd = len(k)
    if x.ndim != nd + 2:
      raise ValueError(f"Conv with a {nd}-D kernel got an input of shape {x.shape}; expected "
                       f"{nd + 2} dims (batch, {nd} spatial, channels).")
    strides = tuple(self.strides) if self.strides is not None else (1,) * nd
    if self.padding == "SAME":
      pad = tuple((kk // 2, kk // 2) for kk in k)
    elif self.padding == "VALID":
      pad = tuple((0, 0) for _ in k)
    else:
      pad = tuple(tuple(p) for p in self.padding)
    kernel = self.param("kernel", self.kernel_init, k + (x.shape[-1], self.features),
                        jnp.float32)
    if self.spectral_norm:
      kernel = spectral_normalize(self, kernel, update_stats)
    dt = jnp.dtype(self.dtype)
    xc, kc = x.astype(dt), kernel.astype(dt)
    if nd == 3 and self.impl == "taps":
      y = conv3d_taps(xc, kc, strides, pad)
    elif self.impl == "fast":
      y = fast_conv(xc, kc, strides, pad)
    else:
      spec = {2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}[nd]
      y = lax.conv_general_dilated(xc, kc, strides, pad, dimension_numbers=spec)
    y = y.astype(jnp.float32)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return y


class ActNorm(nn.Module):
  """Per-channel affine `scale * (x + loc)` with a data-dependent init (Glow; D_S of the reference).

  The init sets loc = -mean and scale = 1 / (std + eps) per channel over all but the channel axis,
  with the UNBIASED std as the reference (`torch.std`). `scale` is a signed parameter (no log), as
  in the reference, so any checkpoint value loads.
  The init happens whenever the params are created: at `init` (our default design: the init
  batch's statistics), or in an `apply` with `mutable=['params', ...]` on variables that lack
  this layer's params. The latter reproduces the reference's "first train call" exactly: the
  convs before it have already done that call's power iteration (the parity runner uses it).
  """

  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    axes = tuple(range(x.ndim - 1))
    c = x.shape[-1]
    loc = self.param("loc", lambda _: -jnp.mean(x, axis=axes).reshape(c))
    scale = self.param("scale",
                       lambda _: 1.0 / (jnp.std(x, axis=axes, ddof=1).reshape(c) + self.eps))
    return scale * (x + loc)


class SPADE(nn.Module):
  """Spatially-adaptive normalisation of a video by the first frame x_0 (SPEC §3.2).

  GroupNorm (no affine) of x, then per-pixel gamma/beta computed from x_0 resized to the block's
  H x W (bilinear, align_corners=True, as the reference), broadcast over time:
  `norm(x) * (1 + gamma) + beta`.
  """

  hidden: int = 128

  @nn.compact
  def __call__(self, x: jax.Array, x0: jax.Array) -> jax.Array:
    c = x.shape[-1]
    normed = group_norm(c, affine=False, name="norm")(x)
    _, _, h, w, _ = x.shape
    cond = resize_bilinear_align_corners(x0, (h, w))  # The reference's kernel, also shrinking.
    cond = nn.leaky_relu(Conv(self.hidden, (3, 3), name="shared")(cond), 0.2)
    gamma = Conv(c, (3, 3), name="gamma")(cond)[:, None]
    beta = Conv(c, (3, 3), name="beta")(cond)[:, None]
    return normed * (1.0 + gamma) + beta


def spatial_z_channels(z_dim: int) -> int:
  """Channels of a spatial z: z_dim spread over the 4 x 4 cells the trunk ends at (also the
  config check's, so the error is the same before and inside a model)."""
  if z_dim % 16:
    raise errors.InvalidInput(
        f"stage1.z_spatial spreads z over a 4 x 4 map, so stage1.z_dim={z_dim} must be divisible "
        f"by 16. Fix: --config.stage1.z_dim={max(16, z_dim // 16 * 16)}")
  return z_dim // 16


class ADAIN(nn.Module):
  """Adaptive instance norm: instance-normalise over (T, H, W), then gamma, beta = Dense(z)."""

  eps: float = 1e-5
  # Demo departure (with a spatial z, off in the reference): add a per-pixel style from the
  # 4 x 4 z map resized to the block (a zero-initialised 3x3 conv, so a fresh layer is ADAIN).
  local: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, z: jax.Array) -> jax.Array:
    c = x.shape[-1]
    axes = tuple(range(1, x.ndim - 1))
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.var(x, axis=axes, keepdims=True)
    normed = (x - mean) * lax.rsqrt(var + self.eps)
    gb = nn.Dense(2 * c, name="style")(z)
    shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (2 * c,)
    gb = gb.reshape(shape)
    if self.local:
      b, h, w = x.shape[0], x.shape[-3], x.shape[-2]
      z_map = resize_bilinear_align_corners(z.reshape(b, 4, 4, spatial_z_channels(z.shape[-1])),
                                            (h, w))
      local = Conv(2 * c, (3, 3), kernel_init=nn.initializers.zeros, name="local_style")(z_map)
      gb = gb + local.reshape((b,) + (1,) * (x.ndim - 4) + (h, w, 2 * c))
    return gb[..., :c] * normed + gb[..., c:]
