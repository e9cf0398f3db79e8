"""Time one stage-1 iteration (generator step + discriminator step) and print one JSON line.

  python benchmarks/stage1_step.py --config=configs/shapes.py
  python benchmarks/stage1_step.py --config=configs/bair.py --config.stage1.batch_size=2

Random weights and a random clip batch, as in PERFORMANCE.md's reference timings. Reports the
median over --steps timed calls after compilation: the adversarial G step (encoder, decoder,
L1/KL[/LPIPS], D_T and D_S generator terms, feature matching, backward, Adam), the warm-up G step
(no GAN terms), and the D step (D_T hinge + per-sample R1 and D_S hinge, both Adam updates).
"""

import copy
import json
import resource
import statistics
import time

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from i2v_flax import config_lib
from i2v_flax.train import common

import bench_util  # benchmarks/ is the script's directory, so it is on sys.path.
import targets

config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/shapes.py.")
flags.DEFINE_integer("steps", 5, "Timed calls per step function after compilation.")
flags.DEFINE_bool("warmup_step", True, "Also time the warm-up (no-GAN) generator step.")
flags.DEFINE_bool("compile_only", False, "Compile the adversarial step, print XLA's memory plan "
                  "and FLOPs, run nothing (does a batch fit?).")
FLAGS = flags.FLAGS
_FLOPS = {}  # jitted step -> model FLOPs per call (XLA cost analysis of the compiled step).
_MEMORY = {}  # jitted step -> XLA's buffer plan in GB.


def _time(fn, args, n, flops=None):
  """(median call seconds, compile seconds, last output); flops: the model FLOPs where XLA's
  count of the compiled step is wrong (a microbatched step: see _one_pass_flops)."""
  if not hasattr(fn.fn, "lower"):  # microbatch_loop='host': a Python loop of jitted calls.
    return _time_host_loop(fn, args, n, flops)
  t = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - t
  _FLOPS[fn] = bench_util.compiled_flops(compiled) if flops is None else flops
  _MEMORY[fn] = bench_util.compiled_memory_gb(compiled)
  # Progress on stderr: a large batch can take many minutes per call, and a run stopped early
  # should still say how far it got.
  logging.info("compiled in %.1f s (XLA plan %s GB)", compile_s, _MEMORY[fn])
  if FLAGS.compile_only:
    return 0.0, compile_s, args
  median, out = _timed_calls(compiled, args, n)
  return median, compile_s, out


def _timed_calls(call, args, n):
  """(median seconds, last output) of n calls, each on the state the previous one returned."""
  times, out = [], None
  for _ in range(n):
    t = time.perf_counter()
    out = jax.block_until_ready(call(*args))
    times.append(time.perf_counter() - t)
    logging.info("call %d: %.2f s", len(times), times[-1])
    args = (out[0],) + tuple(args[1:])
  return statistics.median(times), out


def _time_host_loop(fn, args, n, flops):
  """A step made of several jitted calls (one per microbatch) has no single compiled module:
  its first call compiles them all and is not timed; 'compile' is that call minus the median.
  XLA's memory plan is per call, so only the process's peak RSS says what it needs."""
  _FLOPS[fn], _MEMORY[fn] = flops, None
  if FLAGS.compile_only:
    raise app.UsageError("--compile_only needs one compiled step; add "
                         "--config.stage1.microbatch_loop=scan (same update, one module).")
  t = time.perf_counter()
  first = jax.block_until_ready(fn(*args))
  first_s = time.perf_counter() - t
  logging.info("first call (compiles every microbatch call): %.1f s", first_s)
  args = (first[0],) + tuple(args[1:])
  del first  # Its state is the next call's input: no second copy alive.
  median, out = _timed_calls(fn, args, n)
  return median, max(first_s - median, 0.0), out


def _one_pass_flops(config, setup: dict) -> dict[str, float]:
  """FLOPs of each stage-1 step computed in one pass (microbatches=1), from its lowered module.

  XLA's cost analysis counts a loop body once, so a step that accumulates `microbatches` in a
  lax.scan would be under-counted about k-fold. The one-pass step is the same update, so its
  FLOPs are the model FLOPs of the microbatched one (without the G forward it recomputes for
  the D step); lowering only traces, so a batch too large to run still gets its count.
  """
  from i2v_flax.train.stage1_steps import make_steps
  one_pass = copy.deepcopy(config)
  with one_pass.unlocked():
    one_pass.stage1.microbatches = 1
  steps = make_steps(one_pass, setup["models"], setup["mesh"], setup["lpips_params"])
  return {name: bench_util.compiled_flops(steps[name].lower(setup["state"], setup["video"]))
          for name in ("adv", "g_warmup")}


def main(argv):
  del argv
  # Epoch lengths only set lr schedules here; a per-video epoch (dtdb) assumes 100 videos.
  config = config_lib.resolve_epochs(FLAGS.config, num_train_videos=100)
  s1 = config.stage1
  setup = targets.stage1_setup(config)
  steps, state, video = setup["steps"], setup["state"], setup["video"]
  r = config.data.resolution
  counts = {k: common.count_params(state[k]["params"]) for k in ("encoder", "decoder", "d_t", "d_s")}
  # One adversarial iteration (D_T, D_S and G updates) is one jitted step since issue 14.
  # Counted before the timed calls, which donate the state.
  flops = _one_pass_flops(config, setup) if int(s1.get("microbatches", 1)) > 1 else {}
  it_s, it_compile, out = _time(steps["adv"], (state, video), FLAGS.steps, flops.get("adv"))
  state = out[0]
  result = {
      "backend": jax.default_backend(), "devices": jax.device_count(),
      "batch_size": s1.batch_size, "resolution": r, "compute_dtype": config.compute_dtype,
      "conv3d_impl": s1.conv3d_impl, "w_percep": s1.w_percep,
      "iteration_s": round(it_s, 4),
      "frames_per_s": round(s1.batch_size * (config.data.clip_length - 1) / it_s, 2) if it_s
                      else None,
      "compile_s": {"adv": round(it_compile, 1)},
      "params": counts,
      "xla_memory_gb": {"adv": _MEMORY[steps["adv"]]},
  }
  if FLAGS.compile_only:
    result.update(iteration_s=None, model_gflop=round(_FLOPS[steps["adv"]] / 1e9, 1))
    print(json.dumps(result))
    return
  if FLAGS.warmup_step:
    w_s, w_compile, _ = _time(steps["g_warmup"], (state, video), FLAGS.steps,
                              flops.get("g_warmup"))
    result["g_warmup_step_s"] = round(w_s, 4)
    result["compile_s"]["g_warmup"] = round(w_compile, 1)
  result["throughput"] = {k: bench_util.throughput(_FLOPS[steps[k]], result[v])
                          for k, v in (("adv", "iteration_s"), ("g_warmup", "g_warmup_step_s"))
                          if v in result}
  result["machine"] = bench_util.machine_state()
  result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
  print(json.dumps(result))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
