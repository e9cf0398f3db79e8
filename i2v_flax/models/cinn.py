"""The conditional invertible network (cINN) of stage 2 (SPEC §4).

Direction convention (read this before using the flow). The SPEC writes the generative map as
`z = T(nu; c)`. Every module here calls the *normalising* direction `z -> nu = T^-1(z; c)` its
**forward**, because that is the direction the NLL is computed in and the only one that needs
the log-determinant:

  forward(x, cond) -> (y, logdet)   # data side -> Gaussian side, logdet = log|det dy/dx| per sample
  inverse(y, cond) -> x             # Gaussian side -> data side, exact inverse of forward

So `ConditionalFlow.forward(z, c)` gives `(nu, log|det dnu/dz|)` for the NLL and
`ConditionalFlow.inverse(nu, c)` samples `z`. (`i2v_flax.train.stage2.flow_forward/flow_inverse`
use the SPEC's naming of T instead and say so.) Internally each module has one compact
`__call__(x, cond, inverse)` returning `(y, logdet)` in whichever direction it ran, so that
parameters are declared once and both directions share them.

A block is ActNorm -> invertible LeakyReLU -> double affine coupling -> fixed permutation
(forward order). Last layers of the coupling MLPs are zero-initialised, and ActNorm is
initialised from the init batch (data-dependent, at `init`), so a fresh flow whitens its init
batch per dimension and is otherwise the identity.
"""

from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
# Variable collection holding the fixed permutations: not trained, but saved with the checkpoint
# so a restored flow is the same function even if the seeding scheme ever changes.
CONSTS = "consts"


class ActNorm(nn.Module):
  """Per-dimension affine `y = (x + loc) * exp(log_scale)` with data-dependent initialisation.

  With `data_init`, the first call at `init` sets loc/log_scale so the init batch has zero mean
  and unit variance per dimension (Glow); without it the layer starts as the identity.
  """
  data_init: bool = True
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: Array, inverse: bool = False) -> tuple[Array, Array]:
    d = x.shape[-1]
    reduce_axes = tuple(range(x.ndim - 1))
    use_data = self.data_init and not inverse

    def init_loc(_):
      return -jnp.mean(x, reduce_axes) if use_data else jnp.zeros((d,), x.dtype)

    def init_log_scale(_):
      if not use_data:
        return jnp.zeros((d,), x.dtype)
      return -jnp.log(jnp.std(x, reduce_axes) + self.eps)

    loc = self.param("loc", init_loc)
    log_scale = self.param("log_scale", init_log_scale)
    logdet = jnp.broadcast_to(jnp.sum(log_scale), x.shape[:-1])
    if inverse:
      return x * jnp.exp(-log_scale) - loc, -logdet
    return (x + loc) * jnp.exp(log_scale), logdet


def leaky_relu_bijector(x: Array, slope: float, inverse: bool = False) -> tuple[Array, Array]:
  """Invertible LeakyReLU; logdet = (#negative entries) * log(slope), the term the reference drops.

  The sign is preserved by the map, so the negative entries are the same on either side.
  """
  neg = x < 0
  log_slope = math.log(slope)
  count = jnp.sum(neg, axis=-1).astype(x.dtype)
  if inverse:
    return jnp.where(neg, x / slope, x), -count * log_slope
  return jnp.where(neg, x * slope, x), count * log_slope


class CouplingMLP(nn.Module):
  """Dense(in->hidden) -> LReLU(0.01) -> n x [Dense(hidden->hidden) -> LReLU] -> Dense(->out).

  The last layer is zero-initialised so a fresh coupling is the identity (s = t = 0).
  """
  out_dim: int
  hidden: int
  num_hidden_layers: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = nn.leaky_relu(nn.Dense(self.hidden)(x), 0.01)
    for _ in range(self.num_hidden_layers):
      x = nn.leaky_relu(nn.Dense(self.hidden)(x), 0.01)
    return nn.Dense(self.out_dim, kernel_init=nn.initializers.zeros,
                    bias_init=nn.initializers.zeros)(x)


