"""Old vs new convolution microbenchmarks (issue 15's table); prints one JSON line per op.

  nice -n 15 python benchmarks/conv_ops.py [--repeats=3] [--only=3d] [--plans]

Why interleaved: the machine is shared, so each round times every variant once, in turn, and
the minimum over rounds is reported; the ratios are what to read, the absolute seconds move with
the load (printed first: load average and a 2048^2 float32 matmul's GFLOP/s).
'old' is what `Conv` did before `fast_conv` (XLA's conv and its autodiff; 'taps' = the 3-D conv
as a sum of 2-D convs differentiated by autodiff); 'new' is `fast_conv` with `CPU_PLAN`.
--plans also times every 2-D formulation of each part ('xla' / 'dots') to justify CPU_PLAN.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
from absl import app, flags

from i2v_flax.models.fast_conv import CPU_PLAN, Plan, fast_conv, native_conv
from i2v_flax.models.layers import conv3d_taps

flags.DEFINE_integer("repeats", 3, "Rounds; the minimum over rounds is reported.")
flags.DEFINE_string("only", "", "'2d' or '3d' to time one family.")
flags.DEFINE_bool("plans", False, "Also time each formulation of each part.")
flags.DEFINE_list("parts", ["forward", "input_grad", "kernel_grad", "fwd_bwd"], "Parts to time.")
FLAGS = flags.FLAGS


def machine_state() -> dict:
  """Load average and a 2048^2 f32 matmul's GFLOP/s: the context every figure needs."""
  a = jnp.ones((2048, 2048), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  jax.block_until_ready(f(a))
  best = min(_once(f, (a,)) for _ in range(3))
  return {"loadavg": [round(v, 2) for v in os.getloadavg()],
          "matmul_2048_gflops": round(2 * 2048**3 / best / 1e9, 1), "cpus": os.cpu_count(),
          "backend": jax.default_backend(), "jax": jax.__version__}


def _once(f: Callable, args: tuple) -> float:
  t = time.perf_counter()
  jax.block_until_ready(f(*args))
  return time.perf_counter() - t


def interleaved(variants: dict[str, tuple[Callable, tuple]], repeats: int) -> dict[str, float]:
  """min over `repeats` rounds; each round runs every (jitted, warmed-up) variant once."""
  jitted = {k: (jax.jit(f), a) for k, (f, a) in variants.items()}
  for f, a in jitted.values():
    jax.block_until_ready(f(*a))
  best = {k: float("inf") for k in jitted}
  for _ in range(repeats):
    for k, (f, a) in jitted.items():
      best[k] = min(best[k], _once(f, a))
  return {k: round(v, 4) for k, v in best.items()}


def _parts(conv: Callable, x: jax.Array, k: jax.Array, dy: jax.Array) -> dict:
  """forward; input grad incl. forward; kernel grad incl. forward; both grads (a train step)."""
  loss = lambda x, k: jnp.sum(conv(x, k) * dy)  # noqa: E731
  return {"forward": (conv, (x, k)),
          "input_grad": (lambda x, k: jax.grad(loss, 0)(x, k), (x, k)),
          "kernel_grad": (lambda x, k: jax.grad(loss, 1)(x, k), (x, k)),
          "fwd_bwd": (lambda x, k: jax.grad(loss, (0, 1))(x, k), (x, k))}


def bench(name: str, xs: tuple, ks: tuple, strides: tuple, pad: tuple, repeats: int,
          plans: bool) -> None:
  kx, kk, kd = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(kx, xs, jnp.float32)
  k = jax.random.normal(kk, ks, jnp.float32) * 0.05
  dy = jax.random.normal(kd, jax.eval_shape(lambda: native_conv(x, k, strides, pad)).shape)
  impls = {"old_native": lambda x, k: native_conv(x, k, strides, pad),
           "new_fast": lambda x, k: fast_conv(x, k, strides, pad, CPU_PLAN)}
  if len(ks) == 5:
    impls["old_taps_autodiff"] = lambda x, k: conv3d_taps(x, k, strides, pad)
  if plans:
    for p in PLANS[len(ks) - 2]:
      tag = "_".join(v for v in dataclasses.astuple(p))
      impls[f"plan_{tag}"] = (lambda p: lambda x, k: fast_conv(x, k, strides, pad, p))(p)
  flops = 2 * float(jnp.prod(jnp.array(dy.shape, jnp.float32))) * float(
      jnp.prod(jnp.array(ks[:-1], jnp.float32)))
  for part in FLAGS.parts:
    variants = {impl: _parts(f, x, k, dy)[part] for impl, f in impls.items()}
    times = interleaved(variants, repeats)
    out = {"op": name, "part": part, "x": xs, "kernel": ks, "strides": strides,
           "forward_gflop": round(flops / 1e9, 2), "seconds": times}
    if "old_native" in times:
      out["speedup_new_vs_native"] = round(times["old_native"] / times["new_fast"], 2)
    print(json.dumps(out), flush=True)


# Candidate formulations (forward, input grad, kernel grad, temporal) timed by --plans.
PLANS = {2: [Plan("xla", "xla", "xla"), Plan("xla", "xla", "dots"), Plan("xla", "xla", "dyshift")],
         3: [Plan("xla", "xla", "xla", "sum"), Plan("xla", "xla", "xla", "stack"),
             Plan("xla", "xla", "dots", "stack"), Plan("xla", "xla", "dyshift", "stack"),
             Plan("xla", "xla", "dyshift", "sum")]}


CASES = {
    "2d": [("2d 3x3 (32,64,64,128)->64", (32, 64, 64, 128), (3, 3, 128, 64), (1, 1),
            ((1, 1), (1, 1)))],
    "3d": [("3d 3x3x3 (2,16,64,64,128)->64", (2, 16, 64, 64, 128), (3, 3, 3, 128, 64), (1, 1, 1),
            ((1, 1), (1, 1), (1, 1))),
           ("3d decoder g3.conv0 (2,16,64,64,256)->128", (2, 16, 64, 64, 256), (3, 3, 3, 256, 128),
            (1, 1, 1), ((1, 1), (1, 1), (1, 1))),
           ("3d decoder head.conv0 (2,1,4,4,1024)->1024", (2, 1, 4, 4, 1024),
            (3, 3, 3, 1024, 1024), (1, 1, 1), ((1, 1), (1, 1), (1, 1)))],
}


def main(argv):
  del argv
  print(json.dumps({"machine": machine_state(), "plan": CPU_PLAN.__dict__}), flush=True)
  for family, cases in CASES.items():
    if FLAGS.only and FLAGS.only != family:
      continue
    for case in cases:
      bench(*case, repeats=FLAGS.repeats, plans=FLAGS.plans)
  print(json.dumps({"machine_after": machine_state()}), flush=True)


if __name__ == "__main__":
  app.run(main)
