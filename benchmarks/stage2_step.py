"""Time one stage-2 training step and its parts; prints one JSON line.

  python benchmarks/stage2_step.py --config=configs/bair.py [--repeats=3] [--flow_repeats=10]

Random weights (the reference was timed that way too): the frozen stage-1 encoder comes from
stage1.build_models(config). Reported medians after one warm-up call:
  step_s        the full jitted stage-2 step: encoder forward (sampled z) + embedder + flow
                forward/backward + amsgrad  (reference "stage-2 training body": 9.96 s)
  encoder_s     the frozen encoder forward alone (reference 9.46 s)
  flow_step_s   flow forward + backward + amsgrad on fixed (z, c), no encoder or embedder
                (reference "cINN step alone": 0.254 s)
"""

from __future__ import annotations

import functools
import json
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from absl import app, flags
from ml_collections import config_flags

from i2v_flax import config_lib
from i2v_flax.train import common, stage2, stage2_steps

import bench_util  # benchmarks/ is the script's directory, so it is on sys.path.
import targets

config_flags.DEFINE_config_file("config", "configs/bair.py", "Config file.")
flags.DEFINE_integer("repeats", 3, "Timed calls of the full step and the encoder.")
flags.DEFINE_integer("flow_repeats", 10, "Timed calls of the flow-only step.")
FLAGS = flags.FLAGS
REFERENCE = {"step_s": 9.96, "encoder_s": 9.46, "flow_step_s": 0.254}


def _median_time(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # Warm-up (compilation).
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def main(argv):
  del argv
  # Epoch lengths only set lr schedules here; a per-video epoch (dtdb) assumes 100 videos.
  config = config_lib.resolve_epochs(FLAGS.config, num_train_videos=100)
  s2 = config.stage2
  b, d = int(s2.batch_size), int(config.stage1.z_dim)
  setup = targets.stage2_setup(config)
  steps, state, batch, enc_vars = setup["steps"], setup["state"], setup["batch"], setup["enc_vars"]
  flow, embedder, key, z = setup["flow"], setup["embedder"], setup["key"], setup["z"]
  n_flow = common.count_params(state["flow"]["params"])
  n_emb = common.count_params(state["embedder"]["params"])
  out = {"config": config_flags.get_config_filename(FLAGS["config"]),
         "batch": b, "z_dim": d, "flow_params": n_flow, "embedder_params": n_emb,
         "encoder_params": common.count_params(enc_vars["params"]),
         "device": jax.devices()[0].device_kind, "num_devices": jax.device_count()}

  encoder_s = _median_time(lambda: steps["encode"](enc_vars, batch["video"], key),
                           FLAGS.repeats)

  holder = {"state": state}

  def full_step():
    holder["state"], metrics = steps["train"](holder["state"], batch, enc_vars)
    return metrics["loss"]

  step_s = _median_time(full_step, FLAGS.repeats)

  # Flow only: fixed z and condition, the optimiser over the flow's parameters alone.
  tx, _ = stage2_steps.make_optimizer(config)
  cond = stage2.condition(embedder, holder["state"]["embedder"], batch["video"][:, 0],
                          stage2_steps.optional_eta(config, batch.get("eta")))
  flow_vars = jax.device_get(holder["state"]["flow"])

  def flow_loss(params):
    nu, logdet = stage2.flow_inverse(flow, {**flow_vars, "params": params}, z, cond)
    return jnp.mean(0.5 * jnp.sum(nu**2, -1)) - jnp.mean(logdet)

  @functools.partial(jax.jit, donate_argnums=(0, 1))  # As the real step: no 47 M-param copies.
  def flow_step(params, opt):
    loss, grads = jax.value_and_grad(flow_loss)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  fs = {"params": flow_vars["params"], "opt": tx.init(flow_vars["params"])}

  def flow_only():
    fs["params"], fs["opt"], loss = flow_step(fs["params"], fs["opt"])
    return loss

  flow_step_s = _median_time(flow_only, FLAGS.flow_repeats)
  out.update({"step_s": round(step_s, 4), "encoder_s": round(encoder_s, 4),
              "flow_step_s": round(flow_step_s, 4), "reference": REFERENCE,
              "speedup_vs_reference": {k: round(REFERENCE[k] / v, 3) for k, v in
                                       (("step_s", step_s), ("encoder_s", encoder_s),
                                        ("flow_step_s", flow_step_s))}})
  flops = {"step_s": bench_util.jit_flops(steps["train"], holder["state"], batch, enc_vars),
           "encoder_s": bench_util.jit_flops(steps["encode"], enc_vars, batch["video"], key),
           "flow_step_s": bench_util.jit_flops(flow_step, fs["params"], fs["opt"])}
  out["throughput"] = {k: bench_util.throughput(f, out[k]) for k, f in flops.items()}
  out["machine"] = bench_util.machine_state()
  print(json.dumps(out))


if __name__ == "__main__":
  app.run(main)
