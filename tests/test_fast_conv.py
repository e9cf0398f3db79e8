"""fast_conv equals XLA's native convolution: values and both gradients (rel. 1e-4).

Small shapes, covering what the models use: 2-D 3x3 / 4x4 / 7x7 kernels, strides 1 and 2,
'SAME', explicit and 'VALID' paddings; 3-D 3x3x3, 3x7x7 stems, 1x1x1 shortcuts, temporal and
spatial strides; each 2-D formulation of the Plan; spectral-normed Conv modules; bf16 compute.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from i2v_flax.models.fast_conv import Plan, fast_conv, native_conv
from i2v_flax.models.layers import SPECTRAL, Conv, resolve_conv3d_impl

CASES = [  # (x shape, kernel shape, strides, padding)
    ((2, 9, 9, 5), (3, 3, 5, 4), (1, 1), ((1, 1), (1, 1))),
    ((2, 9, 9, 5), (4, 4, 5, 4), (2, 2), ((1, 1), (1, 1))),  # D_S.
    ((2, 10, 10, 3), (7, 7, 3, 4), (2, 2), ((3, 3), (3, 3))),  # ResNet stem.
    ((1, 5, 5, 6), (4, 4, 6, 3), (1, 1), ((0, 0), (0, 0))),  # Encoder heads ('VALID').
    ((2, 5, 8, 8, 3), (3, 3, 3, 3, 4), (1, 1, 1), ((1, 1), (1, 1), (1, 1))),
    ((2, 6, 8, 8, 3), (3, 3, 3, 3, 4), (2, 2, 2), ((1, 1), (1, 1), (1, 1))),  # Encoder stages.
    ((2, 6, 8, 8, 3), (3, 3, 3, 3, 4), (2, 1, 1), ((1, 1), (1, 1), (1, 1))),  # D_T stages.
    ((2, 7, 9, 9, 3), (3, 7, 7, 3, 4), (2, 2, 2), ((1, 1), (3, 3), (3, 3))),  # Encoder stem.
    ((2, 4, 6, 6, 3), (1, 1, 1, 3, 4), (1, 1, 1), ((0, 0), (0, 0), (0, 0))),  # Decoder shortcut.
]
# The default plan on every case; the other formulations on the cases that differ for them.
PLANS = [(Plan(), CASES), (Plan("dots", "dots", "dots", "sum"), [CASES[i] for i in (1, 5, 6)]),
         (Plan("xla", "xla", "xla", "sum"), [CASES[i] for i in (0, 4, 8)]),
         (Plan("xla", "xla", "dots", "stack"), [CASES[i] for i in (6, 8)]),
         (Plan("xla", "xla", "dyshift", "sum"), [CASES[i] for i in (4, 6)])]


def _rel(a: jax.Array, b: jax.Array) -> float:
  return float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))


@pytest.mark.parametrize("plan,cases", PLANS,
                         ids=lambda p: "_".join(getattr(p, "__dict__", {}).values()))
def test_values_and_gradients_match_native(plan: Plan, cases):
  rng = np.random.default_rng(0)
  for xs, ks, strides, pad in cases:
    x = jnp.asarray(rng.normal(size=xs), jnp.float32)
    k = jnp.asarray(rng.normal(size=ks), jnp.float32)

    def both(x, k, conv):
      """Output and both gradients of sum(sin(conv)), in one jitted call (fast to test)."""
      y, vjp = jax.vjp(conv, x, k)
      return (y,) + vjp(jnp.cos(y))

    y, *g = jax.jit(lambda x, k: both(x, k, lambda x, k: fast_conv(x, k, strides, pad, plan)))(
        x, k)
    y_ref, *g_ref = jax.jit(lambda x, k: both(x, k, lambda x, k: native_conv(x, k, strides, pad)))(
        x, k)
    assert y.shape == y_ref.shape, (ks, strides)
    assert _rel(y, y_ref) < 1e-4, (ks, strides)
    assert _rel(g[0], g_ref[0]) < 1e-4, ("input grad", ks, strides)
    assert _rel(g[1], g_ref[1]) < 1e-4, ("kernel grad", ks, strides)


def test_jitted_and_bfloat16():
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 8, 8, 3))
  k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 3, 4))
  pad = ((1, 1),) * 3
  f = jax.jit(jax.grad(lambda x, k: jnp.sum(fast_conv(x, k, (1, 1, 1), pad) ** 2), (0, 1)))
  g, g_ref = f(x, k), jax.jit(jax.grad(
      lambda x, k: jnp.sum(native_conv(x, k, (1, 1, 1), pad) ** 2), (0, 1)))(x, k)
  assert _rel(g[1], g_ref[1]) < 1e-4
  xb, kb = x.astype(jnp.bfloat16), k.astype(jnp.bfloat16)
  loss = lambda x, k: jnp.sum(fast_conv(x, k, (1, 1, 1), pad).astype(jnp.float32) ** 2)  # noqa
  gb = jax.jit(jax.grad(loss, (0, 1)))(xb, kb)
  assert gb[0].dtype == jnp.bfloat16 and gb[1].dtype == jnp.bfloat16
  assert bool(jnp.all(jnp.isfinite(gb[1].astype(jnp.float32))))
  assert _rel(gb[1].astype(jnp.float32), g_ref[1]) < 5e-2


@pytest.mark.parametrize("kernel,strides,x_shape", [((3, 3, 3), (1, 1, 1), (2, 4, 8, 8, 3)),
                                                    ((3, 3, 3), (2, 2, 2), (2, 4, 8, 8, 3)),
                                                    ((4, 4), (2, 2), (2, 8, 8, 3))])
def test_spectral_normed_conv_module(kernel, strides, x_shape):
  """Conv(impl='fast') == Conv(impl='native'): outputs, stored u/v and parameter gradients."""
  x = jax.random.normal(jax.random.PRNGKey(0), x_shape)
  mods = {impl: Conv(5, kernel, strides, spectral_norm=True, impl=impl)
          for impl in ("native", "fast")}
  variables = mods["native"].init(jax.random.PRNGKey(1), x)

  def loss(params, impl):
    y, upd = mods[impl].apply({**variables, "params": params}, x, True, mutable=[SPECTRAL])
    return jnp.sum(jnp.tanh(y)), (y, upd)

  outs = {impl: jax.jit(jax.grad(loss, has_aux=True), static_argnums=1)(variables["params"], impl)
          for impl in mods}
  (g_n, (y_n, u_n)), (g_f, (y_f, u_f)) = outs["native"], outs["fast"]
  assert _rel(y_f, y_n) < 1e-4
  for a, b in zip(jax.tree_util.tree_leaves((g_f, u_f)), jax.tree_util.tree_leaves((g_n, u_n))):
    assert _rel(a, b) < 1e-4


def test_auto_is_fast_on_cpu_and_rejects_unknown():
  assert resolve_conv3d_impl("auto") == ("fast" if jax.default_backend() == "cpu" else "native")
  with pytest.raises(ValueError, match="conv3d_impl"):
    resolve_conv3d_impl("oneDNN")
