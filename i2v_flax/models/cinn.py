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
(forward order), the same function as the reference's `ConditionalFlatDoubleCouplingFlowBlock`
(`shared/reference/README.md`, cINN section), so released checkpoints convert by copying:

* ActNorm stores a signed `scale` (y = scale * (x + loc), logdet = sum log|scale|), as the
  reference: a log-scale parametrisation could not hold a negative trained scale.
* The coupling returns its halves swapped, [b', a'], as the reference. We chose this over
  folding `(perm + D/2) % D` into the permutation at conversion time so that the stored
  permutation *is* the checkpoint's `forward_shuffle_idx` and every block's output equals the
  reference's block output (the fixtures' `intermediate/block_outputs` then locate a mismatch).
* Two deliberate departures, each a switch that a converted model turns off: the soft clamp
  of the coupling log-scale (`clamp=None` is the reference) and the LeakyReLU log-det term
  (`exact_leaky_logdet=False` gives the reference's logdet = ours - count * log(slope)).

Last layers of the coupling MLPs are zero-initialised, and ActNorm is initialised from the init
batch (data-dependent, at `init`), so a fresh flow whitens its init batch per dimension and is
otherwise a fixed permutation (the LeakyReLUs aside).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
# Variable collection holding the fixed permutations: not trained, but saved with the checkpoint
# so a restored flow is the same function even if the seeding scheme ever changes.
CONSTS = "consts"


def actnorm_init_stats(x: Array, eps: float = 1e-6) -> tuple[Array, Array]:
  """(loc, scale) that whiten `x` (N, ..., D) per last-axis channel, as the reference initialises.

  loc = -mean, scale = 1 / (std + eps) with the *unbiased* std (ddof 1), exactly the reference's
  first-forward initialisation. A single sample has no spread to measure, so it gives scale 1
  (the reference would produce NaN there).
  """
  axes = tuple(range(x.ndim - 1))
  n = int(np.prod([x.shape[a] for a in axes]))
  loc = -jnp.mean(x, axes)
  if n < 2:
    return loc, jnp.ones_like(loc)
  return loc, 1.0 / (jnp.std(x, axes, ddof=1) + eps)


class ActNorm(nn.Module):
  """Per-dimension affine `y = scale * (x + loc)` with data-dependent initialisation.

  `scale` is signed (logdet = sum log|scale|), as the reference stores it. With `data_init`,
  the call at `init` sets loc/scale so the init batch has zero mean and unit (unbiased)
  variance per dimension; without it the layer starts as the identity.
  """
  data_init: bool = True
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: Array, inverse: bool = False) -> tuple[Array, Array]:
    d = x.shape[-1]
    use_data = self.data_init and not inverse
    loc = self.param("loc", lambda _: (actnorm_init_stats(x, self.eps)[0] if use_data
                                       else jnp.zeros((d,), x.dtype)))
    scale = self.param("scale", lambda _: (actnorm_init_stats(x, self.eps)[1] if use_data
                                           else jnp.ones((d,), x.dtype)))
    logdet = jnp.broadcast_to(jnp.sum(jnp.log(jnp.abs(scale))), x.shape[:-1])
    if inverse:
      return x / scale - loc, -logdet
    return scale * (x + loc), logdet


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

  The reference's `BasicFullyConnectedNet` (Linear layers at `main.0, main.2, ...`). The last
  layer is zero-initialised so a fresh coupling only swaps its halves (s = t = 0).
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
  """Input [a, b]: b' = b*exp(s1(h_a)) + t1(h_a); a' = a*exp(s2(h_b')) + t2(h_b'); out [b', a'].

  h_u = [u, cond] normally; with `cond_only` (the reference's 'cond' mode for control blocks)
  h_u = cond, so the block is an element-wise affine map that depends on the condition only.
  The output halves come out swapped, as in the reference (see the module docstring).

  s and t are separate MLPs (as in the reference; s1/t1/s2/t2 are its s.0/t.0/s.1/t.1). An
  optional soft clamp `clamp * tanh(s / clamp)` bounds the log-scale; it is smooth and monotone
  so the map stays exactly invertible. `clamp=None` reproduces the reference.
  """
  hidden: int
  num_hidden_layers: int
  clamp: Optional[float] = 2.0
  cond_only: bool = False

  def _log_scale(self, s: Array) -> Array:
    if self.clamp is None:
      return s
    return self.clamp * jnp.tanh(s / self.clamp)

  def _input(self, half: Array, cond: Array) -> Array:
    if self.cond_only:
      return jnp.broadcast_to(cond, half.shape[:-1] + cond.shape[-1:])
    return jnp.concatenate([half, cond], -1)

  @nn.compact
  def __call__(self, x: Array, cond: Array, inverse: bool = False) -> tuple[Array, Array]:
    d = x.shape[-1]
    da, db = d // 2, d - d // 2
    mlp = lambda n, name: CouplingMLP(n, self.hidden, self.num_hidden_layers, name=name)
    s1, t1, s2, t2 = mlp(db, "s1"), mlp(db, "t1"), mlp(da, "s2"), mlp(da, "t2")
    if not inverse:
      a, b = x[..., :da], x[..., da:]
      h = self._input(a, cond)
      ls1 = self._log_scale(s1(h))
      b = b * jnp.exp(ls1) + t1(h)
      h = self._input(b, cond)
      ls2 = self._log_scale(s2(h))
      a = a * jnp.exp(ls2) + t2(h)
      return jnp.concatenate([b, a], -1), jnp.sum(ls1, -1) + jnp.sum(ls2, -1)
    b, a = x[..., :db], x[..., db:]
    h = self._input(b, cond)
    ls2 = self._log_scale(s2(h))
    a = (a - t2(h)) * jnp.exp(-ls2)
    h = self._input(a, cond)
    ls1 = self._log_scale(s1(h))
    b = (b - t1(h)) * jnp.exp(-ls1)
    return jnp.concatenate([a, b], -1), -(jnp.sum(ls1, -1) + jnp.sum(ls2, -1))


