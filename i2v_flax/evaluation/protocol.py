"""`--mode=eval`: the SPEC §6 protocol for the configured dataset, plus two baselines.

The test clips follow the dataset's protocol (config.eval: num_videos, clips_per_video,
num_clips, random_start; see data/eval_clips.py): bair the first 256 test videos at frame 0,
iper 1000 random-start clips cycling over the test videos, landscape 6 random-start clips of
each test video, dtdb 5 start-0 copies of each eval video; no augmentation. We draw
M = max(K, S) samples per x_0 once, where K = config.eval.num_sample_sets and S =
config.eval.div_num_samples; sample set k is sample k of every x_0 (independent nu draws, so the
sets are independent), and DIV uses samples 0..S-1. Methods:
  cinn      nu ~ N(0, T^2) through the cINN (the model), eta = the real clip's eta if control.
  w/o cINN  z ~ N(0, T^2) straight into the decoder (the paper's ablation).
  static    x_0 repeated (deterministic: one set; DIV and spread are exactly 0, not computed).
Per set: FVD, DTFVD, LPIPS and FID on the sequences config.eval.protocol lines up
(alignment.py: 'reference' = the authors' per-dataset alignment, e.g. bair's real x_0 + 15
generated frames vs real 0-15 and the textures' one-frame offset; 'aligned' = g_i vs x_i; the
real features are computed once), and on `shapes` the oracle metrics of x_0 + 16 generated
frames vs the real 17. Reported per metric: the first set's value
(the paper's single FVD of 256 vs 256), mean, std (ddof=0) and all values.
Generated frames stay float32 in [-1, 1] (never rounded to uint8): the reference feeds its
metrics the float frames, and FVD in particular sees (x + 1) * 127.5 unrounded (SPEC §6).
The price is host memory: 4 bytes per colour value (BAIR, 256 x 5 samples x 16 frames: 1 GB).
Output: workdir/eval/<step>.json (atomic) and <step>.md (a table).
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from i2v_flax import errors, paths, progress
from i2v_flax.evaluation import diversity, dtfvd as dtfvd_lib, fid as fid_lib, fvd as fvd_lib
from i2v_flax.evaluation import alignment as align_lib
from i2v_flax.evaluation import lpips_metrics
from i2v_flax.evaluation import shapes_metrics
from i2v_flax.evaluation.lpips_metrics import to_float

KNOWN_METRICS = ("fvd", "lpips", "div_vgg", "div_i3d", "fid", "dtfvd", "shapes")
# A generator: (x0 (B, H, W, 3) in [-1, 1], eta or None, num_samples, seed)
#   -> (B, num_samples, 16, H, W, 3) frames x_1..x_16 (float in [-1, 1] or uint8).
GenerateFn = Callable[[np.ndarray, Any, int, int], np.ndarray]


def load_test_clips(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  """The protocol's clips of the first num_videos (0: all) videos of the eval split, in order.

  Keys: video, eta (control), start and video_index (which video, which frame a clip starts
  at), and the shapes ground truth.
  """
  from i2v_flax import data
  from i2v_flax.data import eval_clips
  data.prepare(config.data)
  n = int(config.eval.num_videos)
  available = data.num_examples(config.data, config.eval.split)
  if n > available:
    raise errors.InvalidInput(f"The {config.eval.split!r} split has {available} videos, fewer "
                              f"than config.eval.num_videos={n}. Fix: --config.eval.num_videos="
                              f"{available} (or 0 for all).")
  n = n or available
  plan = eval_clips.plan_from_config(config.eval)
  n_clips = sum(plan.counts(n))
  n_dev = jax.device_count()
  batch = max(n_dev, min(int(config.eval.batch_size), n_clips) // n_dev * n_dev)
  it = data.create_iterator(config.data, config.eval.split, batch,
                            seed=int(config.seed), shuffle=False, repeat=False,
                            with_metadata=True, max_examples=n, plan=plan)
  chunks = list(it)
  return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def model_generators(model: Any, config: ml_collections.ConfigDict) -> dict[str, GenerateFn]:
  """The model (cINN prior) and the w/o-cINN ablation as generators (see `GenerateFn`)."""
  temperature = float(config.eval.temperature)

  def make(prior: str) -> GenerateFn:
    def fn(x0, eta, num_samples, seed):
      return model.sample(x0, num_samples=num_samples, temperature=temperature, seed=seed,
                          eta=eta if prior == "cinn" else None, prior=prior)
    return fn
  return {"cinn": make("cinn"), "w/o cINN": make("gaussian")}


def _static(x0, eta, num_samples, seed):
  del eta, seed
  return np.repeat(np.asarray(x0)[:, None, None], 16, axis=2).repeat(num_samples, axis=1)


def _generate(fn: GenerateFn, clips: dict[str, np.ndarray], num_samples: int, batch: int,
              seed: int, name: str) -> np.ndarray:
  """(N, num_samples, 16, H, W, 3) float32 in [-1, 1], generated x_0-batch by x_0-batch."""
  video, eta = clips["video"], clips.get("eta")
  out = []
  for i, start in enumerate(range(0, len(video), batch)):
    sl = slice(start, start + batch)
    frames = fn(video[sl, 0], None if eta is None else eta[sl], num_samples, seed + 7919 * i)
    out.append(to_float(frames))
    logging.log_every_n_seconds(logging.INFO, "[%s] generated %d/%d x_0", 30, name,
                                min(start + batch, len(video)), len(video))
  return np.concatenate(out)


def _summary(values: list[float]) -> dict[str, Any]:
  v = np.asarray(values, np.float64)
  finite = v[np.isfinite(v)]
  clean = lambda x: None if x is None or not np.isfinite(x) else float(x)
  return {"first": clean(v[0]), "mean": clean(finite.mean()) if finite.size else None,
          "std": clean(finite.std()) if finite.size else None,
          "values": [clean(x) for x in v]}


def evaluate_method(name: str, samples: np.ndarray, clips: dict[str, np.ndarray],
                    metrics: tuple[str, ...], num_sets: int, div_samples: int,
                    cache: dict[str, Any], config: ml_collections.ConfigDict) -> dict[str, Any]:
  """All metrics of one method's (N, M, 16, H, W, 3) [-1, 1] samples against the real clips."""
  real = to_float(clips["video"])
  batch = int(config.eval.batch_size)
  protocol = str(config.eval.get("protocol", "reference"))
  vid_al = align_lib.alignment(config.data.name, protocol, "video")
  frm_al = align_lib.alignment(config.data.name, protocol, "frames")
  real_vid, real_frm = align_lib.real_part(real, vid_al), align_lib.real_part(real, frm_al)
  per_set: dict[str, list[float]] = {}
  sets = min(num_sets, samples.shape[1])
  for k in range(sets):
    t0 = time.time()
    gen = samples[:, k]
    fake_vid = align_lib.fake_part(real, gen, vid_al)
    fake_frm = align_lib.fake_part(real, gen, frm_al)
    if "fvd" in metrics:
      if "real_i3d" not in cache:
        cache["real_i3d"] = fvd_lib.fvd_features(real_vid, batch)
      fake_feats = fvd_lib.fvd_features(fake_vid, batch)
      per_set.setdefault("fvd", []).append(fvd_lib.fvd_from_features(cache["real_i3d"],
                                                                      fake_feats))
    if "lpips" in metrics:
      per_set.setdefault("lpips", []).append(lpips_metrics.lpips_video(real_frm, fake_frm))
    if "fid" in metrics:
      if "real_fid" not in cache:
        cache["real_fid"] = fid_lib.fid_features(real_frm, cache["fid_vars"], batch)
      fake = fid_lib.fid_features(fake_frm, cache["fid_vars"], batch)
      per_set.setdefault("fid", []).append(fid_lib.frechet_distance(cache["real_fid"], fake))
    if "dtfvd" in metrics:  # The DTDB I3D takes 16 frames (iper's 17 are cut to 16).
      if "real_dtfvd" not in cache:
        cache["real_dtfvd"] = dtfvd_lib.dtfvd_features(real_vid[:, :16], cache["dtfvd_model"],
                                                       batch)
      fake = dtfvd_lib.dtfvd_features(fake_vid[:, :16], cache["dtfvd_model"], batch)
      per_set.setdefault("dtfvd", []).append(fid_lib.frechet_distance(cache["real_dtfvd"], fake))
    if "shapes" in metrics:
      meta = {k2: v for k2, v in clips.items() if k2 not in ("video", "eta")}
      if "real_tracks" not in cache:
        cache["real_tracks"] = shapes_metrics.track_objects(real, meta)
      res = shapes_metrics.shapes_metrics(
          real, np.concatenate([real[:, :1], gen], axis=1), meta, eta=clips.get("eta"),
          real_tracks=cache["real_tracks"])
      for key, value in res.items():
        per_set.setdefault(f"shapes/{key}", []).append(value)
    logging.info("[%s] sample set %d/%d scored in %.1fs", name, k + 1, sets, time.time() - t0)
  out = {key: _summary(v) for key, v in per_set.items()}
  deterministic = samples.shape[1] == 1
  div = samples[:, :div_samples]
  if "div_vgg" in metrics:
    out["div_vgg"] = _summary([0.0 if deterministic else diversity.div_vgg(
        div, frames_per_batch=batch)])
  if "div_i3d" in metrics:
    out["div_i3d"] = _summary([0.0 if deterministic else diversity.div_i3d(div, batch)])
  if "shapes" in metrics:
    meta = {k2: v for k2, v in clips.items() if k2 not in ("video", "eta")}
    spread = 0.0 if deterministic else shapes_metrics.final_position_spread(div, meta)
    out["shapes/final_pos_spread"] = _summary([spread])
  return out


