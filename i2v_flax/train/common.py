"""Training pieces shared by stage 1 and stage 2 that know nothing of the models.

Mesh-aware jit, clu writers, a non-finite guard that stops before a bad state can be saved, and
small metrics. Checkpoints live in `checkpoints`, optimisers in `optimizers`, config.json in
`run_config`, GIF grids in `video_io`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from clu import metric_writers
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from i2v_flax import errors, parallel


# ---------------------------------------------------------------------------- jit on the mesh
def _to_shardings(specs: Any, mesh: Mesh) -> Any:
  return jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), specs,
                                is_leaf=lambda x: isinstance(x, P))


def mesh_jit(fn: Callable, mesh: Mesh, in_specs: Sequence[Any], out_specs: Any,
             donate_argnums: Sequence[int] = ()) -> Callable:
  """`jax.jit` with shardings given as PartitionSpec prefixes (P() replicated, P('data') batch).

  Pinning the output shardings keeps parameters replicated step after step (XLA would otherwise
  be free to pick a different layout), so the same code runs on 1 device or a pod slice. With
  several processes the first call compiles, then waits for the other processes
  (`parallel.SyncedFirstCall`).
  """
  jitted = jax.jit(fn, in_shardings=_to_shardings(tuple(in_specs), mesh),
                   out_shardings=_to_shardings(out_specs, mesh),
                   donate_argnums=tuple(donate_argnums))
  return parallel.SyncedFirstCall(jitted)


REPLICATED = P()
BATCH = P(parallel.DATA_AXIS)


class BoundTrailingArgs:
  """A jitted (or AOT-compiled) function with its last arguments fixed, called with the leading
  ones only; `.lower(...).compile()` gives a compiled function bound the same way, and other
  attributes (`cost_analysis`, `as_text`, ...) are the wrapped function's. Unlike a closure, the
  bound arrays stay arguments of the compiled computation instead of constants baked into it."""

  def __init__(self, fn: Callable, *bound: Any):
    self.fn, self.bound = fn, bound

  def __call__(self, *args: Any) -> Any:
    return self.fn(*args, *self.bound)

  def lower(self, *args: Any) -> "BoundTrailingArgs":
    lowered = self.fn.lower(*args, *self.bound)
    return BoundTrailingArgs(lowered, *self.bound)

  def compile(self) -> "BoundTrailingArgs":
    return BoundTrailingArgs(self.fn.compile(), *self.bound)

  def __getattr__(self, name: str) -> Any:
    if name in ("fn", "bound"):  # Not set yet (e.g. while unpickling): no recursion.
      raise AttributeError(name)
    return getattr(self.fn, name)


# ---------------------------------------------------------------------------- metrics
def create_writer(logdir: str) -> metric_writers.MetricWriter:
  """TensorBoard + console writer on process 0; logging only elsewhere (no duplicate event files)."""
  return metric_writers.create_default_writer(logdir, just_logging=jax.process_index() > 0)


class NonFiniteLossError(errors.UserError, FloatingPointError):
  """Raised when a loss is NaN/inf; the state of that step is never checkpointed. A UserError:
  the fix (a lower learning rate, clean data) is the user's, and the CLI prints it in one line."""


def check_finite(metrics: Mapping[str, Any], step: int, checkpoint_dir: str) -> None:
  """Raise NonFiniteLossError naming the bad terms, the step and the last good checkpoint."""
  bad = {k: float(v) for k, v in metrics.items() if not np.all(np.isfinite(np.asarray(v)))}
  if bad:
    raise NonFiniteLossError(
        f"Non-finite values at step {step}: {bad}. Training stopped; the last good checkpoint in "
        f"{checkpoint_dir} is intact (this step was not saved). Fix: lower the learning rate or "
        "check the data for NaNs, then rerun the same command to resume.")


def global_norm(tree: Any) -> jax.Array:
  return optax.global_norm(tree)


def count_params(tree: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def psnr(a: jax.Array, b: jax.Array) -> jax.Array:
  """Per-sample PSNR in dB of videos/images in [-1, 1] (peak 1 after mapping to [0, 1])."""
  mse = jnp.mean(((a - b) / 2.0) ** 2, axis=tuple(range(1, a.ndim)))
  return 10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-10))
