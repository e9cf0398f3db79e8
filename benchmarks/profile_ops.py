"""Where a step spends its time, per op class, from a real `jax.profiler` trace; JSON + a table.

  nice -n 15 python benchmarks/profile_ops.py --target=stage1 --config=configs/bair.py \
      --config.stage1.batch_size=2 [--steps=1] [--logdir=/tmp/i2v_trace]
  nice -n 15 python benchmarks/profile_ops.py --target=stage2 --config=configs/bair.py
  nice -n 15 python benchmarks/profile_ops.py --target=sample --config=configs/bair.py --batch=1

Why a trace and not only the cost analysis: XLA's FLOP count says what the step must compute,
the trace says where the seconds went (a conv kernel gradient can run at a tenth of a matmul's
speed). The trace's events are named after the compiled HLO instructions, so each event is
classified from its instruction in `compiled.as_text()`: convolutions into forward / input
gradient / kernel gradient (a kernel-gradient conv has a window as large as its input and a
kernel-sized output), dots (matmuls), copies/transposes, reductions (norms, means) and the rest
(elementwise fusions); a second view splits by model part from the op's name scope (LPIPS, D_T,
D_S, encoder, decoder, optimizer).
"""

from __future__ import annotations

import collections
import glob
import gzip
import inspect
import json
import math
import os
import re
import time

import jax
from absl import app, flags
from ml_collections import config_flags

import bench_util as flops_lib  # benchmarks/ is the script's directory, so on sys.path.
import targets

config_flags.DEFINE_config_file("config", "configs/bair.py", "Config file.")
flags.DEFINE_enum("target", "stage1", ["stage1", "stage1_warmup", "stage2", "sample"],
                  "Which computation (stage1_warmup: the G step without GAN terms).")
