"""The data-parallel mesh: batch sharded over a 'data' axis, parameters replicated.

Works unchanged on one CPU, fake CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8),
one GPU or a multi-host TPU slice, because every host only ever hands in its own local batch.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from i2v_flax import errors

DATA_AXIS = "data"


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over all (or the given) devices, axis name 'data'."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over 'data', everything else whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_global_batch(global_batch_size: int, mesh: Mesh) -> None:
  """Fail early with a fix when the batch cannot be split evenly over devices and hosts."""
  n_dev = mesh.devices.size
  if global_batch_size % n_dev:
    raise errors.InvalidInput(
        f"Global batch size {global_batch_size} is not divisible by the {n_dev} devices of the "
        f"mesh. Fix: set the batch size to a multiple of {n_dev} "
        f"(e.g. --config.stage1.batch_size={max(n_dev, global_batch_size // n_dev * n_dev)}).")
  if global_batch_size % jax.process_count():
    raise errors.InvalidInput(
        f"Global batch size {global_batch_size} is not divisible by the "
        f"{jax.process_count()} processes.")


def local_batch_size(global_batch_size: int) -> int:
  """The slice of the global batch this process loads."""
  return global_batch_size // jax.process_count()


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Turn this host's numpy batch (a pytree) into global jax.Arrays sharded over 'data'."""
  sharding = data_sharding(mesh)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def to_host(tree: Any) -> Any:
  """numpy copies of (possibly batch-sharded) global arrays, on every process.

  With several processes a batch-sharded array has rows on other hosts, which `jax.device_get`
  refuses; they are gathered (a collective: every process must call this at the same point).
  """
  def get(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
      from jax.experimental import multihost_utils
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
  return jax.tree_util.tree_map(get, tree)


def global_from_host(tree: Any, mesh: Mesh) -> Any:
  """Batch-shard numpy arrays that every process holds in full (same values everywhere).

  `shard_batch` takes each process's own rows; this takes the whole batch on every process
  (inference on shared inputs, e.g. the report's test clips), each device reading its rows.
  """
  sharding = data_sharding(mesh)

  def put(x: Any) -> jax.Array:
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree_util.tree_map(put, tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Place a pytree (e.g. parameters, optimiser state) fully replicated on the mesh."""
  return jax.device_put(tree, replicated(mesh))


def barrier(name: str, timeout_s: int = 3600) -> None:
  """Wait until every process reaches `name` (no-op with one process).

  Uses the coordination service's barrier, not a device collective: CPU collectives (gloo) give
  up when processes arrive more than 30 s apart whatever the XLA timeout flags say (jax#40831),
  and compiling a step on a loaded host can take longer than that.
  """
  if jax.process_count() == 1:
    return
  from jax._src import distributed  # The public API has no barrier without a collective.
  client = distributed.global_state.client
  if client is None:  # Not initialised through jax.distributed: fall back to a collective.
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
    return
  client.wait_at_barrier(name, timeout_in_ms=int(timeout_s * 1000))


class SyncedFirstCall:
  """A jitted function whose first call, with several processes, compiles ahead of time and then
  waits at a barrier, so all processes enter its first collective together (see `barrier`).

  Later calls go straight to the jitted function (compiled once: the AOT compilation fills the
  same cache). Other attributes (`lower`, ...) are the jitted function's.
  """

  _count = 0  # Barrier names: every process makes its first calls in the same order.

  def __init__(self, jitted: Any):
    self._jitted = jitted
    self._synced = False

  def __call__(self, *args: Any) -> Any:
    if not self._synced and jax.process_count() > 1:
      self._jitted.lower(*args).compile()
      SyncedFirstCall._count += 1
      barrier(f"i2v_first_call_{SyncedFirstCall._count}")
    self._synced = True
    return self._jitted(*args)

  def __getattr__(self, name: str) -> Any:
    return getattr(self._jitted, name)