def _write_atomic(path: str, text: str) -> None:
  paths.write_text(path, text)  # Local or gs://, atomic.


def markdown_table(results: dict[str, Any]) -> str:
  """Rows = metrics, columns = methods, cells 'mean ± std' (K sets; one value if deterministic)."""
  methods = list(results["methods"])
  keys = sorted({k for m in methods for k in results["methods"][m]})
  lines = [f"# Evaluation of {results['dataset']} at stage-2 step {results['step']}", "",
           f"{results.get('num_clips', results['num_videos'])} clips of {results['num_videos']} "
           f"test videos, protocol {results.get('protocol', 'reference')!r}: "
           f"{results.get('alignment', {}).get('fvd_dtfvd', '')}. "
           f"{results['num_sample_sets']} sample sets, "
           f"{results['div_num_samples']} samples per x_0 for DIV. Cells: mean ± std over the "
           "sample sets; 'fvd (first set)' is the paper's single FVD.", "",
           "| metric | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
  for key in keys:
    cells = []
    for m in methods:
      s = results["methods"][m].get(key)
      if s is None or s["mean"] is None:
        cells.append("n/a")
      elif len(s["values"]) > 1:
        cells.append(f"{s['mean']:.4g} ± {s['std']:.2g}")
      else:
        cells.append(f"{s['mean']:.4g}")
    lines.append(f"| {key} | " + " | ".join(cells) + " |")
    if key == "fvd":  # The paper's number: one FVD of the first sample set.
      firsts = [results["methods"][m].get(key, {}).get("first") for m in methods]
      lines.append("| fvd (first set) | " + " | ".join(
          "n/a" if f is None else f"{f:.4g}" for f in firsts) + " |")
  return "\n".join(lines) + "\n"


def load_metric_models(config: ml_collections.ConfigDict,
                       metrics: tuple[str, ...]) -> dict[str, Any]:
  """The networks whose weights the user supplies (FID, DTFVD), loaded before minutes of
  sampling so a missing file fails first. Returns the initial metric cache."""
  cache: dict[str, Any] = {}
  if "fid" in metrics:
    cache["fid_vars"] = fid_lib.load_fid_variables(config.eval.fid_weights)
  if "dtfvd" in metrics:
    cache["dtfvd_model"] = dtfvd_lib.load_dtfvd(config.eval.get("dtfvd_weights"))
  return cache


def evaluate(config: ml_collections.ConfigDict, workdir: str, *, model: Any = None,
             generators: dict[str, GenerateFn] | None = None,
             clips: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
  """Run the protocol, write workdir/eval/<step>.{json,md}, return the results dict.

  model: a `sampling.VideoModel` (default: `sampling.load(workdir, config)`); generators: named
  `GenerateFn`s replacing the model's (tests, other methods); clips: preloaded test clips.
  """
  metrics = tuple(config.eval.metrics)
  unknown = set(metrics) - set(KNOWN_METRICS)
  if unknown:
    raise errors.InvalidInput(f"Unknown config.eval.metrics {sorted(unknown)}; known: {KNOWN_METRICS}.")
  if "shapes" in metrics and config.data.name != "shapes":
    raise errors.InvalidInput("The 'shapes' oracle metrics need data.name='shapes'.")
  align_lib.describe(config.data.name, str(config.eval.protocol))  # Fails on an unknown one.
  if jax.process_count() > 1:
    raise errors.InvalidInput("Evaluation runs on one host (it gathers all clips); launch it without "
                     "--distributed.")
  cache = load_metric_models(config, metrics)
  if generators is None:
    if model is None:
      from i2v_flax import sampling
      model = sampling.load(workdir, config)
    generators = model_generators(model, config)
  step = int(getattr(model, "step", -1)) if model is not None else -1
  generators = {**generators, "static": _static}
  clips = load_test_clips(config) if clips is None else clips
  k_sets, s_div = int(config.eval.num_sample_sets), int(config.eval.div_num_samples)
  wants_div = any(m in metrics for m in ("div_vgg", "div_i3d", "shapes"))
  num_samples = max(k_sets, s_div if wants_div else 1)
  logging.info("Evaluating %s on %d clips: metrics %s, %d sample sets, methods %s",
               config.data.name, len(clips["video"]), metrics, k_sets, list(generators))
  protocol = str(config.eval.protocol)
  results: dict[str, Any] = {
      "dataset": config.data.name, "step": step, "num_clips": int(len(clips["video"])),
      "num_videos": int(len(np.unique(clips["video_index"]))) if "video_index" in clips else int(
          len(clips["video"])),
      "protocol": protocol, "alignment": align_lib.describe(config.data.name, protocol),
      "num_sample_sets": k_sets, "div_num_samples": s_div, "metrics": list(metrics),
      "temperature": float(config.eval.temperature), "methods": {}, "seconds": {}}
  with progress.phase("eval", total=len(generators), unit="method") as bar:
    for name, fn in generators.items():
      t0 = time.time()
      m = 1 if fn is _static else num_samples
      samples = _generate(fn, clips, m, int(config.eval.batch_size), int(config.seed) + 1, name)
      results["methods"][name] = evaluate_method(name, samples, clips, metrics, k_sets, s_div,
                                                 cache, config)
      results["seconds"][name] = round(time.time() - t0, 1)
      logging.info("[%s] done in %.1fs: %s", name, time.time() - t0,
                   {k: v["mean"] for k, v in results["methods"][name].items()})
      bar.update(1, method=name)
  out_dir = paths.join(workdir, "eval")
  _write_atomic(paths.join(out_dir, f"{step}.json"),
                json.dumps(results, indent=2, sort_keys=True, allow_nan=False))
  _write_atomic(paths.join(out_dir, f"{step}.md"), markdown_table(results))
  logging.info("Wrote %s/%d.json and .md", out_dir, step)
  return results
