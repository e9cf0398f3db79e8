"""Stage 1 training loop (conditional VAE-GAN) and the restore API used by stage 2 and sampling.

Workdir layout (fixed; stage 2, sampling and evaluation rely on it):
  workdir/config.json               the config of the run (compared on resume)
  workdir/checkpoints/stage1/       orbax; items 'models' ({'encoder', 'decoder'} variables) and
                                    'train' (step, rng, discriminators, optimiser states)
  workdir/tensorboard/stage1/       clu/TensorBoard scalars
  workdir/samples/stage1_<step>.gif [input | reconstruction | prior sample] grids
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import periodic_actions

from i2v_flax import config_lib, errors, parallel, paths, progress, video_io
from i2v_flax.models.decoder import Decoder
from i2v_flax.models.encoder import Encoder
from i2v_flax.train import checkpoints, common, run_config, validation
from i2v_flax.train.stage1_state import (MODEL_KEYS, Stage1Models, build_models,  # noqa: F401
                                         check_stage1_config, make_init_fn)
from i2v_flax.train.stage1_steps import make_steps  # noqa: F401

# Config fields that fix the shapes of stage-1 checkpoints: resuming with others must fail early.
ARCH_FIELDS = tuple(f"stage1.{k}" for k in (
    "z_dim", "enc_widths", "enc_stride_t", "enc_stride_s", "enc_x0_diff", "dec_nf", "dec_up_t",
    "dec_up_s", "dec_coords", "dec_output", "z_spatial", "dec_local_style", "spade_hidden",
    "spectral_norm", "dt_widths", "dt_stride_s", "ds_width")) + (
        "data.resolution", "data.clip_length")


def checkpoint_dir(workdir: str) -> str:
  return paths.join(workdir, "checkpoints", "stage1")


def encode(encoder: Encoder, enc_vars: dict, video_1_16: jax.Array, rng: jax.Array | None,
           x0: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(z, mu, logvar) of frames x_1..x_16 (B, 16, H, W, 3); rng=None gives z = mu. Jit-friendly.

  x0 (B, H, W, 3) is needed by encoders with `stage1.enc_x0_diff` (ignored otherwise).
  """
  return encoder.apply(enc_vars, video_1_16, rng, x0)


def decode(decoder: Decoder, dec_vars: dict, x0: jax.Array, z: jax.Array) -> jax.Array:
  """Frames x_1..x_16 (B, 16, H, W, 3) from x_0 (B, H, W, 3) and z; eval mode (stored spectral
  norm vectors, no update). Jit-friendly."""
  return decoder.apply(dec_vars, x0, z, False)


def _abstract_models(config: ml_collections.ConfigDict, models: Stage1Models) -> dict:
  r, s1 = config.data.resolution, config.stage1
  video = jax.ShapeDtypeStruct((1, config.data.clip_length - 1, r, r, 3), jnp.float32)
  x0 = jax.ShapeDtypeStruct((1, r, r, 3), jnp.float32)
  z = jax.ShapeDtypeStruct((1, s1.z_dim), jnp.float32)
  key = jax.random.PRNGKey(0)
  return {"encoder": jax.eval_shape(models.encoder.init, key, video, key, x0),
          "decoder": jax.eval_shape(models.decoder.init, key, x0, z)}


def restore_stage1(workdir: str, config: ml_collections.ConfigDict | None = None,
                   select: str | None = None) -> tuple[ml_collections.ConfigDict, dict]:
  """(stage-1 config, {'encoder': variables, 'decoder': variables}) of the selected checkpoint.

  `select`: 'best' (the best validation score, checkpoints/stage1_best; the latest when the
  workdir has none) or 'latest'; None = the config's stage1.select ('latest' for old configs).
  The config comes from workdir/config.json unless given. Only the 'models' item is read, so
  discriminators and optimiser states never occupy memory in stage 2 or sampling.
  """
  ckpt = checkpoint_dir(workdir)
  command = (f"python -m i2v_flax.main --config=configs/<dataset>.py --workdir={workdir} "
             "--mode=train_stage1")
  if not paths.isdir(ckpt):
    raise errors.MissingInput(f"No stage-1 checkpoints in {ckpt} (workdir {workdir!r}). Train "
                            f"stage 1 first: {command}")
  if config is None:
    config = run_config.read_config(workdir)
  mngr = checkpoints.make_checkpoint_manager(ckpt, save_interval_steps=1, max_to_keep=1_000_000,
                                             item_names=("models", "train"))
  try:
    if mngr.latest_step() is None:
      raise errors.MissingInput(f"{ckpt} holds no finished stage-1 checkpoint (workdir "
                              f"{workdir!r}). Train stage 1 first: {command}")
    abstract = checkpoints.abstract_like(_abstract_models(config, build_models(config)),
                                         parallel.replicated(parallel.make_mesh()))
    select = select or config.stage1.get("select", "latest")
    best = validation.restore_best(workdir, abstract) if select == "best" else None
    if best is not None:
      logging.info("Stage 1 of %s: the best validation checkpoint, step %d.", workdir, best[0])
      variables = best[1]
    else:
      variables = checkpoints.restore_checkpoint(mngr, {"models": abstract})["models"]
  finally:
    mngr.close()
  return config, variables


