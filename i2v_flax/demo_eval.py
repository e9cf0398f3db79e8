"""The numbers behind the demo's report: does stage 1 use z, and do the samples move like the data?

`python -m i2v_flax.main` ends with a report; on `shapes` it also scores the trained model on the
test videos (`config.report.num_videos`, the paper protocol's 256), because a GIF alone has
fooled us before and a metric alone has too. Everything here is ground truth that only the
procedural data can give:

  stage1            held-out reconstruction PSNR from the posterior mean, next to the two
                    baselines a collapsed decoder reaches (copying x_0 into every frame, and the
                    clip's own temporal mean, which needs the future), and z-use (the mean change
                    of the reconstruction when another video's z is decoded: ~0 = posterior
                    collapse).
  methods           `evaluation.protocol` on `config.report.metrics` for the cINN, "w/o cINN"
                    (z ~ N(0, I)) and "static" (x_0 repeated): the paper's ablation ordering;
                    with optional control also "cinn + eta" (the clip's true eta given), whose
                    final_pos_error is the control accuracy over all test clips.
  real              the same tracker on the real clips (mean speed), and the final-position
                    spread of the *true* futures of each x_0 (the generator's physics from the
                    real start, fresh velocities), the diversity the samples should reach.
  control           object 0 sent towards each corner from each of the first 16 test start
                    frames: how close it ends to the requested position (px), next to how far
                    that position is from the start (the error of an object that stays put).
  transfer          motion transfer (video A's nu decoded from B's x_0): how far B's object's
                    displacement is from A's (px), next to the same error for a fresh sample of
                    B, the error a transfer that carries no motion information reaches.
"""

from __future__ import annotations

import copy
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from i2v_flax.train import common, stage1


def stage1_heldout(model: Any, videos: np.ndarray) -> dict[str, float]:
  """Reconstruction PSNR (posterior mean), its baselines and z-use on (N, 17, H, W, 3) clips."""
  enc, dec = model.stage1_models.encoder, model.stage1_models.decoder

  def fn(variables, video):
    x0, target = video[:, 0], video[:, 1:]
    _, mu, _ = stage1.encode(enc, variables["encoder"], target, None, x0)
    recon = stage1.decode(dec, variables["decoder"], x0, mu)
    swapped = stage1.decode(dec, variables["decoder"], x0, jnp.roll(mu, 1, axis=0))
    z_use = jnp.mean(jnp.abs(recon - swapped), axis=tuple(range(1, recon.ndim)))
    copy_x0 = jnp.broadcast_to(x0[:, None], target.shape)
    mean = jnp.broadcast_to(jnp.mean(target, axis=1, keepdims=True), target.shape)
    return (common.psnr(recon, target), common.psnr(copy_x0, target),
            common.psnr(mean, target), z_use)

  # Rolling mu inside a chunk pairs videos of the same chunk: fine, they are all different.
  psnr, copy_x0, mean, z_use = model._batched(jax.jit(fn), np.asarray(videos, np.float32))
  return {"psnr": float(np.mean(psnr)), "psnr_copy_x0": float(np.mean(copy_x0)),
          "psnr_temporal_mean": float(np.mean(mean)), "z_use": float(np.mean(z_use)),
          "num_videos": int(len(videos))}


def control_errors(controlled: np.ndarray, targets: np.ndarray,
                   metadata: dict[str, np.ndarray]) -> list[float | None]:
  """|object 0's final position - requested (x, y)| in px per controlled sample (None: lost).

  controlled: (S, 16, H, W, 3) samples of one x_0; targets (S, 2) normalised; metadata of that
  x_0's clip (colours, radius, shape kind identify object 0 for the tracker).
  """
  from i2v_flax.evaluation import shapes_metrics
  s, res = len(controlled), controlled.shape[-2]
  meta = {k: np.repeat(np.asarray(metadata[k])[None], s, axis=0)
          for k in ("colors", "radius", "num_objects", "shape_kind")}
  pos, found = shapes_metrics.track_objects(controlled[:, -1:], meta)
  out = []
  for i in range(s):
    ok = bool(found[i, -1, 0])
    out.append(float(np.linalg.norm(pos[i, -1, 0] - targets[i, :2]) * res) if ok else None)
  return out


def control_to_corners(config: ml_collections.ConfigDict, model: Any,
                       clips: dict[str, np.ndarray], num_x0: int = 16) -> dict[str, float | int]:
  """Control over several start frames: `report.control_etas`' four reachable corner targets for
  each of the first `num_x0` clips, one sample each. control.gif shows one x_0, too few to
  measure control by: a lost object there says more about that x_0 than about the model.

  Returns the mean final-position error of the found samples (px), the fraction found, and the
  mean start-to-target distance (what an object that does not move would score).
  """
  from i2v_flax import report
  n = min(int(num_x0), len(clips["video"]))
  res = clips["video"].shape[-2]
  meta = [{k: v[i] for k, v in clips.items() if k not in ("video", "eta")} for i in range(n)]
  etas = [report.control_etas(config, clips["eta"][i], meta[i]) for i in range(n)]
  per_x0 = len(etas[0])
  x0 = np.repeat(np.asarray(clips["video"][:n, 0]), per_x0, axis=0)
  samples = model.sample(x0, 1, seed=2, eta=np.concatenate(etas))[:, 0]
  errors, distances = [], []
  for i in range(n):
    errors += control_errors(samples[i * per_x0:(i + 1) * per_x0], etas[i], meta[i])
    start = np.asarray(meta[i]["positions"], np.float64)[0, 0]
    distances += list(np.linalg.norm(etas[i][:, :2] - start, axis=-1) * res)
  found = [e for e in errors if e is not None]
  return {"final_pos_error_px": float(np.mean(found)) if found else float("nan"),
          "found_fraction": len(found) / len(errors),
          "start_to_target_px": float(np.mean(distances)), "num_x0": n}


