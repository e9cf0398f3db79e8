"""Old vs new convolution implementation on a whole step, in ONE process, interleaved.

  nice -n 15 python benchmarks/impl_compare.py --target=stage1 --config=configs/bair.py \
      --config.stage1.batch_size=2 --impls=taps,fast [--rounds=2]

Why: on a shared machine two separate runs can differ by 2x from the load alone (measured here:
the same 'fast' stage-1 iteration took 33 s and 51 s in two runs). Building every variant in one
process and timing them in turn, round after round, gives a ratio that the load affects much
less; the minimum over rounds is reported, with the machine state before and after.
"""

from __future__ import annotations

import json
import time

import jax
from absl import app, flags
from ml_collections import config_flags

import bench_util  # benchmarks/ is the script's directory, so it is on sys.path.
import targets

config_flags.DEFINE_config_file("config", "configs/bair.py", "Config file.")
flags.DEFINE_enum("target", "stage1", ["stage1", "stage2", "sample"], "Which computation.")
flags.DEFINE_integer("batch", 0, "Batch size override (0: the config's; sample: 1).")
flags.DEFINE_list("impls", ["taps", "fast"], "Values of stage1.conv3d_impl to compare.")
flags.DEFINE_integer("rounds", 2, "Timed rounds; each runs every variant once.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  out = {"target": FLAGS.target, "machine": bench_util.machine_state(), "variants": {}}
  built = {}
  for impl in FLAGS.impls:
    config = FLAGS.config.copy_and_resolve_references()
    config.stage1.conv3d_impl = impl
    fn, args, batch = targets.build(FLAGS.target, config, FLAGS.batch)
    t = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - t
    res = jax.block_until_ready(compiled(*args))  # Warm-up call.
    built[impl] = [compiled, targets.next_args(FLAGS.target, args, res)]
    out["batch"] = batch
    out["variants"][impl] = {"compile_s": round(compile_s, 1),
                             "flops": bench_util.compiled_flops(compiled), "times": []}
  for _ in range(FLAGS.rounds):
    for impl, (compiled, args) in built.items():
      t = time.perf_counter()
      res = jax.block_until_ready(compiled(*args))
      out["variants"][impl]["times"].append(round(time.perf_counter() - t, 3))
      built[impl][1] = targets.next_args(FLAGS.target, args, res)
  for v in out["variants"].values():
    v["min_s"] = min(v["times"])
    v.update(bench_util.throughput(v.pop("flops"), v["min_s"]))
  base = out["variants"][FLAGS.impls[0]]["min_s"]
  out["speedup_vs_" + FLAGS.impls[0]] = {k: round(base / v["min_s"], 2)
                                          for k, v in out["variants"].items()}
  out["machine_after"] = bench_util.machine_state()
  print(json.dumps(out))


if __name__ == "__main__":
  app.run(main)
