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
