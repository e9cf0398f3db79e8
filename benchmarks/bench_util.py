"""Shared by the benchmark scripts: machine state, model FLOPs from XLA, achieved TFLOP/s.

Why: on a shared 2-core CPU an absolute time means little without the load next to it, and on
a GPU/TPU the same command should read as MFU, which needs the step's FLOPs. The FLOPs come
from the compiled computation's own cost analysis (what XLA will execute, convolutions and
matmuls counted as 2*MACs), not from a hand count that can drift from the model.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

# Dense bf16 peak per chip in TFLOP/s, for MFU on accelerators (device docs; CPU: none).
PEAK_TFLOPS = {"H100": 790.0, "H200": 790.0, "A100": 312.0, "TPU v4": 275.0, "TPU v5e": 197.0,
               "TPU v5p": 459.0}


def machine_state() -> dict[str, Any]:
  """Load average and a 2048^2 f32 matmul's GFLOP/s: the context every absolute figure needs."""
  a = jnp.ones((2048, 2048), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  jax.block_until_ready(f(a))
  best = float("inf")
  for _ in range(3):
    t = time.perf_counter()
    jax.block_until_ready(f(a))
    best = min(best, time.perf_counter() - t)
  return {"loadavg": [round(v, 2) for v in os.getloadavg()],
          "matmul_2048_gflops": round(2 * 2048**3 / best / 1e9, 1), "cpus": os.cpu_count(),
          "backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
          "jax": jax.__version__}


def compiled_flops(compiled: Any) -> float:
  """FLOPs of one call of a compiled (or lowered) computation (XLA cost analysis; 0 if
  unavailable). A loop body is counted once, whatever its trip count."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per device program.
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", 0.0))


def compiled_memory_gb(compiled: Any) -> dict[str, float]:
  """XLA's buffer plan of a compiled computation in GB: arguments, outputs, temporaries.

  Known before anything runs, so a batch that will not fit can be told (and its largest part
  named) without being killed by the OOM killer; {} where the backend gives no analysis.
  """
  stats = compiled.memory_analysis()
  if stats is None:
    return {}
  gb = lambda name: round(getattr(stats, name, 0) / 2**30, 3)  # noqa: E731
  return {"arguments": gb("argument_size_in_bytes"), "outputs": gb("output_size_in_bytes"),
          "temporaries": gb("temp_size_in_bytes"), "aliased": gb("alias_size_in_bytes")}


def jit_flops(fn: Callable, *args: Any) -> float:
  """FLOPs of one call of `fn(*args)`, `fn` jitted (its compile is cached for the real calls)."""
  f = fn if hasattr(fn, "lower") else jax.jit(fn)
  return compiled_flops(f.lower(*args).compile())


def throughput(flops: float, seconds: float) -> dict[str, Any]:
  """Model GFLOP per call, achieved TFLOP/s and, on a known accelerator, MFU."""
  out = {"model_gflop": round(flops / 1e9, 2),
         "achieved_tflops": round(flops / seconds / 1e12, 4) if seconds > 0 else None}
  kind = jax.devices()[0].device_kind
  peak = next((v for k, v in PEAK_TFLOPS.items() if k in kind), None)
  if peak and seconds > 0:
    out["mfu_vs_bf16_peak"] = round(flops / seconds / 1e12 / (peak * jax.device_count()), 4)
  return out