_STEPS_CACHE: dict = {}


def _cached_steps(config, models, mesh, lpips_params):
  """Reuse compiled steps when train() runs again in one process (resume, tests, notebooks)."""
  # batch_size is not loop-only: the reference's R1 weight is w_gp / B^2.
  loop_only = ("num_epochs", "num_train_steps", "warmup_steps", "log_every", "sample_every",
               "checkpoint_every", "keep_checkpoints", "select", "val_videos", "val_every",
               "val_metric")
  s1 = {k: v for k, v in config.stage1.to_dict().items() if k not in loop_only}
  key = (repr(sorted(s1.items())), config.compute_dtype, config.data.resolution,
         tuple(d.id for d in mesh.devices.flat), lpips_params is None)
  if key not in _STEPS_CACHE:
    _STEPS_CACHE.clear()  # Keep at most one set of compiled executables alive.
    _STEPS_CACHE[key] = make_steps(config, models, mesh, lpips_params)
  return _STEPS_CACHE[key]


def _log_eval(writer, steps, state, eval_video, step: int, workdir: str,
              rng: jax.Array) -> tuple[float, float]:
  recon, prior, psnr, z_use = steps["eval"](state, eval_video, rng)
  # Gathered on every process (a collective), written by process 0 only.
  video, recon, prior, psnr, z_use = parallel.to_host((eval_video, recon, prior, psnr, z_use))
  psnr, z_use = float(np.mean(psnr)), float(np.mean(z_use))
  writer.write_scalars(step, {"eval/psnr": psnr, "eval/z_use": z_use})
  if paths.is_primary():
    grid = video_io.video_grid([video[:, 1:], recon, prior])
    video_io.write_video(paths.join(workdir, "samples", f"stage1_{step}.gif"), grid)
  logging.info("stage 1 step %d: held-out reconstruction PSNR %.2f dB, z-use %.4f", step, psnr,
               z_use)
  return psnr, z_use


