"""Optimisers with torch's semantics, so a config's numbers mean what they meant in the reference.

torch's Adam couples weight decay into the gradient and steps its lr decay once per epoch; the
reference's stage 2 uses torch's AMSGrad. Each has a subtly different optax spelling, kept here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from i2v_flax import errors


def adam_coupled_wd(lr: float, b1: float, b2: float, weight_decay: float, steps_per_epoch: int,
                    decay_per_epoch: float, eps: float = 1e-8, cooldown_start: int = 0,
                    cooldown_steps: int = 0
                    ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """torch.optim.Adam(weight_decay=wd) + ExponentialLR(gamma) stepped once per epoch.

  torch's Adam adds wd * param to the gradient *before* the moment estimates (coupled L2, not
  AdamW), which is why `add_decayed_weights` comes first in the chain. The epoch-wise decay is a
  staircase in steps. Returns the transformation and the schedule (for logging the lr).

  `cooldown_steps > 0` (not in the reference) multiplies that schedule by a half cosine from 1
  to 0 over updates [cooldown_start, cooldown_start + cooldown_steps): a short run at a high lr
  ends on noisy weights, and annealing them is worth most of a dB on the demo (README).
  """
  if steps_per_epoch <= 0:
    raise errors.InvalidInput(f"steps_per_epoch must be positive, got {steps_per_epoch}. Fix: set it to "
                     "(train videos / global batch size) in the config.")
  schedule = optax.exponential_decay(lr, transition_steps=steps_per_epoch,
                                     decay_rate=decay_per_epoch, staircase=True)
  if cooldown_steps > 0:
    schedule = _with_cosine_cooldown(schedule, cooldown_start, cooldown_steps)
  chain = [optax.scale_by_adam(b1=b1, b2=b2, eps=eps), optax.scale_by_learning_rate(schedule)]
  if weight_decay:
    chain.insert(0, optax.add_decayed_weights(weight_decay))
  return optax.chain(*chain), schedule


def _with_cosine_cooldown(schedule: optax.Schedule, start: int, steps: int) -> optax.Schedule:
  def cooled(count):
    frac = jnp.clip((count - start) / steps, 0.0, 1.0)
    return schedule(count) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
  return cooled


def scale_by_amsgrad_torch(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
                           ) -> optax.GradientTransformation:
  """torch.optim.Adam(amsgrad=True)'s direction (before the lr), as an optax transform.

  torch keeps the running max of the RAW second moment v_t and divides by sqrt(1 - b2^t) after
  the max: d = m_t / (1 - b1^t) / (sqrt(max_{s<=t} v_s) / sqrt(1 - b2^t) + eps).
  `optax.scale_by_amsgrad` takes the max of the bias-CORRECTED v_s / (1 - b2^s) instead; early in
  training (1 - b2^s) is small, so one noisy early gradient latches a large corrected maximum and
  the effective step stays 13-47 % below torch's for the whole run (issue 14). The state is
  optax's `ScaleByAmsgradState` (count, mu, nu, nu_max), so checkpoints keep their structure.
  """

  def init_fn(params):
    zeros = lambda: jax.tree_util.tree_map(jnp.zeros_like, params)  # noqa: E731
    return optax.ScaleByAmsgradState(count=jnp.zeros([], jnp.int32), mu=zeros(), nu=zeros(),
                                     nu_max=zeros())

  def update_fn(updates, state, params=None):
    del params
    mu = jax.tree_util.tree_map(lambda g, m: b1 * m + (1 - b1) * g, updates, state.mu)
    nu = jax.tree_util.tree_map(lambda g, v: b2 * v + (1 - b2) * g * g, updates, state.nu)
    nu_max = jax.tree_util.tree_map(jnp.maximum, state.nu_max, nu)
    count = optax.safe_increment(state.count)
    t = count.astype(jnp.float32)
    bc1, bc2 = 1 - b1**t, 1 - b2**t
    out = jax.tree_util.tree_map(lambda m, v: (m / bc1) / (jnp.sqrt(v) / jnp.sqrt(bc2) + eps),
                                 mu, nu_max)
    return out, optax.ScaleByAmsgradState(count=count, mu=mu, nu=nu, nu_max=nu_max)

  return optax.GradientTransformation(init_fn, update_fn)


def amsgrad_step_decay(lr: float, b1: float, b2: float, steps_per_epoch: int,
                       decay_every_epochs: int, decay_factor: float, semantics: str = "torch",
                       weight_decay: float = 0.0
                       ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Stage 2's optimiser: torch Adam(amsgrad=True, weight_decay) + StepLR(step_size, gamma).

  The lr is multiplied by `decay_factor` every `decay_every_epochs` epochs. `semantics='torch'`
  (the reference) uses `scale_by_amsgrad_torch`; 'optax' keeps `optax.amsgrad`'s corrected max
  (this code base's behaviour before issue 14, kept for runs tuned with it). Weight decay is
  coupled (added to the gradient), as torch's; the reference uses 0.
  """
  if steps_per_epoch <= 0 or decay_every_epochs <= 0:
    raise errors.InvalidInput(f"stage2.steps_per_epoch ({steps_per_epoch}) and decay_every_epochs "
                              f"({decay_every_epochs}) must be positive. Fix: set "
                              "steps_per_epoch to train clips / batch size.")
  if semantics not in ("torch", "optax"):
    raise errors.InvalidInput(f"amsgrad semantics {semantics!r} is neither 'torch' nor 'optax'. "
                              "Fix: --config.stage2.amsgrad=torch")
  schedule = optax.exponential_decay(lr, transition_steps=int(decay_every_epochs *
                                                               steps_per_epoch),
                                     decay_rate=decay_factor, staircase=True)
  scale = (scale_by_amsgrad_torch(b1, b2) if semantics == "torch"
           else optax.scale_by_amsgrad(b1=b1, b2=b2))
  chain = [scale, optax.scale_by_learning_rate(schedule)]
  if weight_decay:
    chain.insert(0, optax.add_decayed_weights(weight_decay))
  return optax.chain(*chain), schedule