def _displacements(videos: np.ndarray, meta: dict[str, np.ndarray], res: int) -> np.ndarray:
  """Object 0's (final - first) position in px per video (N, 2); NaN where it is lost."""
  from i2v_flax.evaluation import shapes_metrics
  pos, _ = shapes_metrics.track_objects(videos[:, [0, -1]], meta)
  return (pos[:, 1, 0] - pos[:, 0, 0]) * res


def transfer_errors(model: Any, clips: dict[str, np.ndarray], num_videos: int = 64
                    ) -> dict[str, float | int]:
  """How well `model.transfer` carries motion: A = clip i, B = the start frame of clip i+1.

  The error is |displacement of B's object 0 in the transfer - displacement of A's object 0|;
  the baseline is the same error for a sample of B drawn from the cINN (no motion information
  from A). Transfers run without eta when the model's control is optional (the motion must then
  come from nu alone); otherwise A's eta goes with its nu, as `SampledModel.transfer` does.
  Walls reflect objects, so a faithful transfer near a wall still has some error.
  """
  videos = np.asarray(clips["video"][:num_videos], np.float32)
  n, res = len(videos), videos.shape[-2]
  meta = {k: np.asarray(v[:n]) for k, v in clips.items() if k not in ("video", "eta")}
  meta_b = {k: np.roll(v, -1, axis=0) for k, v in meta.items()}
  x0_b = np.roll(videos[:, 0], -1, axis=0)
  eta = clips.get("eta")
  eta_a = None if eta is None or getattr(model, "control_is_optional", False) else eta[:n]
  moved = model.transfer(videos, x0_b, eta_a=eta_a)
  fresh = model.sample(x0_b, 1, seed=5, eta=eta_a)[:, 0]
  with_x0 = lambda v: np.concatenate([x0_b[:, None], v], axis=1)  # Start = B's real x_0.
  d_a = _displacements(videos, meta, res)
  d_transfer = _displacements(with_x0(moved), meta_b, res)
  d_fresh = _displacements(with_x0(fresh), meta_b, res)
  err = np.linalg.norm(d_transfer - d_a, axis=-1)
  base = np.linalg.norm(d_fresh - d_a, axis=-1)
  return {"displacement_error_px": float(np.nanmean(err)),
          "fresh_sample_error_px": float(np.nanmean(base)),
          "source_displacement_px": float(np.nanmean(np.linalg.norm(d_a, axis=-1))),
          "num_videos": int(np.sum(np.isfinite(err)))}


def _clean(tree: Any) -> Any:
  """JSON-safe: NaN/inf -> None, numpy scalars -> float."""
  if isinstance(tree, dict):
    return {k: _clean(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [_clean(v) for v in tree]
  if isinstance(tree, (float, np.floating)):
    return float(tree) if np.isfinite(tree) else None
  if isinstance(tree, np.integer):
    return int(tree)
  return tree


def score_methods(config: ml_collections.ConfigDict, workdir: str, model: Any,
                  clips: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
  """Mean of each `config.eval.metrics` value per method (cINN, w/o cINN, static).

  A model with optional control is scored without eta (the paper's setting: the samples of one
  x_0 must find the different futures themselves) and again with the clip's true eta
  ("cinn + eta"), whose final_pos_error is the control accuracy on reachable targets.
  """
  from i2v_flax.evaluation import protocol
  generators = None
  if getattr(model, "control_is_optional", False):
    generators = protocol.model_generators(model, config)
    with_eta = generators["cinn"]
    generators["cinn"] = lambda x0, eta, n, seed: with_eta(x0, None, n, seed)
    generators["cinn + eta"] = with_eta
  results = protocol.evaluate(config, workdir, model=model, generators=generators, clips=clips)
  return {name: {k: v["mean"] for k, v in m.items()} for name, m in results["methods"].items()}


def evaluate_demo(config: ml_collections.ConfigDict, workdir: str, model: Any
                  ) -> dict[str, Any]:
  """The report's ground-truth evaluation on the first `config.report.num_videos` test clips."""
  from i2v_flax.data import shapes_builder
  from i2v_flax.evaluation import protocol, shapes_metrics
  rep = config.report
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    cfg.eval.num_videos = int(rep.num_videos)
    cfg.eval.metrics = tuple(rep.metrics)
    cfg.eval.num_sample_sets = int(rep.num_sample_sets)
    cfg.eval.div_num_samples = int(rep.num_samples)
  clips = protocol.load_test_clips(cfg)
  out: dict[str, Any] = {"stage1": stage1_heldout(model, clips["video"])}
  if rep.metrics:
    out["methods"] = score_methods(cfg, workdir, model, clips)
  out["transfer"] = transfer_errors(model, clips)
  if (getattr(model, "has_control", False) and config.stage2.control == "continuous"
      and "eta" in clips):
    out["control"] = control_to_corners(config, model, clips)
  meta = {k: v for k, v in clips.items() if k not in ("video", "eta")}
  real_pos, real_found = shapes_metrics.track_objects(clips["video"], meta)
  _, real_speed = shapes_metrics.speed_stats(real_pos, real_found, config.data.resolution)
  out["real"] = {
      "mean_speed": real_speed,
      "true_final_pos_spread": shapes_metrics.true_final_position_spread(
          meta, int(rep.num_samples), clips["video"].shape[1], config.data.resolution,
          shapes_builder.scene_of(config.data.builder_config)),
  }
  return _clean(out)
