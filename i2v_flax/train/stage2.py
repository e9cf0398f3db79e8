"""Stage 2 training loop (the cINN on a frozen stage 1) and the restore API used by sampling.

Public API (pure functions, jit-friendly; re-exported from stage2_steps):
  build_flow(config) -> (flow, embedder)
  condition(embedder, emb_vars, x0, eta=None) -> cond              [c(x_0), eta]
  flow_forward(flow, flow_vars, nu, cond) -> z                     T: sampling direction
  flow_inverse(flow, flow_vars, z, cond) -> (nu, logdet)           T^-1: explaining; the NLL's
                                                                   direction, logdet=log|dnu/dz|
  restore_stage2(workdir, config=None) -> (config, {'flow', 'embedder', 'step'})

Workdir layout (stage 1's plus):
  workdir/checkpoints/stage2/       orbax; items 'models' ({'flow', 'embedder'} variables) and
                                    'train' (step, rng, optimiser state)
  workdir/tensorboard/stage2/       loss, nll, logdet, bits_per_dim, nll_ref, lr, ... (see
                                    stage2_steps.nll_metrics for which include constants)
  workdir/samples/stage2_<step>.gif rows: [real clip | 4 samples from its x_0], x_0 as frame 0
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import periodic_actions

from i2v_flax import config_lib, errors, parallel, paths, progress, video_io
from i2v_flax.models.embedder import embedder_is_frozen
from i2v_flax.train import checkpoints, common, run_config, stage1
from i2v_flax.train.stage2_steps import (MODEL_KEYS, build_flow, condition,  # noqa: F401
                                         flow_forward, flow_inverse, make_init_fn, make_steps,
                                         nll_metrics)

# Fields that fix the shapes (or the function) of stage-2 checkpoints.
ARCH_FIELDS = tuple(f"stage2.{k}" for k in (
    "num_blocks", "hidden", "num_hidden_layers", "cond_dim", "embedder", "embedder_norm",
    "embedder_widths", "control", "eta_dim", "control_every", "eta_dropout", "leaky_slope")) + (
        "seed", "stage1.z_dim", "data.resolution")
NUM_SAMPLES = 4


def checkpoint_dir(workdir: str) -> str:
  return paths.join(workdir, "checkpoints", "stage2")


def stage1_workdir(config: ml_collections.ConfigDict, workdir: str) -> str:
  return config.stage2.stage1_workdir or workdir


def load_frozen_stage1(config: ml_collections.ConfigDict, workdir: str
                       ) -> tuple[ml_collections.ConfigDict, dict]:
  """Stage-1 (config, {'encoder', 'decoder'}) checked against this run's z_dim and resolution.

  The stage-1 checkpoint is restored with the config it was trained with (its own config.json),
  so a mismatch surfaces here with both values and the fix instead of as an orbax shape error.
  """
  s1_dir = stage1_workdir(config, workdir)
  fix = (f"Fix: train stage 1 there first (--mode=train_stage1 --workdir={s1_dir}) or point "
         "--config.stage2.stage1_workdir at a finished stage-1 workdir.")
  ckpt = stage1.checkpoint_dir(s1_dir)
  if not paths.isdir(ckpt) or not paths.exists(paths.join(s1_dir, run_config.CONFIG_FILE)):
    raise errors.MissingInput(f"Stage 2 needs a trained stage 1, but {ckpt} (or its config.json) "
                            f"does not exist. {fix}")
  s1_config = run_config.read_config(s1_dir)
  for field, ours, theirs in (
      ("stage1.z_dim", config.stage1.z_dim, s1_config.stage1.z_dim),
      ("data.resolution", config.data.resolution, s1_config.data.resolution)):
    if int(ours) != int(theirs):
      raise errors.InvalidInput(
          f"The stage-1 checkpoint in {s1_dir} was trained with {field}={theirs}, but this "
          f"stage-2 config has {field}={ours}. Fix: use the stage-1 run's setting "
          f"(--config.{field}={theirs}) or a stage-1 workdir trained with {field}={ours}.")
  try:
    # This run's stage1.select (command line) picks the checkpoint: 'best' by default.
    return stage1.restore_stage1(s1_dir, s1_config, select=config.stage1.get("select"))
  except FileNotFoundError as e:
    raise errors.MissingInput(f"{e} {fix}") from e


def _abstract_models(config: ml_collections.ConfigDict) -> dict:
  flow, embedder = build_flow(config)
  r, s2 = config.data.resolution, config.stage2
  z = jax.ShapeDtypeStruct((1, config.stage1.z_dim), jnp.float32)
  x0 = jax.ShapeDtypeStruct((1, r, r, 3), jnp.float32)
  eta = jax.ShapeDtypeStruct((1, s2.eta_dim), jnp.float32) if s2.control else None
  init = make_init_fn(config, flow, embedder)
  return jax.eval_shape(init, z, x0, eta, jax.random.PRNGKey(0))


def restore_stage2(workdir: str, config: ml_collections.ConfigDict | None = None
                   ) -> tuple[ml_collections.ConfigDict, dict]:
  """(config, {'flow': variables, 'embedder': variables, 'step': int}) of the latest checkpoint.

  The config comes from workdir/config.json unless given. Optimiser state is never read.
  """
  ckpt = checkpoint_dir(workdir)
  if config is None:
    config = run_config.read_config(workdir)
  mngr = checkpoints.make_checkpoint_manager(ckpt, save_interval_steps=1, max_to_keep=1_000_000,
                                             item_names=("models", "train"))
  try:
    step = mngr.latest_step() if paths.isdir(ckpt) else None
    if step is None:
      raise errors.MissingInput(
          f"No stage-2 checkpoint in {ckpt}. Train stage 2 first: python -m i2v_flax.main "
          f"--config=configs/<dataset>.py --workdir={workdir} --mode=train_stage2")
    abstract = _abstract_models(config)
    abstract = checkpoints.abstract_like({k: abstract[k] for k in MODEL_KEYS},
                                         parallel.replicated(parallel.make_mesh()))
    variables = checkpoints.restore_checkpoint(mngr, {"models": abstract}, step=step)["models"]
  finally:
    mngr.close()
  return config, {**variables, "step": int(step)}


def check_embedder_init(config: ml_collections.ConfigDict) -> None:
  """Fail before any compilation when a frozen embedder's init weights are missing."""
  s2 = config.stage2
  path = s2.embedder_init
  if not (embedder_is_frozen(s2) and path):
    return
  if s2.embedder == "resnet50" and os.path.isfile(path):
    return
  if not paths.isdir(checkpoint_dir(path)):
    what = ("the authors' Encoder_stage2.pth (or an .npz of its state_dict) or a stage-2 "
            "workdir with embedder='resnet50'" if s2.embedder == "resnet50" else
            f"a workdir whose stage 2 trained an embedder with embedder_widths="
            f"{tuple(s2.embedder_widths)} and cond_dim={s2.cond_dim}")
    raise errors.MissingInput(
        f"config.stage2.embedder_init={path!r} is neither a weights file nor a stage-2 workdir "
        f"(no {checkpoint_dir(path)}). Fix: point it at {what}, or unset it to freeze the "
        "random initialisation.")


