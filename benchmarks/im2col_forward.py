"""XLA's conv forward against im2col (conv_general_dilated_patches + one matmul) for the wide
2-D convs a stacked-tap stage-2 encoder runs; prints one JSON line per shape.

  python benchmarks/im2col_forward.py

Why: XLA-CPU's conv runs at ~half the matmul rate, so a matmul formulation could win if building
the patches were cheap (benchmarks/README.md, "Stage 2": it is not).
"""

import json
import time

import jax
import jax.numpy as jnp
from jax import lax

NHWC = ("NHWC", "HWIO", "NHWC")
SHAPES = [(200, 32, 32, 192, 64), (200, 16, 16, 384, 128), (200, 8, 8, 768, 256),
          (100, 64, 64, 192, 64)]  # (batch, height, width, channels in, channels out)


def min_seconds(fn, *args, repeats: int = 3) -> float:
  fn(*args).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn(*args).block_until_ready()
    times.append(time.perf_counter() - t)
  return min(times)


@jax.jit
def conv(x, k):
  return lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC)


@jax.jit
def im2col(x, k):
  # Patch features are ordered channel-major: (c, kh, kw).
  patches = lax.conv_general_dilated_patches(x, k.shape[:2], (1, 1), "SAME",
                                             dimension_numbers=NHWC)
  return patches @ k.transpose(2, 0, 1, 3).reshape(-1, k.shape[-1])


def main():
  a = jax.random.normal(jax.random.PRNGKey(2), (2048, 2048))
  for b, h, w, ci, co in SHAPES:
    x = jax.random.normal(jax.random.PRNGKey(0), (b, h, w, ci))
    k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, ci, co))
    ref = conv(x, k)
    rel_err = float(jnp.max(jnp.abs(ref - im2col(x, k))) / jnp.max(jnp.abs(ref)))
    flops = 2 * b * h * w * ci * co * 9
    t_conv, t_im2col = min_seconds(conv, x, k), min_seconds(im2col, x, k)
    t_matmul = min_seconds(jax.jit(lambda a: a @ a), a)
    print(json.dumps({
        "shape": [b, h, w, ci, co], "conv_s": round(t_conv, 3), "im2col_s": round(t_im2col, 3),
        "conv_gflops": round(flops / t_conv / 1e9, 1),
        "im2col_gflops": round(flops / t_im2col / 1e9, 1),
        "matmul_2048_gflops": round(2 * 2048**3 / t_matmul / 1e9, 1), "rel_err": rel_err}),
        flush=True)


if __name__ == "__main__":
  main()
