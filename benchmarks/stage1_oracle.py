"""How much can the stage-1 decoder gain from a *perfect* z? Print one JSON line.

  python benchmarks/stage1_oracle.py --config=configs/shapes.py --steps=600

Why: when stage 1 ignores z (posterior collapse, `eval/z_use` ~ 0), it is unclear whether the
encoder fails to put motion into z or the decoder cannot turn z into motion yet. This trains the
decoder alone, with the encoder replaced by an oracle: z holds the true object positions at every
second predicted frame (3 objects x 8 frames x (x, y), mapped to [-1, 1]) and the background drift
(scaled to [-1, 1]), zero-padded to z_dim. The same run with z = 0 is the no-information
baseline. Both see the same batches; held-out PSNR (the stage-1 eval metric) is reported every
--eval_every steps, next to copying x_0 and the clip's own temporal mean. A small oracle gain
means the bottleneck is the decoder or the step budget, not the encoder.
With `stage1.z_spatial` (the demo) the same vector is laid row-major over the 4x4 latent map, so
the positions are not where the decoder's per-cell pathways look for them: the gate then measures
the decoder through its global ADAIN path only, and full stage-1 runs measure the spatial z.
"""

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from ml_collections import config_flags

from i2v_flax import losses
from i2v_flax.data import shapes, shapes_builder
from i2v_flax.models.decoder import make_decoder
from i2v_flax.models.layers import SPECTRAL
from i2v_flax.train import common
from i2v_flax.train.stage1_state import make_optimizer

config_flags.DEFINE_config_file("config", None, "A shapes config, e.g. configs/shapes.py.")
flags.DEFINE_integer("steps", 600, "Decoder training steps per run.")
flags.DEFINE_integer("eval_every", 100, "Held-out PSNR every N steps.")
flags.DEFINE_integer("num_train", 2000, "Generated training videos.")
flags.DEFINE_integer("num_test", 64, "Generated held-out videos.")
flags.DEFINE_bool("zero_baseline", True, "Also train with z = 0 (the no-information baseline).")
FLAGS = flags.FLAGS
ORACLE_DIM = shapes.MAX_OBJECTS * 8 * 2 + 2


def _generate(seeds: range, resolution: int, scene: shapes.Scene
              ) -> tuple[np.ndarray, list[dict]]:
  examples = [shapes.generate_example(np.random.default_rng([7, i]), resolution, scene=scene)
              for i in seeds]
  return np.stack([e["video"] for e in examples]), examples


def _oracle_z(example: dict, start: int, frames: int, z_dim: int, resolution: int) -> np.ndarray:
  """True trajectories (every second predicted frame) and drift, each in [-1, 1]."""
  positions = example["positions"][start + 1:start + 1 + frames:2] * 2 - 1
  drift = example["drift"] / (shapes.DRIFT_RANGE[1] * resolution)
  z = np.zeros(z_dim, np.float32)
  z[:ORACLE_DIM] = np.concatenate([positions.reshape(-1), drift])
  return z


def _train(config, videos, examples, test_videos, test_z, use_oracle: bool) -> dict[int, float]:
  s1, r = config.stage1, config.data.resolution
  length = config.data.clip_length
  decoder = make_decoder(config)
  tx, _ = make_optimizer(config)
  rng = np.random.default_rng(0)

  def batch():
    idx = rng.integers(0, len(videos), s1.batch_size)
    starts = rng.integers(0, videos.shape[1] - length + 1, s1.batch_size)
    clips = np.stack([videos[i, s:s + length] for i, s in zip(idx, starts)])
    z = np.stack([_oracle_z(examples[i], s, length - 1, s1.z_dim, r) for i, s in zip(idx, starts)])
    return jnp.asarray(clips, jnp.float32) / 127.5 - 1, jnp.asarray(z if use_oracle else 0 * z)

  @jax.jit
  def step(variables, opt_state, clip, z):
    def loss_fn(params):
      fake, upd = decoder.apply({**variables, "params": params}, clip[:, 0], z, True,
                                mutable=[SPECTRAL])
      return losses.l1(fake, clip[:, 1:]), upd
    (_, upd), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
    updates, opt_state = tx.update(grads, opt_state, variables["params"])
    return {**variables, "params": optax.apply_updates(variables["params"], updates), **upd}, opt_state

  psnr = jax.jit(lambda v, clip, z: common.psnr(decoder.apply(v, clip[:, 0], z), clip[:, 1:]))
  clip, z = batch()
  variables = decoder.init(jax.random.PRNGKey(0), clip[:, 0], z)
  opt_state = tx.init(variables["params"])
  test_z = test_z if use_oracle else 0 * test_z
  curve = {}
  for i in range(1, FLAGS.steps + 1):
    variables, opt_state = step(variables, opt_state, *batch())
    if i % FLAGS.eval_every == 0 or i == FLAGS.steps:
      curve[i] = round(float(np.mean(psnr(variables, test_videos, test_z))), 2)
  return curve


def main(argv):
  del argv
  config = FLAGS.config
  s1, r, length = config.stage1, config.data.resolution, config.data.clip_length
  if config.data.name != "shapes":
    raise ValueError(f"The oracle needs shapes ground truth; got dataset {config.data.name!r}. "
                     "Fix: --config=configs/shapes.py")
  if s1.z_dim < ORACLE_DIM:
    raise ValueError(f"stage1.z_dim={s1.z_dim} cannot hold the {ORACLE_DIM}-dim oracle. "
                     f"Fix: --config.stage1.z_dim={ORACLE_DIM}")
  t0 = time.time()
  scene = shapes_builder.scene_of(config.data.builder_config)  # The config's data variant.
  videos, examples = _generate(range(FLAGS.num_train), r, scene)
  test_raw, test_examples = _generate(range(10**6, 10**6 + FLAGS.num_test), r, scene)
  test_videos = jnp.asarray(test_raw[:, :length], jnp.float32) / 127.5 - 1
  test_z = jnp.asarray(np.stack([_oracle_z(e, 0, length - 1, s1.z_dim, r)
                                 for e in test_examples]))
  target = test_videos[:, 1:]
  copy_x0 = common.psnr(jnp.broadcast_to(test_videos[:, :1], target.shape), target)
  temporal_mean = common.psnr(jnp.broadcast_to(target.mean(1, keepdims=True), target.shape), target)
  oracle = _train(config, videos, examples, test_videos, test_z, True)
  result = {"builder_config": config.data.builder_config, "resolution": r, "batch_size": s1.batch_size, "lr": s1.lr, "dec_nf": s1.dec_nf,
            "steps": FLAGS.steps, "psnr_oracle_z": oracle}
  if FLAGS.zero_baseline:
    zero = _train(config, videos, examples, test_videos, test_z, False)
    last = max(oracle)
    result.update(psnr_zero_z=zero, oracle_gain_db=round(oracle[last] - zero[last], 2))
  print(json.dumps({
      **result,
      "psnr_copy_x0": round(float(jnp.mean(copy_x0)), 2),
      "psnr_temporal_mean": round(float(jnp.mean(temporal_mean)), 2),
      "wall_s": round(time.time() - t0, 1)}))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