def _converted_embedder(config: ml_collections.ConfigDict, path: str) -> dict:
  """ResNet-50 variables from the authors' Encoder_stage2.pth (or its state_dict as .npz)."""
  from i2v_flax.convert import stage2 as convert_stage2
  state_dict = convert_stage2.read_state_dict(path)
  z = convert_stage2.embedder_cond_dim(state_dict)
  if z != int(config.stage2.cond_dim):
    raise errors.InvalidInput(f"{path!r} is an embedder with a {z}-d condition, config.stage2.cond_dim="
                     f"{config.stage2.cond_dim}. Fix: --config.stage2.cond_dim={z}.")
  return convert_stage2.embedder_variables(state_dict, str(config.stage2.embedder_norm))


def load_embedder_init(config: ml_collections.ConfigDict, target: dict) -> dict:
  """Pretrained embedder variables for a frozen embedder, shaped like `target`: converted from
  a weights file (resnet50), or from a stage-2 workdir with the same embedder settings."""
  path = config.stage2.embedder_init
  check_embedder_init(config)
  if os.path.isfile(path):
    variables = _converted_embedder(config, path)
  else:
    src_config = run_config.read_config(path)
    fields = ("embedder", "cond_dim") + (("embedder_norm",) if config.stage2.embedder ==
                                         "resnet50" else ("embedder_widths",))
    for field in fields:  # Workdirs from before `embedder` existed hold the small ResNet.
      src = src_config.stage2.get(field, "resnet_small" if field == "embedder" else None)
      if list(np.atleast_1d(src)) != list(np.atleast_1d(config.stage2[field])):
        raise errors.InvalidInput(f"embedder_init {path!r} has stage2.{field}={src}, this run "
                         f"{config.stage2[field]}. Fix: make them equal.")
    variables = restore_stage2(path, src_config)[1]["embedder"]
  if jax.tree_util.tree_structure(variables) != jax.tree_util.tree_structure(target):
    raise errors.InvalidInput(f"The embedder weights in {path!r} do not have this run's structure "
                     "(e.g. a 'bn' checkpoint for embedder_norm='in'). Fix: match "
                     "config.stage2.embedder / embedder_norm to the weights.")
  return jax.tree_util.tree_map(lambda t, v: jnp.asarray(v, t.dtype), target, variables)


