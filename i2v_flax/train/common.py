"""Training infrastructure shared by stage 1 and stage 2 (generic: nothing here knows the models).

Mesh-aware jit, orbax checkpoint managers with a SIGTERM save, clu writers, the coupled-weight-
decay Adam of torch, a non-finite guard that stops before a bad state can be saved, atomic GIF
writing and config.json save/compare. Each piece exists so both stages behave the same on a
laptop CPU, fake devices, one GPU or a TPU slice, and so a crash never corrupts a workdir.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from clu import metric_writers
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from i2v_flax import errors, parallel, video_io

CONFIG_FILE = "config.json"


# ---------------------------------------------------------------------------- jit on the mesh
def _to_shardings(specs: Any, mesh: Mesh) -> Any:
  return jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), specs,
                                is_leaf=lambda x: isinstance(x, P))


def mesh_jit(fn: Callable, mesh: Mesh, in_specs: Sequence[Any], out_specs: Any,
             donate_argnums: Sequence[int] = ()) -> Callable:
  """`jax.jit` with shardings given as PartitionSpec prefixes (P() replicated, P('data') batch).

  Pinning the output shardings keeps parameters replicated step after step (XLA would otherwise
  be free to pick a different layout), so the same code runs on 1 device or a pod slice.
  """
  return jax.jit(fn, in_shardings=_to_shardings(tuple(in_specs), mesh),
                 out_shardings=_to_shardings(out_specs, mesh), donate_argnums=tuple(donate_argnums))


REPLICATED = P()
BATCH = P(parallel.DATA_AXIS)


# ---------------------------------------------------------------------------- optimiser
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


# ---------------------------------------------------------------------------- checkpoints
def make_checkpoint_manager(directory: str, *, save_interval_steps: int, max_to_keep: int,
                            item_names: Sequence[str]) -> ocp.CheckpointManager:
  """An orbax manager whose saves are atomic (tmp dir + rename) and pruned to `max_to_keep`."""
  options = ocp.CheckpointManagerOptions(save_interval_steps=save_interval_steps,
                                         max_to_keep=max_to_keep, create=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_names=tuple(item_names))


def save_checkpoint(manager: ocp.CheckpointManager, step: int, items: Mapping[str, Any],
                    force: bool = False) -> bool:
  """Save named pytrees at `step` (respecting the interval unless `force`)."""
  args = ocp.args.Composite(**{k: ocp.args.StandardSave(v) for k, v in items.items()})
  return manager.save(step, args=args, force=force)


def split_state(state: Mapping[str, Any], model_keys: Sequence[str]) -> dict[str, dict]:
  """A stage's state as the two checkpoint items: 'models' (what later stages and sampling
  restore) and 'train' (optimisers, discriminators, rng)."""
  return {"models": {k: state[k] for k in model_keys},
          "train": {k: v for k, v in state.items() if k not in model_keys}}


def restore_state(manager: ocp.CheckpointManager, abstract_state: Mapping[str, Any],
                  model_keys: Sequence[str], step: int) -> dict[str, Any]:
  """Inverse of saving `split_state(state)`: the whole state dict at `step`."""
  items = restore_checkpoint(manager, split_state(abstract_state, model_keys), step=step)
  return {**items["models"], **items["train"]}


def make_state_saver(manager: ocp.CheckpointManager, model_keys: Sequence[str],
                     last_saved: int) -> Callable[[int, Mapping[str, Any]], None]:
  """`save(step, state)` that always writes (interval or not) but never writes one step twice:
  a SIGTERM arriving on an interval step would otherwise hit orbax's StepAlreadyExistsError."""
  saved = [last_saved]

  def save(step: int, state: Mapping[str, Any]) -> None:
    if step == saved[0]:
      return
    saved[0] = step
    save_checkpoint(manager, step, split_state(state, model_keys), force=True)

  return save


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """ShapeDtypeStructs of `tree` (arrays or eval_shape output) carrying `sharding` for restore."""
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def restore_checkpoint(manager: ocp.CheckpointManager, abstract_items: Mapping[str, Any],
                       step: int | None = None) -> dict[str, Any]:
  """Restore a subset of the named items (latest step by default) into the abstract targets."""
  step = manager.latest_step() if step is None else step
  if step is None:
    raise errors.MissingInput(f"No checkpoint in {manager.directory}.")
  args = ocp.args.Composite(**{k: ocp.args.StandardRestore(v) for k, v in abstract_items.items()})
  restored = manager.restore(step, args=args)
  return {k: restored[k] for k in abstract_items}