def train(config: ml_collections.ConfigDict, workdir: str,
          make_train_iter: Callable[[int], Iterator[dict]],
          eval_batch: dict | None = None, val_videos: np.ndarray | None = None) -> dict[str, Any]:
  """Train stage 1 from `make_train_iter(start_step)` batches ({'video': (B_local, 17, H, W, 3)}).

  Resumes from the latest checkpoint in the workdir; returns the final state. Iterators are made
  from the start step so a resumed run can continue the data stream where it stopped.
  `val_videos` (N, 17, H, W, 3): validation clips for the 'best' checkpoint (validation.py).
  """
  config = config_lib.resolve_epochs(config)
  s1 = config.stage1
  check_stage1_config(config)
  mesh = parallel.make_mesh()
  parallel.check_global_batch(s1.batch_size, mesh)
  run_config.check_compatible(workdir, config, ARCH_FIELDS)
  run_config.write_config(workdir, config)
  total = config_lib.steps(s1)
  models = build_models(config)
  lpips_params = None
  if s1.w_percep > 0:
    from i2v_flax.models import lpips  # VGG weights only when the perceptual loss is on.
    lpips_params = jax.device_put(lpips.load_lpips_params(), parallel.replicated(mesh))
  steps = _cached_steps(config, models, mesh, lpips_params)
  init_fn = make_init_fn(config, models)
  rng = jax.random.PRNGKey(config.seed)
  mngr = checkpoints.make_checkpoint_manager(checkpoint_dir(workdir),
                                             save_interval_steps=s1.checkpoint_every,
                                             max_to_keep=s1.keep_checkpoints,
                                             item_names=("models", "train"))
  writer = common.create_writer(paths.join(workdir, "tensorboard", "stage1"))
  stop = checkpoints.preemption_watch()
  start = mngr.latest_step() or 0
  batches = make_train_iter(start)
  first = next(batches)
  video = parallel.shard_batch(first["video"], mesh)
  init_jit = parallel.SyncedFirstCall(jax.jit(init_fn, out_shardings=parallel.replicated(mesh)))
  if start:
    abstract = checkpoints.abstract_like(jax.eval_shape(init_fn, video, rng),
                                         parallel.replicated(mesh))
    state = checkpoints.restore_state(mngr, abstract, MODEL_KEYS, start)
    logging.info("Resumed stage 1 from step %d in %s", start, checkpoint_dir(workdir))
  else:
    state = init_jit(video, rng)
  eval_video = None
  if eval_batch is not None:
    eval_video = parallel.shard_batch(eval_batch["video"], mesh)
  eval_rng = jax.random.PRNGKey(config.seed + 1)
  report = periodic_actions.ReportProgress(num_train_steps=total, writer=writer,
                                           every_secs=30.0)

  save = checkpoints.make_state_saver(mngr, MODEL_KEYS, last_saved=start)
  validator = None if val_videos is None else validation.Validator(
      config, val_videos, steps["val_recon"], mesh)
  best = validation.BestTracker(workdir, validator, validation.val_every(config))

  t_last, step_last = time.time(), start
  bar = progress.start("stage 1", total, initial=start)
  try:
    for step in range(start, total):
      adversarial = step >= s1.warmup_steps
      state, metrics, _ = steps["adv" if adversarial else "g_warmup"](state, video)
      if step + 1 < total:  # Fetch the next batch while the step runs (dispatch is async).
        video = parallel.shard_batch(next(batches)["video"], mesh)
      metrics = jax.device_get(metrics)
      common.check_finite(metrics, step, checkpoint_dir(workdir))
      done = step + 1
      report(done)
      bar.update(1, l1=float(metrics["l1"]))
      if done % s1.log_every == 0 or done == total:
        now = time.time()
        metrics["steps_per_sec"] = (done - step_last) / max(now - t_last, 1e-9)
        t_last, step_last = now, done
        writer.write_scalars(done, {k: float(v) for k, v in metrics.items()})
      if eval_video is not None and (done % s1.sample_every == 0 or done == total):
        psnr, z_use = _log_eval(writer, steps, state, eval_video, done, workdir, eval_rng)
        bar.set_metrics(psnr=psnr, z_use=z_use)
      if best.due(done, total):
        bar.set_metrics(**{f"val_{s1.val_metric}": best(
            done, {k: state[k] for k in MODEL_KEYS}, writer)})
      if done % s1.checkpoint_every == 0 or done == total:
        save(done, state)
      if stop.reached(done):
        logging.warning("SIGTERM: saving stage-1 checkpoint at step %d and exiting.", done)
        save(done, state)
        break
  finally:
    bar.close()
    best.close()
    mngr.wait_until_finished()
    mngr.close()
    writer.flush()
  return state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """`--mode=train_stage1`: train on config.data's train split, sample/PSNR on a test batch."""
  from i2v_flax import data as data_lib
  data_lib.prepare(config.data)
  num_videos = data_lib.num_examples(config.data, "train")
  config = config_lib.resolve_epochs(config, num_videos)  # dtdb's epoch counts the videos.
  validation.check_holdout(config, num_videos)
  train_split, val_split = validation.splits(config)
  bs = config.stage1.batch_size

  def make_train_iter(start: int) -> Iterator[dict]:
    # A different seed per start step: a resumed run sees fresh clips rather than a replay.
    return data_lib.create_iterator(config.data, train_split, bs, seed=config.seed + start)

  eval_batch = next(data_lib.create_iterator(config.data, "test", bs, seed=0, shuffle=False,
                                             repeat=True))
  val_videos = None
  if val_split is not None:  # One clip per held-out video, drawn (and augmented) like training
    # clips with a fixed seed; batches of the device count (a remainder below it is dropped).
    val_videos = np.concatenate([b["video"] for b in data_lib.create_iterator(
        config.data, val_split, jax.device_count(), seed=config.seed, shuffle=False,
        repeat=False)])
  return train(config, workdir, make_train_iter, eval_batch, val_videos)
