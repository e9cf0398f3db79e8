"""Orbax checkpoints for both stages: atomic saves, a 'models'/'train' split, a SIGTERM save.

The 'models' item is what later stages and sampling restore; 'train' (optimisers, discriminators,
rng) only matters for resuming. Saves are atomic (orbax writes a tmp dir and renames), so a
crash or preemption never leaves a half-written step that a resume would pick up.

Topology: arrays are stored whole (global shapes, no device layout), and every restore names its
own target sharding, so a checkpoint written by 2 processes x 2 devices restores on 1 device and
the other way round. Directories go through etils.epath (orbax's own path type): gs:// works.

Preemption on pods: a SIGTERM reaches one host, but every host must save the same step (a save is
collective) and stop together. `preemption_watch()` uses JAX's preemption sync manager (the
coordination service agrees on one step for all processes) when there are several processes,
and a plain signal flag otherwise.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable, Mapping, Sequence

import jax
import orbax.checkpoint as ocp

from i2v_flax import errors, paths


def make_checkpoint_manager(directory: str, *, save_interval_steps: int, max_to_keep: int,
                            item_names: Sequence[str]) -> ocp.CheckpointManager:
  """An orbax manager whose saves are atomic (tmp dir + rename) and pruned to `max_to_keep`."""
  options = ocp.CheckpointManagerOptions(save_interval_steps=save_interval_steps,
                                         max_to_keep=max_to_keep, create=True)
  return ocp.CheckpointManager(paths.path(directory), options=options,
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


_PREEMPTED = threading.Event()  # Process-wide: a preempted stage 1 must not start stage 2.


class PreemptionWatch:
  """`reached(step)`: True once a SIGTERM (on any process) asks the run to save and stop.

  Call it at the end of every step on every process with the same step numbers. Several
  processes: JAX's preemption sync point (JAX's own SIGTERM notifier, armed by
  jax.distributed.initialize, tells the coordination service, which picks one step every process
  stops at, so all save the same step). One process: a Python signal flag (the step it arrives
  at). Either way `preempted()` stays True afterwards, so later phases of the job are skipped.
  """

  def __init__(self) -> None:
    self.multi = jax.process_count() > 1
    _PREEMPTED.clear()  # A new training run in this process (tests, notebooks) starts afresh.
    if not self.multi:  # The Python handler would replace JAX's C++ notifier: only without one.
      _install_sigterm_handler()

  def reached(self, step: int) -> bool:
    if self.multi and not _PREEMPTED.is_set():
      from jax.experimental import multihost_utils
      if multihost_utils.reached_preemption_sync_point(step):
        _PREEMPTED.set()
    return _PREEMPTED.is_set()


def preemption_watch() -> PreemptionWatch:
  """See `PreemptionWatch`; one per training loop."""
  return PreemptionWatch()


def preempted() -> bool:
  """Whether the last training loop in this process stopped for a SIGTERM."""
  return _PREEMPTED.is_set()


_ORIGINAL_HANDLER: list = []


def _install_sigterm_handler() -> None:
  """SIGTERM sets the flag once; a second SIGTERM gets the handler the process had before.

  Only from the main thread (signal's rule); elsewhere the flag just never fires.
  """
  if threading.current_thread() is not threading.main_thread():
    return
  if not _ORIGINAL_HANDLER:
    _ORIGINAL_HANDLER.append(signal.getsignal(signal.SIGTERM))

  def handler(signum, frame):
    del signum, frame
    _PREEMPTED.set()
    previous = _ORIGINAL_HANDLER[0]
    signal.signal(signal.SIGTERM, previous if callable(previous) else signal.SIG_DFL)

  signal.signal(signal.SIGTERM, handler)