def install_sigterm_flag() -> threading.Event:
  """An Event set on SIGTERM (preemption), so the loop can save a final checkpoint and exit.

  Only installed from the main thread (signal's rule); elsewhere the event just never fires.
  """
  event = threading.Event()
  if threading.current_thread() is threading.main_thread():
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
      del signum, frame
      event.set()
      signal.signal(signal.SIGTERM, previous if callable(previous) else signal.SIG_DFL)

    signal.signal(signal.SIGTERM, handler)
  return event


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


# ---------------------------------------------------------------------------- videos
to_uint8 = video_io.to_uint8  # One implementation of the [-1, 1] -> uint8 mapping.


def video_grid(columns: Sequence[Any], max_rows: int = 4, pad: int = 1) -> np.ndarray:
  """Columns of videos (B, T, H, W, 3) in [-1, 1] -> one (T, H', W', 3) uint8 grid video.

  Row i shows sample i of every column side by side (e.g. [input | reconstruction | sample]).
  Columns with fewer frames hold their last frame.
  """
  cols = [np.asarray(c)[:max_rows] for c in columns]
  t = max(c.shape[1] for c in cols)
  cols = [np.concatenate([c, np.repeat(c[:, -1:], t - c.shape[1], axis=1)], axis=1)
          if c.shape[1] < t else c for c in cols]
  rows = []
  for i in range(cols[0].shape[0]):
    row = [np.pad(c[i], ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=1.0)
           for c in cols]
    rows.append(np.concatenate(row, axis=2))
  return to_uint8(np.concatenate(rows, axis=1))


def write_gif(path: str, frames: np.ndarray, fps: int = 8) -> None:
  """Write a (T, H, W, 3) uint8 GIF atomically (see video_io.write_video)."""
  video_io.write_video(path, frames, fps=fps)


def psnr(a: jax.Array, b: jax.Array) -> jax.Array:
  """Per-sample PSNR in dB of videos/images in [-1, 1] (peak 1 after mapping to [0, 1])."""
  mse = jnp.mean(((a - b) / 2.0) ** 2, axis=tuple(range(1, a.ndim)))
  return 10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-10))


# ---------------------------------------------------------------------------- config.json
def _plain(config: ml_collections.ConfigDict | Mapping) -> dict:
  if isinstance(config, ml_collections.ConfigDict):
    return json.loads(config.to_json())
  return json.loads(json.dumps(config))


def write_config(workdir: str, config: ml_collections.ConfigDict) -> str:
  """Write workdir/config.json atomically (process 0 only); returns its path."""
  path = os.path.join(workdir, CONFIG_FILE)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".json", dir=workdir)
    with os.fdopen(fd, "w") as f:
      json.dump(_plain(config), f, indent=2, sort_keys=True)
    os.replace(tmp, path)
  return path


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config saved in workdir/config.json (lists where the file had tuples)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise errors.MissingInput(f"{path} does not exist: {workdir!r} is not a training workdir.")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def _get(tree: Mapping, dotted: str) -> Any:
  for part in dotted.split("."):
    tree = tree[part]
  return tree


def check_compatible(workdir: str, config: ml_collections.ConfigDict,
                     fields: Sequence[str]) -> None:
  """Refuse to resume a workdir whose saved config differs in architecture-defining fields.

  A checkpoint only restores into the shapes it was written with; failing here with the list of
  differences beats an opaque orbax shape error later. Nothing is checked if no config.json exists.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return
  with open(path) as f:
    saved = json.load(f)
  new = _plain(config)
  diffs = []
  for field in fields:
    try:
      old_v = _get(saved, field)
    except KeyError:
      continue
    if old_v != _get(new, field):
      diffs.append(f"{field}: saved {old_v!r}, now {_get(new, field)!r}")
  if diffs:
    raise errors.InvalidInput(
        f"Workdir {workdir} holds a run with a different architecture ({'; '.join(diffs)}). "
        "Fix: use a new --workdir, or restore these settings to resume.")
