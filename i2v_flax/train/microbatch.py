"""Gradient accumulation: the same update, `k` videos' worth of activations at a time.

Why: a batch whose activations do not fit (bair at batch 10 needs ~20 GB of XLA temporaries on
CPU) still trains with the batch it was tuned for. Every stage-1 loss is a mean over the batch,
so with equal microbatches the whole batch's gradient is the sum of each microbatch's gradient
of (its mean loss / k).

Two loops compute the same sum (`stage1.microbatch_loop`):
  'scan': one jitted step, the microbatches in a `lax.scan` (compiled once, no host round trip:
          the accelerator choice);
  'host': one jitted call per microbatch from Python. XLA-CPU runs the convolutions of a loop
          body ~7x slower than the same convolutions outside a loop (bair batch 2 in two
          microbatches: 299 s scanned, 59 s unrolled, 42 s in one pass; benchmarks/README.md),
          and unrolling plans as much memory as the whole batch, so on CPU the loop is Python's
          (bair batch 10 in five: 259 s in 13.2 GB of RSS, against 1864 s scanned).
'auto' is 'host' on CPU and 'scan' elsewhere.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from i2v_flax import errors

LOOPS = ("auto", "scan", "host")


def resolve_loop(loop: str) -> str:
  """'scan' or 'host' for `loop` on the current backend (see the module docstring)."""
  if loop not in LOOPS:
    raise errors.InvalidInput(f"Unknown stage1.microbatch_loop={loop!r}. "
                              "Fix: --config.stage1.microbatch_loop=auto (or scan, host)")
  if loop == "auto":
    return "host" if jax.default_backend() == "cpu" else "scan"
  return loop


def split(x: jax.Array, k: int) -> jax.Array:
  """(B, ...) -> (k, B / k, ...); microbatch j holds rows j, j + k, j + 2k, ... so each keeps
  the batch axis's data-parallel layout (a contiguous split would put a microbatch on a device)."""
  return x.reshape((x.shape[0] // k, k) + x.shape[1:]).swapaxes(0, 1)


def join(x: jax.Array) -> jax.Array:
  """Inverse of `split`: (k, B / k, ...) -> (B, ...)."""
  return x.swapaxes(0, 1).reshape((-1,) + x.shape[2:])


def take(x: jax.Array, k: int, j: jax.Array | int) -> jax.Array:
  """Microbatch j (a traced index is fine) of the k in `x`: split(x, k)[j]."""
  if k == 1:
    return x
  return jax.lax.dynamic_index_in_dim(split(x, k), j, 0, keepdims=False)


def _reduce(grads: Any, aux: tuple) -> tuple[Any, tuple]:
  """Of `aux` stacked over the microbatches: the first one's state (e.g. spectral-norm power
  iterations, which do not read the data), the mean of the scalar terms, and the per-video
  outputs joined back into batch order."""
  state, terms, *per_video = aux
  first = jax.tree.map(lambda a: a[0], state)
  return grads, (first, jax.tree.map(lambda a: jnp.mean(a, 0), terms), *map(join, per_video))


def accumulate(micro_grads: Callable[[Any], tuple[Any, tuple]], k: int) -> tuple[Any, tuple]:
  """Sum of micro_grads(j)'s gradients over j < k, inside a jitted function (a `lax.scan`).

  micro_grads(j) returns (grads, (state, terms, *per_video)) for microbatch j (see `take`); the
  aux comes back reduced as `_reduce` says. k == 1 calls it once, with no loop.
  """
  if k == 1:
    return micro_grads(0)
  grads_shape = jax.eval_shape(micro_grads, 0)[0]

  def body(total, j):
    grads, aux = micro_grads(j)
    return jax.tree.map(jnp.add, total, grads), aux

  zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), grads_shape)
  return _reduce(*jax.lax.scan(body, zeros, jnp.arange(k)))


@functools.partial(jax.jit, donate_argnums=0)
def _add(total: Any, grads: Any) -> Any:
  return jax.tree.map(jnp.add, total, grads)


def accumulate_on_host(micro_grads: Callable[[int], tuple[Any, tuple]], k: int
                       ) -> tuple[Any, tuple]:
  """`accumulate` with the loop in Python: micro_grads is a jitted call (j a traced argument,
  so one compilation serves every microbatch). Dispatch is asynchronous, so nothing waits on
  the host between microbatches."""
  total, auxes = None, []
  for j in range(k):
    grads, aux = micro_grads(j)
    total = grads if total is None else _add(total, grads)
    auxes.append(aux)
  return _reduce(total, jax.tree.map(lambda *a: jnp.stack(a), *auxes))
