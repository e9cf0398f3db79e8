"""Stage-1 losses (SPEC §3.5): reconstruction, KL, LPIPS, hinge GAN terms, R1, feature matching.

All are pure functions of arrays (and, for D terms, of a D apply function), so they can be unit
tested on tiny inputs and composed inside one jitted step.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from i2v_flax.models import lpips as lpips_lib


def l1(fake: jax.Array, real: jax.Array) -> jax.Array:
  """Mean absolute error over every pixel of every frame (= average of per-frame L1)."""
  return jnp.mean(jnp.abs(fake - real))


def l2(fake: jax.Array, real: jax.Array) -> jax.Array:
  """Mean squared error over every pixel of every frame: what PSNR scores (demo option)."""
  return jnp.mean(jnp.square(fake - real))


def kl_standard_normal(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mu, exp(logvar)) || N(0, I)): summed over latent dims, mean over the batch."""
  return jnp.mean(-0.5 * jnp.sum(1.0 + logvar - mu**2 - jnp.exp(logvar), axis=-1))


def perceptual(lpips_params: Any, fake: jax.Array, real: jax.Array) -> jax.Array:
  """LPIPS-VGG between videos (B, T, H, W, 3), averaged over all frames.

  Only called when w_percep > 0, so a run with w_percep = 0 never needs the VGG weights.
  """
  flat = lambda v: v.reshape((-1,) + v.shape[2:])  # noqa: E731
  return jnp.mean(lpips_lib.lpips_distance(lpips_params, flat(fake), flat(real)))


def hinge_d(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """½[mean relu(1 − D(real)) + mean relu(1 + D(fake))]."""
  return 0.5 * (jnp.mean(jax.nn.relu(1.0 - real_logits)) +
                jnp.mean(jax.nn.relu(1.0 + fake_logits)))


def generator_adversarial(fake_logits: jax.Array) -> jax.Array:
  """G_X = −mean D_X(fake)."""
  return -jnp.mean(fake_logits)


def feature_matching(real_features: Sequence[jax.Array],
                     fake_features: Sequence[jax.Array]) -> jax.Array:
  """Mean over D_T's stage features of mean |f(real) − f(fake)|; real features are constants."""
  terms = [jnp.mean(jnp.abs(jax.lax.stop_gradient(r) - f))
           for r, f in zip(real_features, fake_features)]
  return sum(terms) / len(terms)


def r1_penalty(logits_fn: Callable[[jax.Array], Any], real: jax.Array, has_aux: bool = False
               ) -> tuple[jax.Array, ...]:
  """Per-sample R1: mean over i of ‖∂D(real_i)/∂real_i‖²; returns (penalty, logits[, aux]).

  Because D treats samples independently (GroupNorm, no batch statistics), the gradient of
  Σ_i D(real_i) w.r.t. the batch holds every per-sample gradient at once; squaring and summing
  per sample then averaging gives the right value (the reference divides by B² by mistake).
  `has_aux`: logits_fn returns (logits, aux), e.g. updated spectral-norm state.
  """
  if has_aux:
    logits, vjp, aux = jax.vjp(logits_fn, real, has_aux=True)
  else:
    logits, vjp = jax.vjp(logits_fn, real)
  (grad,) = vjp(jnp.ones_like(logits))
  per_sample = jnp.sum(grad.reshape(grad.shape[0], -1) ** 2, axis=-1)
  return (jnp.mean(per_sample), logits, aux) if has_aux else (jnp.mean(per_sample), logits)