def _write_samples(steps, state, dec_vars, sample_batch, step: int, workdir: str,
                   rng: jax.Array) -> None:
  # Gathered on every process (a collective), written by process 0 only.
  videos, real = parallel.to_host((steps["sample"](state, dec_vars, sample_batch, rng),
                                   sample_batch["video"]))
  if not paths.is_primary():
    return
  x0 = real[:, :1]
  columns = [real] + [np.concatenate([x0, videos[:, k]], axis=1) for k in range(videos.shape[1])]
  video_io.write_video(paths.join(workdir, "samples", f"stage2_{step}.gif"),
                   video_io.video_grid(columns, max_rows=4))


def _model_batch(config: ml_collections.ConfigDict, batch: dict) -> dict:
  """Keep what the steps read; fail clearly when control is on but the data has no eta."""
  out = {"video": batch["video"]}
  if config.stage2.control:
    if "eta" not in batch:
      raise errors.InvalidInput(f"config.stage2.control={config.stage2.control!r} but the batches carry no "
                       "'eta'. Fix: --config.data.control=True.")
    if batch["eta"].shape[-1] != config.stage2.eta_dim:
      raise errors.InvalidInput(f"The data's eta has {batch['eta'].shape[-1]} dims, config.stage2.eta_dim="
                       f"{config.stage2.eta_dim}. Fix: --config.stage2.eta_dim="
                       f"{batch['eta'].shape[-1]}.")
    out["eta"] = batch["eta"]
  return out