def block_permutation(seed: int, index: int, dim: int) -> np.ndarray:
  """The fixed permutation of block `index`: a pure function of (seed, index, dim)."""
  return np.random.default_rng([int(seed), int(index)]).permutation(dim).astype(np.int32)


class FlowBlock(nn.Module):
  """ActNorm -> LeakyReLU(slope) -> double affine coupling -> fixed permutation (forward order).

  The permutation is `y[..., k] = x[..., perm[k]]` (the reference's `forward_shuffle_idx`).
  """
  hidden: int
  num_hidden_layers: int
  clamp: Optional[float] = 2.0
  leaky_slope: float = 0.9
  seed: int = 0
  index: int = 0
  actnorm_data_init: bool = True
  cond_only: bool = False
  exact_leaky_logdet: bool = True

  @nn.compact
  def __call__(self, x: Array, cond: Array, inverse: bool = False) -> tuple[Array, Array]:
    d = x.shape[-1]
    perm = self.variable(CONSTS, "perm",
                         lambda: jnp.asarray(block_permutation(self.seed, self.index, d))).value
    actnorm = ActNorm(self.actnorm_data_init, name="actnorm")
    coupling = DoubleAffineCoupling(self.hidden, self.num_hidden_layers, self.clamp,
                                    self.cond_only, name="coupling")
    keep_lr = 1.0 if self.exact_leaky_logdet else 0.0
    if not inverse:
      x, ld_an = actnorm(x)
      x, ld_lr = leaky_relu_bijector(x, self.leaky_slope)
      x, ld_c = coupling(x, cond)
      return jnp.take(x, perm, axis=-1), ld_an + keep_lr * ld_lr + ld_c
    x = jnp.take(x, jnp.argsort(perm), axis=-1)
    x, ld_c = coupling(x, cond, inverse=True)
    x, ld_lr = leaky_relu_bijector(x, self.leaky_slope, inverse=True)
    x, ld_an = actnorm(x, inverse=True)
    return x, ld_an + keep_lr * ld_lr + ld_c

  def forward(self, x: Array, cond: Array) -> tuple[Array, Array]:
    return self(x, cond)

  def inverse(self, y: Array, cond: Array) -> Array:
    return self(y, cond, inverse=True)[0]


