"""Where is control lost: in stage 1 or in the cINN? Print one JSON line for a trained `shapes` workdir.

  python benchmarks/control_ceiling.py --workdir=/tmp/i2v_shapes [--num_videos=256]

Why: a controlled sample can only end where the decoder can put the object. Decoding the
*encoder's* z (posterior mean) of each test clip and tracking object 0 in the last frame gives
the ceiling stage 1 allows; the cINN given the clip's true eta (object 0's real final position)
gives what stage 2 achieves; the cINN without eta is the no-control baseline. Also split by how
far the object really moved, and the ratio of decoded to true displacement (< 1: the decoder
shortens motion). When the reconstruction is close and the cINN + eta is far, train stage 2
longer or condition it better; when both are far, stage 1 is the bottleneck.
"""

import json

import jax
import numpy as np
from absl import app, flags

from i2v_flax import report, sampling
from i2v_flax.evaluation import shapes_metrics
from i2v_flax.train import stage1

flags.DEFINE_string("workdir", None, "A trained shapes workdir (both stages).", required=True)
flags.DEFINE_integer("num_videos", 256, "Test clips scored.")
FLAGS = flags.FLAGS


def _final_errors(generated: np.ndarray, videos: np.ndarray, meta: dict) -> dict:
  """Object 0's final-position error against the real clip, and decoded / true displacement."""
  res = videos.shape[-2]
  full = np.concatenate([videos[:, :1], generated], axis=1)
  pos, found = shapes_metrics.track_objects(full[:, [0, -1]], meta)
  real, _ = shapes_metrics.track_objects(videos[:, [0, -1]], meta)
  ok = found[:, 1, 0] & np.isfinite(real[:, 1, 0, 0])
  err = np.linalg.norm(pos[:, 1, 0] - real[:, 1, 0], axis=-1) * res
  true_disp = np.linalg.norm(real[:, 1, 0] - real[:, 0, 0], axis=-1) * res
  gen_disp = np.linalg.norm(pos[:, 1, 0] - pos[:, 0, 0], axis=-1) * res
  by_motion = {}
  for lo, hi in ((0, 6), (6, 10), (10, 14), (14, 64)):
    m = ok & (true_disp >= lo) & (true_disp < hi)
    if m.any():
      by_motion[f"{lo}-{hi}px"] = {"n": int(m.sum()), "error_px": float(err[m].mean()),
                                   "displacement_ratio": float(gen_disp[m].mean()
                                                               / max(true_disp[m].mean(), 1e-6))}
  return {"final_pos_error_px": float(err[ok].mean()), "found_fraction": float(ok.mean()),
          "by_true_displacement": by_motion}


def main(argv):
  del argv
  model = sampling.load(FLAGS.workdir)
  config = model.config
  if config.data.name != "shapes" or not model.has_control:
    raise app.UsageError("control_ceiling needs a shapes workdir trained with control.")
  clips = report._test_clips(config, FLAGS.num_videos)
  videos = np.asarray(clips["video"], np.float32)
  meta = {k: np.asarray(v) for k, v in clips.items() if k not in ("video", "eta")}
  enc, dec = model.stage1_models.encoder, model.stage1_models.decoder

  def reconstruct(variables, video):
    x0, target = video[:, 0], video[:, 1:]
    _, mu, _ = stage1.encode(enc, variables["encoder"], target, None, x0)
    return stage1.decode(dec, variables["decoder"], x0, mu)

  (recon,) = model._batched(jax.jit(lambda v, x: (reconstruct(v, x),)), videos)
  out = {"workdir": FLAGS.workdir, "num_videos": len(videos),
         "stage1_reconstruction": _final_errors(np.asarray(recon), videos, meta)}
  with_eta = model.sample(videos[:, 0], 1, seed=3, eta=clips["eta"])[:, 0]
  out["cinn_with_true_eta"] = _final_errors(with_eta, videos, meta)
  if model.control_is_optional:
    without = model.sample(videos[:, 0], 1, seed=3, eta=None)[:, 0]
    out["cinn_without_eta"] = _final_errors(without, videos, meta)
  print(json.dumps(out))


if __name__ == "__main__":
  app.run(main)
