"""The three computations the benchmarks time and profile, built once with random weights.

Why one place: the profile (profile_ops.py) must look at exactly the computation the timing
scripts time (stage1_step.py, stage2_step.py, sample.py), with the same shapes and random
weights as the reference timings in ../shared/PERFORMANCE.md.
  stage1  one adversarial iteration (D_T, D_S and G updates), jitted, state donated
  stage2  one stage-2 training step (frozen encoder forward + embedder + flow + AMSGrad)
  sample  embedder + cINN + video decoder for a batch of x_0 (what VideoModel.sample calls)
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from i2v_flax import config_lib, parallel, sampling
from i2v_flax.train import stage1, stage2, stage2_steps


def stage1_setup(config: ml_collections.ConfigDict, batch: int = 0) -> dict[str, Any]:
  """Random-weight stage-1 state, a random clip batch and the jitted steps (`config` resolved)."""
  from i2v_flax.train.stage1_state import build_models, make_init_fn
  from i2v_flax.train.stage1_steps import make_steps
  s1 = config.stage1
  if batch:
    s1.batch_size = batch
  mesh = parallel.make_mesh()
  r = config.data.resolution
  video = parallel.shard_batch(np.tanh(np.random.RandomState(0).randn(
      s1.batch_size, config.data.clip_length, r, r, 3)).astype(np.float32), mesh)
  models = build_models(config)
  lpips_params = None
  if s1.w_percep > 0:
    from i2v_flax.models import lpips
    lpips_params = jax.device_put(lpips.load_lpips_params(), parallel.replicated(mesh))
  steps = make_steps(config, models, mesh, lpips_params)
  state = jax.jit(make_init_fn(config, models))(video, jax.random.PRNGKey(0))
  return {"steps": steps, "state": state, "video": video, "models": models, "mesh": mesh,
          "lpips_params": lpips_params}


def stage2_setup(config: ml_collections.ConfigDict, batch: int = 0) -> dict[str, Any]:
  """Random-weight stage-2 state, a random batch, encoder variables, the flow and jitted steps."""
  s2 = config.stage2
  if batch:
    s2.batch_size = batch
  b, r = int(s2.batch_size), int(config.data.resolution)
  mesh = parallel.make_mesh()
  rng = np.random.default_rng(0)
  data = {"video": rng.uniform(-1, 1, (b, config.data.clip_length, r, r, 3)).astype(np.float32)}
  if s2.control:
    data["eta"] = rng.uniform(0, 1, (b, int(s2.eta_dim))).astype(np.float32)
  data = parallel.shard_batch(data, mesh)
  models = stage1.build_models(config)
  enc_vars = jax.jit(models.encoder.init, out_shardings=parallel.replicated(mesh))(
      jax.random.PRNGKey(0), data["video"][:, 1:], jax.random.PRNGKey(1), data["video"][:, 0])
  flow, embedder = stage2.build_flow(config)
  steps = stage2.make_steps(config, flow, embedder, models.encoder, models.decoder, mesh)
  key = jax.random.PRNGKey(2)
  z = steps["encode"](enc_vars, data["video"], key)
  state = jax.jit(stage2.make_init_fn(config, flow, embedder),
                  out_shardings=parallel.replicated(mesh))(
                      z, data["video"][:, 0], data.get("eta"), key)
  return {"steps": steps, "state": state, "batch": data, "enc_vars": enc_vars, "flow": flow,
          "embedder": embedder, "key": key, "z": z}


def _stage1(config: ml_collections.ConfigDict, batch: int, step: str = "adv"
            ) -> tuple[Callable, tuple]:
  s = stage1_setup(config, batch)
  return s["steps"][step], (s["state"], s["video"])


def _stage2(config: ml_collections.ConfigDict, batch: int) -> tuple[Callable, tuple]:
  s = stage2_setup(config, batch)
  return s["steps"]["train"], (s["state"], s["batch"], s["enc_vars"])


def random_model(config: ml_collections.ConfigDict) -> sampling.VideoModel:
  """A VideoModel with freshly initialised weights (no workdir needed)."""
  mesh = parallel.make_mesh()
  r, d = int(config.data.resolution), int(config.stage1.z_dim)
  x0 = np.zeros((1, r, r, 3), np.float32)
  z = np.zeros((1, d), np.float32)
  eta = np.zeros((1, int(config.stage2.eta_dim)), np.float32) if config.stage2.control else None
  models = stage1.build_models(config)
  flow, embedder = stage2.build_flow(config)
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  video = np.zeros((1, 16, r, r, 3), np.float32)
  variables = {"encoder": jax.jit(models.encoder.init)(keys[0], video, None, x0),
               "decoder": jax.jit(models.decoder.init)(keys[1], x0, z)}
  variables["embedder"] = jax.jit(embedder.init)(keys[2], x0)
  cond = stage2.condition(embedder, variables["embedder"], x0,
                          stage2_steps.optional_eta(config, eta))  # + 'given' with eta dropout.
  variables["flow"] = jax.jit(flow.init)(keys[2], z, cond)
  return sampling.VideoModel(config=config, step=0, variables=parallel.replicate(variables, mesh),
                             stage1_models=models, flow=flow, embedder=embedder, mesh=mesh)


def _sample(config: ml_collections.ConfigDict, batch: int) -> tuple[Callable, tuple]:
  model = random_model(config)
  r, d = model.resolution, model.z_dim
  rng = np.random.default_rng(0)
  x0 = jax.numpy.asarray(rng.uniform(-1, 1, (batch or 1, r, r, 3)).astype(np.float32))
  nu = jax.numpy.asarray(rng.standard_normal((batch or 1, d)).astype(np.float32))
  eta = None
  if config.stage2.control:
    eta = jax.numpy.asarray(rng.uniform(0, 1, (batch or 1, int(config.stage2.eta_dim))),
                            jax.numpy.float32)
  return model._generate, (model.variables, x0, nu, eta)  # pylint: disable=protected-access


def build(target: str, config: ml_collections.ConfigDict, batch: int = 0
          ) -> tuple[Callable, tuple, int]:
  """(jitted fn, args, batch size) for 'stage1', 'stage2' or 'sample'."""
  # Epoch lengths only set lr schedules here; a per-video epoch (dtdb) assumes 100 videos.
  config = config_lib.resolve_epochs(config, num_train_videos=100)
  # 'stage1_warmup': the generator step without GAN terms (all the demo's stage 1 runs).
  fn, args = {"stage1": _stage1, "stage2": _stage2, "sample": _sample,
              "stage1_warmup": lambda c, b: _stage1(c, b, "g_warmup")}[target](config, batch)
  size = {"stage2": config.stage2.batch_size, "sample": batch or 1}.get(
      target, config.stage1.batch_size)
  return fn, args, int(size)


def next_args(target: str, args: tuple, out: Any) -> tuple:
  """Arguments of the next call: the training steps donate their state, so feed the new one."""
  if target in ("stage1", "stage1_warmup", "stage2"):
    return (out[0],) + tuple(args[1:])
  return args