class DoubleAffineCoupling(nn.Module):
  """Halves (a, b): b <- b*exp(s1[a,c]) + t1[a,c]; then a <- a*exp(s2[b',c]) + t2[b',c].

  s and t are separate MLPs (as in the reference). An optional soft clamp
  `clamp * tanh(s / clamp)` bounds the log-scale; it is smooth and monotone so the map stays
  exactly invertible. `clamp=None` reproduces the reference.
  """
  hidden: int
  num_hidden_layers: int
  clamp: Optional[float] = 2.0

  def _log_scale(self, s: Array) -> Array:
    if self.clamp is None:
      return s
    return self.clamp * jnp.tanh(s / self.clamp)

  @nn.compact
  def __call__(self, x: Array, cond: Array, inverse: bool = False) -> tuple[Array, Array]:
    d = x.shape[-1]
    da, db = d // 2, d - d // 2
    mlp = lambda n, name: CouplingMLP(n, self.hidden, self.num_hidden_layers, name=name)
    s1, t1, s2, t2 = mlp(db, "s1"), mlp(db, "t1"), mlp(da, "s2"), mlp(da, "t2")
    a, b = x[..., :da], x[..., da:]
    if not inverse:
      h = jnp.concatenate([a, cond], -1)
      ls1 = self._log_scale(s1(h))
      b = b * jnp.exp(ls1) + t1(h)
      h = jnp.concatenate([b, cond], -1)
      ls2 = self._log_scale(s2(h))
      a = a * jnp.exp(ls2) + t2(h)
      return jnp.concatenate([a, b], -1), jnp.sum(ls1, -1) + jnp.sum(ls2, -1)
    h = jnp.concatenate([b, cond], -1)
    ls2 = self._log_scale(s2(h))
    a = (a - t2(h)) * jnp.exp(-ls2)
    h = jnp.concatenate([a, cond], -1)
    ls1 = self._log_scale(s1(h))
    b = (b - t1(h)) * jnp.exp(-ls1)
    return jnp.concatenate([a, b], -1), -(jnp.sum(ls1, -1) + jnp.sum(ls2, -1))


def block_permutation(seed: int, index: int, dim: int) -> np.ndarray:
  """The fixed permutation of block `index`: a pure function of (seed, index, dim)."""
  return np.random.default_rng([int(seed), int(index)]).permutation(dim).astype(np.int32)


class FlowBlock(nn.Module):
  """ActNorm -> LeakyReLU(slope) -> double affine coupling -> fixed permutation (forward order)."""
  hidden: int
  num_hidden_layers: int
  clamp: Optional[float] = 2.0
  leaky_slope: float = 0.9
  seed: int = 0
  index: int = 0
  actnorm_data_init: bool = True

  @nn.compact
  def __call__(self, x: Array, cond: Array, inverse: bool = False) -> tuple[Array, Array]:
    d = x.shape[-1]
    perm = self.variable(CONSTS, "perm",
                         lambda: jnp.asarray(block_permutation(self.seed, self.index, d))).value
    actnorm = ActNorm(self.actnorm_data_init, name="actnorm")
    coupling = DoubleAffineCoupling(self.hidden, self.num_hidden_layers, self.clamp,
                                    name="coupling")
    if not inverse:
      x, ld_an = actnorm(x)
      x, ld_lr = leaky_relu_bijector(x, self.leaky_slope)
      x, ld_c = coupling(x, cond)
      return jnp.take(x, perm, axis=-1), ld_an + ld_lr + ld_c
    x = jnp.take(x, jnp.argsort(perm), axis=-1)
    x, ld_c = coupling(x, cond, inverse=True)
    x, ld_lr = leaky_relu_bijector(x, self.leaky_slope, inverse=True)
    x, ld_an = actnorm(x, inverse=True)
    return x, ld_an + ld_lr + ld_c

  def forward(self, x: Array, cond: Array) -> tuple[Array, Array]:
    return self(x, cond)

  def inverse(self, y: Array, cond: Array) -> Array:
    return self(y, cond, inverse=True)[0]


