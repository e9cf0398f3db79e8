"""Optimisers with torch's semantics, so a config's numbers mean what they meant in the reference.

torch's Adam couples weight decay into the gradient and steps its lr decay once per epoch; the
reference's stage 2 uses torch's AMSGrad. Each has a subtly different optax spelling, kept here.
"""

from __future__ import annotations

import optax

from i2v_flax import errors


def adam_coupled_wd(lr: float, b1: float, b2: float, weight_decay: float, steps_per_epoch: int,
                    decay_per_epoch: float, eps: float = 1e-8
                    ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """torch.optim.Adam(weight_decay=wd) + ExponentialLR(gamma) stepped once per epoch.

  torch's Adam adds wd * param to the gradient *before* the moment estimates (coupled L2, not
  AdamW), which is why `add_decayed_weights` comes first in the chain. The epoch-wise decay is a
  staircase in steps. Returns the transformation and the schedule (for logging the lr).
  """
  if steps_per_epoch <= 0:
    raise errors.InvalidInput(f"steps_per_epoch must be positive, got {steps_per_epoch}. Fix: set it to "
                     "(train videos / global batch size) in the config.")
  schedule = optax.exponential_decay(lr, transition_steps=steps_per_epoch,
                                     decay_rate=decay_per_epoch, staircase=True)
  chain = [optax.scale_by_adam(b1=b1, b2=b2, eps=eps), optax.scale_by_learning_rate(schedule)]
  if weight_decay:
    chain.insert(0, optax.add_decayed_weights(weight_decay))
  return optax.chain(*chain), schedule