def train(config: ml_collections.ConfigDict, workdir: str,
          make_train_iter: Callable[[int], Iterator[dict]],
          sample_batch: dict | None = None) -> dict[str, Any]:
  """Train the flow (and embedder) on z sampled from the frozen stage-1 encoder; resumes from the
  latest stage-2 checkpoint in the workdir. Returns the final state."""
  config = config_lib.resolve_epochs(config)
  s2 = config.stage2
  mesh = parallel.make_mesh()
  parallel.check_global_batch(s2.batch_size, mesh)
  check_embedder_init(config)
  s1_config, s1_vars = load_frozen_stage1(config, workdir)
  s1_models = stage1.build_models(s1_config)
  if paths.path(stage1_workdir(config, workdir)) == paths.path(workdir):
    # config.json is about to be rewritten; it must keep describing the stage-1 checkpoint.
    run_config.check_compatible(workdir, config, stage1.ARCH_FIELDS)
  if paths.isdir(checkpoint_dir(workdir)):
    run_config.check_compatible(workdir, config, ARCH_FIELDS)
  run_config.write_config(workdir, config)
  s1_vars = parallel.replicate(s1_vars, mesh)
  enc_vars, dec_vars = s1_vars["encoder"], s1_vars["decoder"]
  flow, embedder = build_flow(config)
  steps = make_steps(config, flow, embedder, s1_models.encoder, s1_models.decoder, mesh)
  total = config_lib.steps(s2)
  rng = jax.random.PRNGKey(config.seed + 2)
  mngr = checkpoints.make_checkpoint_manager(checkpoint_dir(workdir),
                                             save_interval_steps=s2.checkpoint_every,
                                             max_to_keep=s2.keep_checkpoints,
                                             item_names=("models", "train"))
  writer = common.create_writer(paths.join(workdir, "tensorboard", "stage2"))
  stop = checkpoints.preemption_watch()
  start = mngr.latest_step() or 0
  batches = make_train_iter(start)
  batch = parallel.shard_batch(_model_batch(config, next(batches)), mesh)
  init_fn = make_init_fn(config, flow, embedder)
  if start:
    abstract = checkpoints.abstract_like(_abstract_models(config), parallel.replicated(mesh))
    state = checkpoints.restore_state(mngr, abstract, MODEL_KEYS, start)
    logging.info("Resumed stage 2 from step %d in %s", start, checkpoint_dir(workdir))
  else:
    k_init, k_z = jax.random.split(rng)
    with mesh:
      z = steps["encode"](enc_vars, batch["video"], k_z)
    init_jit = parallel.SyncedFirstCall(jax.jit(init_fn, out_shardings=parallel.replicated(mesh)))
    state = init_jit(z, batch["video"][:, 0], batch.get("eta"), k_init)
    if embedder_is_frozen(s2) and s2.embedder_init:
      state["embedder"] = parallel.replicate(load_embedder_init(config, state["embedder"]), mesh)
    elif embedder_is_frozen(s2):
      logging.warning("A frozen %s x_0 embedder without embedder_init stays at its random "
                      "initialisation. Fix: --config.stage2.embedder_init=<weights>.", s2.embedder)
  n_params = {k: common.count_params(state[k]["params"]) for k in MODEL_KEYS}
  logging.info("Stage 2: flow %d params, embedder %d params (%s), %d steps", n_params["flow"],
               n_params["embedder"], "frozen" if embedder_is_frozen(s2) else "trained", total)
  if sample_batch is not None:
    sample_batch = parallel.shard_batch(_model_batch(config, sample_batch), mesh)
  sample_rng = jax.random.PRNGKey(config.seed + 3)
  report = periodic_actions.ReportProgress(num_train_steps=total, writer=writer, every_secs=30.0)

  save = checkpoints.make_state_saver(mngr, MODEL_KEYS, last_saved=start)

  t_last, step_last = time.time(), start
  bar = progress.start("stage 2", total, initial=start)
  try:
    for step in range(start, total):
      if step > start:
        batch = parallel.shard_batch(_model_batch(config, next(batches)), mesh)
      state, metrics = steps["train"](state, batch, enc_vars)
      done = step + 1
      report(done)
      bar.update(1)
      if done % s2.log_every == 0 or done == total or done == start + 1:
        metrics = jax.device_get(metrics)
        common.check_finite(metrics, step, checkpoint_dir(workdir))
        now = time.time()
        metrics["steps_per_sec"] = (done - step_last) / max(now - t_last, 1e-9)
        t_last, step_last = now, done
        writer.write_scalars(done, {k: float(v) for k, v in metrics.items()})
        bar.set_metrics(nll=float(metrics["nll"]))
        eta_s = (total - done) / max(metrics["steps_per_sec"], 1e-9)  # Recent rate, no compile.
        logging.info("stage 2 step %d/%d: nll %.3f (N(0,1) ref %.3f) bits/dim %.3f, %.2f steps/s,"
                     " ETA %.1f min", done, total, metrics["nll"], metrics["nll_ref"],
                     metrics["bits_per_dim"], metrics["steps_per_sec"], eta_s / 60)
      if sample_batch is not None and (done % s2.sample_every == 0 or done == total):
        _write_samples(steps, state, dec_vars, sample_batch, done, workdir, sample_rng)
      if done % s2.checkpoint_every == 0 or done == total:
        # Checked before saving: a non-finite state must never reach a checkpoint.
        common.check_finite(jax.device_get(metrics), step, checkpoint_dir(workdir))
        save(done, state)
      if stop.reached(done):
        logging.warning("SIGTERM: saving stage-2 checkpoint at step %d and exiting.", done)
        common.check_finite(jax.device_get(metrics), step, checkpoint_dir(workdir))
        save(done, state)
        break
  finally:
    bar.close()
    mngr.wait_until_finished()
    mngr.close()
    writer.flush()
  return state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """`--mode=train_stage2`: train on config.data's train split; GIF samples from test x_0."""
  from i2v_flax import data as data_lib
  if config.stage2.control and not config.data.control:
    raise errors.InvalidInput(f"config.stage2.control={config.stage2.control!r} needs eta from the data. "
                     "Fix: --config.data.control=True (or --config.stage2.control='').")
  data_lib.prepare(config.data)
  config = config_lib.resolve_epochs(config, data_lib.num_examples(config.data, "train"))
  bs = config.stage2.batch_size

  def make_train_iter(start: int) -> Iterator[dict]:
    # A different seed per start step: a resumed run sees fresh clips rather than a replay.
    return data_lib.create_iterator(data_lib.stage2_data(config.data), "train", bs,
                                    seed=config.seed + start)  # Stage 2's own augmentation.

  # A few rows, but divisible by the device count so the batch shards over the mesh.
  rows = -(-NUM_SAMPLES // jax.device_count()) * jax.device_count()
  sample_batch = next(data_lib.create_iterator(config.data, "test", rows, seed=0, shuffle=False,
                                               repeat=True))
  return train(config, workdir, make_train_iter, sample_batch)