class ConditionalFlow(nn.Module):
  """N flow blocks conditioned on `cond = [c, eta]` (eta only when `eta_dim > 0`).

  Control (SPEC §4): with `eta_dim > 0`, blocks whose index is a multiple of `control_every`
  see the full `[c, eta]`; the others see `c = cond[..., :cond_dim]` alone. The same rule is
  used for the binned bair control and the continuous shapes/texture control, so eta enters the
  flow at a few evenly spaced depths and the remaining blocks model the image-dependent part.
  """
  num_blocks: int = 20
  hidden: int = 512
  num_hidden_layers: int = 2
  clamp: Optional[float] = 2.0
  leaky_slope: float = 0.9
  cond_dim: int = 64
  eta_dim: int = 0
  control_every: int = 4
  seed: int = 0
  actnorm_data_init: bool = True

  def _block_cond(self, index: int, cond: Array) -> Array:
    if self.eta_dim and index % self.control_every != 0:
      return cond[..., :self.cond_dim]
    return cond

  @nn.compact
  def __call__(self, x: Array, cond: Array, inverse: bool = False) -> tuple[Array, Array]:
    if cond.shape[-1] != self.cond_dim + self.eta_dim:
      raise ValueError(
          f"The flow expects a condition of size cond_dim + eta_dim = {self.cond_dim} + "
          f"{self.eta_dim}, got {cond.shape[-1]}. Build it with stage2.condition(...), passing "
          f"eta exactly when config.stage2.control is set.")
    blocks = [
        FlowBlock(self.hidden, self.num_hidden_layers, self.clamp, self.leaky_slope, self.seed,
                  i, self.actnorm_data_init, name=f"block_{i}") for i in range(self.num_blocks)
    ]
    logdet = jnp.zeros(x.shape[:-1], x.dtype)
    order = reversed(range(self.num_blocks)) if inverse else range(self.num_blocks)
    for i in order:
      x, ld = blocks[i](x, self._block_cond(i, cond), inverse=inverse)
      logdet = logdet + ld
    return x, logdet

  def forward(self, z: Array, cond: Array) -> tuple[Array, Array]:
    """z -> (nu, log|det dnu/dz|): the NLL direction, T^-1 in the SPEC's notation."""
    return self(z, cond)

  def inverse(self, nu: Array, cond: Array) -> Array:
    """nu -> z: the sampling direction, T in the SPEC's notation."""
    return self(nu, cond, inverse=True)[0]


def build_conditional_flow(stage2_cfg, seed: int = 0) -> ConditionalFlow:
  """The flow of `config.stage2` (eta_dim counts only when control is on)."""
  eta_dim = int(stage2_cfg.eta_dim) if stage2_cfg.control else 0
  if stage2_cfg.control and eta_dim <= 0:
    raise ValueError(f"config.stage2.control={stage2_cfg.control!r} needs eta_dim > 0 "
                     f"(30 for 'bins', 4 for shapes), got {stage2_cfg.eta_dim}.")
  if stage2_cfg.control not in ("", "bins", "continuous"):
    raise ValueError(f"Unknown config.stage2.control={stage2_cfg.control!r}; use '', 'bins' "
                     f"or 'continuous'.")
  clamp = stage2_cfg.clamp
  return ConditionalFlow(
      num_blocks=int(stage2_cfg.num_blocks), hidden=int(stage2_cfg.hidden),
      num_hidden_layers=int(stage2_cfg.num_hidden_layers),
      clamp=None if clamp is None else float(clamp), leaky_slope=float(stage2_cfg.leaky_slope),
      cond_dim=int(stage2_cfg.cond_dim), eta_dim=eta_dim,
      control_every=int(stage2_cfg.control_every), seed=int(seed))
