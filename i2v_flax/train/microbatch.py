"""Gradient accumulation inside one jitted step: the same update, `k` videos' worth at a time.

Why: a batch whose activations do not fit (bair at batch 10 needs ~20 GB of XLA temporaries on
CPU) still trains with the batch it was tuned for. Every stage-1 loss is a mean over the batch,
so with equal microbatches the whole batch's gradient is the sum of each microbatch's gradient
of (its mean loss / k); the loop is a `lax.scan`, so its body is compiled once.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def split(x: jax.Array, k: int) -> jax.Array:
  """(B, ...) -> (k, B / k, ...); microbatch j holds rows j, j + k, j + 2k, ... so each keeps
  the batch axis's data-parallel layout (a contiguous split would put a microbatch on a device)."""
  return x.reshape((x.shape[0] // k, k) + x.shape[1:]).swapaxes(0, 1)


def join(x: jax.Array) -> jax.Array:
  """Inverse of `split`: (k, B / k, ...) -> (B, ...)."""
  return x.swapaxes(0, 1).reshape((-1,) + x.shape[2:])


def accumulate(micro_grads: Callable[..., tuple[Any, tuple]], k: int, *batched: jax.Array
               ) -> tuple[Any, tuple]:
  """Sum of micro_grads(j, *microbatch_j)'s gradients over the k microbatches of `batched`.

  micro_grads returns (grads, (state, terms, *per_video)): of `state` (e.g. spectral-norm power
  iterations, which do not read the data) the first microbatch's is kept, the scalar `terms`
  are averaged and the per-video outputs joined back into batch order. k == 1 calls it once.
  """
  if k == 1:
    return micro_grads(0, *batched)
  xs = (jnp.arange(k),) + tuple(split(a, k) for a in batched)
  grads_shape = jax.eval_shape(micro_grads, *jax.tree.map(lambda a: a[0], xs))[0]

  def body(total, xs):
    grads, aux = micro_grads(*xs)
    return jax.tree.map(jnp.add, total, grads), aux

  zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), grads_shape)
  grads, (state, terms, *per_video) = jax.lax.scan(body, zeros, xs)
  first = jax.tree.map(lambda a: a[0], state)
  return grads, (first, jax.tree.map(lambda a: jnp.mean(a, 0), terms), *map(join, per_video))