flags.DEFINE_integer("batch", 0, "Batch size override (0: the config's; sample: 1).")
flags.DEFINE_integer("steps", 1, "Traced calls after the compile (the first call is not traced).")
flags.DEFINE_integer("top", 12, "Also list the N slowest instructions with their HLO.")
flags.DEFINE_string("logdir", "/tmp/i2v_trace", "Where jax.profiler writes the trace.")
FLAGS = flags.FLAGS

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s([a-z][\w\-]*)\((.*)$")
# (substring of the op's name scope, lowercased) -> model part; first match wins.
_SCOPES = (("lpips", "LPIPS"), ("vgg16", "LPIPS"), ("spatialdiscriminator", "D_S"),
           ("temporaldiscriminator", "D_T"), ("encoder", "encoder"), ("decoder", "decoder"),
           ("conditionalflow", "cINN"), ("embedder", "embedder"), ("resnet50", "embedder"))
# fast_conv.py functions -> op class (found from the op's source line).
_FAST_CONV_FUNCS = {"_conv2d_forward": "conv forward", "_conv2d_input_grad": "conv input_grad",
                    "_conv2d_kernel_grad": "conv kernel_grad"}


def _shape_dims(type_str: str) -> list[int]:
  m = re.search(r"\[([\d,]*)\]", type_str)
  return [int(d) for d in m.group(1).split(",") if d] if m else []


def _fast_conv_lines() -> dict[int, str]:
  """source line of i2v_flax/models/fast_conv.py -> the op class of the function holding it."""
  from i2v_flax.models import fast_conv
  lines = {}
  for fname, fn in inspect.getmembers(fast_conv, inspect.isfunction):
    src, first = inspect.getsourcelines(fn)
    cls = _FAST_CONV_FUNCS.get(fname, "fast_conv pads/stacks")
    for i in range(first, first + len(src)):
      lines[i] = cls
  return lines


def conv_kind(type_str: str, rest: str, op_name: str, kernel_numels: set[int]) -> str:
  """forward / input_grad / kernel_grad for an XLA convolution (plain or in a YNN fusion).

  A kernel gradient has a kernel-sized output (and, as a plain conv, a window at least as large
  as its output); an input gradient is a conv in the backward pass (`transpose(` in its name).
  """
  out = _shape_dims(type_str)
  window = re.search(r"window=\{size=([\dx]+)", rest)
  labels = re.search(r"dim_labels=\w+_\w+->(\w+)", rest)
  if window and labels and len(out) == len(labels.group(1)):
    spatial = [out[i] for i, c in enumerate(labels.group(1)) if c.isdigit()]
    if math.prod(int(w) for w in window.group(1).split("x")) > math.prod(spatial):
      return "conv kernel_grad"
  if "transpose(" not in op_name:
    return "conv forward"
  return "conv kernel_grad" if math.prod(out) in kernel_numels else "conv input_grad"


def classify_hlo(hlo_text: str) -> dict[str, tuple[str, str, str]]:
  """instruction name -> (op class, model part, short HLO) for the compiled module."""
  fast_lines = _fast_conv_lines()
  entry = hlo_text[hlo_text.find("\nENTRY"):]
  kernel_numels = {math.prod(_shape_dims(m.group(1))) for m in re.finditer(
      r"= ((?:f32|bf16)\[\d+,\d+,\d+,\d+(?:,\d+)?\])[^ ]* parameter\(", entry)}
  out = {}
  for line in hlo_text.splitlines():
    m = _INSTR.match(line)
    if not m:
      continue
    name, type_str, opcode, rest = m.groups()
    op_name = (re.search(r'op_name="([^"]*)"', rest) or re.search("()", "")).group(1)
    src = (re.search(r'source_file="([^"]*)"', rest) or re.search("()", "")).group(1)
    src_line = int((re.search(r"source_line=(\d+)", rest) or re.search("()0", "0")).group(1) or 0)
    low, prim = name.lower(), op_name.rsplit("/", 1)[-1]
    if opcode == "parameter" or opcode == "constant":
      continue
    if src.endswith("fast_conv.py") and src_line in fast_lines:  # When XLA keeps source lines.
      cls = fast_lines[src_line]
    elif opcode == "convolution":
      cls = conv_kind(type_str, rest, op_name, kernel_numels)
    elif opcode in ("copy", "transpose") or "copy" in low or "transpose" in low:
      cls = "copy/transpose"
    elif opcode == "fusion" and prim == "conv_general_dilated":  # XNNPACK/YNNPACK conv fusion.
      cls = conv_kind(type_str, rest, op_name, kernel_numels)
    elif opcode == "dot" or (opcode == "fusion" and prim == "dot_general"):
      cls = "dot (matmul)"
    elif low.startswith("ynn_fusion") and not op_name:  # A YNNPACK conv/dot XLA left unnamed.
      cls = ("conv kernel_grad" if math.prod(_shape_dims(type_str)) in kernel_numels
             else "conv/dot (unnamed YNN fusion)")
    elif opcode in ("reduce", "reduce-window") or "reduce" in low or prim.startswith("reduce"):
      cls = "reduce (norms, means, pools)"
    elif opcode in ("pad", "slice", "concatenate", "dynamic-slice", "dynamic-update-slice"):
      cls = "pad/slice/concat"
    else:
      cls = "elementwise fusion/other"
    part = next((label for key, label in _SCOPES if key in op_name.lower()), "other/optimizer")
    out[name] = (cls, part, f"{type_str} {opcode}({rest[:140]} op_name={op_name[-90:]}")
  return out


def trace_event_times(logdir: str) -> dict[str, float]:
  """Total microseconds per event name in the newest perfetto trace under logdir."""
  path = max(glob.glob(os.path.join(logdir, "**", "*perfetto_trace.json.gz"), recursive=True),
             key=os.path.getmtime)
  data = json.load(gzip.open(path))
  events = data["traceEvents"] if isinstance(data, dict) else data
  totals: dict[str, float] = collections.defaultdict(float)
  for e in events:
    if e.get("ph") == "X":
      totals[e["name"]] += float(e.get("dur", 0))
  return totals


def main(argv):
  del argv
  machine = flops_lib.machine_state()
  fn, args, batch = targets.build(FLAGS.target, FLAGS.config, FLAGS.batch)
  t = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - t
  model_flops = flops_lib.compiled_flops(compiled)
  hlo = classify_hlo(compiled.as_text())
  out = jax.block_until_ready(compiled(*args))  # First call: buffers, page faults.
  args = targets.next_args(FLAGS.target, args, out)
  walls = []
  with jax.profiler.trace(FLAGS.logdir, create_perfetto_trace=True):
    for _ in range(FLAGS.steps):
      t = time.perf_counter()
      out = jax.block_until_ready(compiled(*args))
      walls.append(time.perf_counter() - t)
      args = targets.next_args(FLAGS.target, args, out)
  totals = trace_event_times(FLAGS.logdir)
  by_cls: dict[str, float] = collections.defaultdict(float)
  by_part: dict[str, float] = collections.defaultdict(float)
  for name, us in totals.items():
    if name in hlo:
      cls, part, _ = hlo[name]
      by_cls[cls] += us / 1e6 / FLAGS.steps
      by_part[part] += us / 1e6 / FLAGS.steps
  wall = min(walls)
  op_s = sum(by_cls.values())
  result = {"target": FLAGS.target, "batch": batch, "compute_dtype": FLAGS.config.compute_dtype,
            "conv3d_impl": FLAGS.config.stage1.conv3d_impl, "step_wall_s": round(wall, 3),
            "compile_s": round(compile_s, 1), "model_gflop": round(model_flops / 1e9, 1),
            "achieved_tflops": round(model_flops / wall / 1e12, 4),
            "op_seconds_sum": round(op_s, 3),
            "op_seconds_over_wall": round(op_s / wall, 2),  # > 1: ops overlapped on 2 cores.
            "by_class_s": {k: round(v, 3) for k, v in sorted(by_cls.items(), key=lambda a: -a[1])},
            "by_part_s": {k: round(v, 3) for k, v in sorted(by_part.items(), key=lambda a: -a[1])},
            "machine": machine, "machine_after": flops_lib.machine_state()}
  print(json.dumps(result))
  top = sorted((n for n in totals if n in hlo), key=lambda n: -totals[n])[:FLAGS.top]
  for n in top:
    print(f"{totals[n] / 1e6 / FLAGS.steps:8.3f} s  {hlo[n][0]:>18}  {n}: {hlo[n][2]}")
  print(f"\n| op class ({FLAGS.target}, batch {batch}) | s/step | share |\n|---|---|---|")
  for k, v in result["by_class_s"].items():
    print(f"| {k} | {v:.3f} | {100 * v / op_s:.0f} % |")


if __name__ == "__main__":
  app.run(main)