class ConditionalFlow(nn.Module):
  """N flow blocks, every one conditioned on the full `cond = [c, eta]` (eta when `eta_dim > 0`).

  Control (SPEC §4, the reference's `control=True`): with `eta_dim > 0`, blocks whose index is
  not a multiple of `control_every` are 'cond' blocks whose s/t nets see only `[c, eta]`, never
  a half of x (a conditional element-wise affine map); blocks at multiples of `control_every`
  see `[x_half, c, eta]`. The same rule serves the binned bair control and the continuous
  shapes/texture control. `block_modes` lists the mode of each block, as the fixtures do.
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
  exact_leaky_logdet: bool = True

  @property
  def block_modes(self) -> list[str]:
    """'normal' or 'cond' per block (the reference's names)."""
    return ["cond" if self.eta_dim and i % self.control_every != 0 else "normal"
            for i in range(self.num_blocks)]

  @nn.compact
  def __call__(self, x: Array, cond: Array, inverse: bool = False) -> tuple[Array, Array]:
    if cond.shape[-1] != self.cond_dim + self.eta_dim:
      raise ValueError(
          f"The flow expects a condition of size cond_dim + eta_dim = {self.cond_dim} + "
          f"{self.eta_dim}, got {cond.shape[-1]}. Build it with stage2.condition(...), passing "
          f"eta exactly when config.stage2.control is set.")
    blocks = [flow_block(self, i, name=f"block_{i}") for i in range(self.num_blocks)]
    logdet = jnp.zeros(x.shape[:-1], x.dtype)
    order = reversed(range(self.num_blocks)) if inverse else range(self.num_blocks)
    for i in order:
      x, ld = blocks[i](x, cond, inverse=inverse)
      logdet = logdet + ld
    return x, logdet

  def forward(self, z: Array, cond: Array) -> tuple[Array, Array]:
    """z -> (nu, log|det dnu/dz|): the NLL direction, T^-1 in the SPEC's notation."""
    return self(z, cond)

  def inverse(self, nu: Array, cond: Array) -> Array:
    """nu -> z: the sampling direction, T in the SPEC's notation."""
    return self(nu, cond, inverse=True)[0]


def flow_block(flow: ConditionalFlow, index: int, **kwargs: Any) -> FlowBlock:
  """Block `index` of `flow` as a module. Outside a Linen context it is a standalone module that
  takes `{'params': params['block_i'], 'consts': consts['block_i']}`, e.g. to inspect or
  re-initialise one block at a time."""
  return FlowBlock(flow.hidden, flow.num_hidden_layers, flow.clamp, flow.leaky_slope, flow.seed,
                   index, flow.actnorm_data_init, flow.block_modes[index] == "cond",
                   flow.exact_leaky_logdet, **kwargs)


def block_variables(variables: dict, index: int) -> dict:
  """The variables of block `index` of a ConditionalFlow, for `flow_block(flow, index)`."""
  return {col: tree[f"block_{index}"] for col, tree in variables.items()
          if f"block_{index}" in tree}


def data_init_actnorms(flow: ConditionalFlow, variables: dict, z: Array, cond: Array) -> dict:
  """`variables` with every ActNorm re-initialised from a batch, block after block.

  This is the reference's first-forward initialisation on given coupling weights: block i's
  loc/scale whiten the output of blocks 0..i-1 *with their new* loc/scale. (`flow.init` does the
  same, but on freshly initialised couplings.) Not jitted: it is a one-off.
  """
  params = dict(variables["params"])
  x = z
  for i in range(flow.num_blocks):
    loc, scale = actnorm_init_stats(x)
    block_params = dict(params[f"block_{i}"])
    block_params["actnorm"] = {"loc": loc, "scale": scale}
    params[f"block_{i}"] = block_params
    block_vars = block_variables({**variables, "params": params}, i)
    x, _ = flow_block(flow, i).apply(block_vars, x, cond)
  return {**variables, "params": params}


def build_conditional_flow(stage2_cfg, seed: int = 0) -> ConditionalFlow:
  """The flow of `config.stage2` (eta_dim counts only when control is on)."""
  eta_dim = int(stage2_cfg.eta_dim) if stage2_cfg.control else 0
  if eta_dim and float(stage2_cfg.get("eta_dropout", 0.0)) > 0:
    eta_dim += 1  # The 'eta given' indicator of optional control (stage2.optional_eta).
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
      control_every=int(stage2_cfg.control_every), seed=int(seed),
      exact_leaky_logdet=bool(stage2_cfg.get("exact_leaky_logdet", True)))
