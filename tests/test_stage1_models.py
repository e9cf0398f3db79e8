"""Stage-1 networks: shapes for every config, bair parameter counts, and the layers' maths."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from i2v_flax import config_lib
from i2v_flax.models import layers
from i2v_flax.train import common
from i2v_flax.train.stage1 import build_models

CONFIGS = ["configs/bair.py", "configs/iper.py", "configs/landscape.py", "configs/shapes.py",
           "configs/dtdb.py:fire"]
KEY = jax.random.PRNGKey(0)


def _abstract(config, batch=2):
  r, s1 = config.data.resolution, config.stage1
  m = build_models(config)
  video = jax.ShapeDtypeStruct((batch, 16, r, r, 3), jnp.float32)
  x0 = jax.ShapeDtypeStruct((batch, r, r, 3), jnp.float32)
  z = jax.ShapeDtypeStruct((batch, s1.z_dim), jnp.float32)
  window = jax.ShapeDtypeStruct((batch, s1.dt_window, r, r, 3), jnp.float32)
  ev = jax.eval_shape(m.encoder.init, KEY, video, KEY)
  dv = jax.eval_shape(m.decoder.init, KEY, x0, z)
  tv = jax.eval_shape(m.d_t.init, KEY, window)
  sv = jax.eval_shape(m.d_s.init, KEY, x0)
  outs = (jax.eval_shape(m.encoder.apply, ev, video, KEY), jax.eval_shape(m.decoder.apply, dv, x0, z),
          jax.eval_shape(m.d_t.apply, tv, window), jax.eval_shape(m.d_s.apply, sv, x0))
  return (ev, dv, tv, sv), outs


@pytest.mark.parametrize("spec", CONFIGS)
def test_output_shapes_every_config(spec):
  config = config_lib.load_config(spec)
  r, zd = config.data.resolution, config.stage1.z_dim
  _, (enc, dec, dt, ds) = _abstract(config)
  assert [x.shape for x in enc] == [(2, zd)] * 3
  assert dec.shape == (2, 16, r, r, 3)
  logits, feats = dt
  assert logits.shape == (2,) and len(feats) == 4
  assert feats[-1].shape[1:4] == (1, 4, 4) and feats[-1].shape[-1] == config.stage1.dt_widths[-1]
  assert ds.ndim == 3 and ds.shape[0] == 2


def test_parameter_counts_match_reference_at_bair():
  (ev, dv, tv, sv), _ = _abstract(config_lib.load_config("configs/bair.py"), batch=1)
  counts = [common.count_params(v["params"]) for v in (ev, dv, tv, sv)]
  # PERFORMANCE.md reference counts (torch); we match them exactly.
  assert counts == [73_639_488, 152_786_243, 37_750_336, 2_766_529]


def test_bad_strides_give_a_clear_error():
  config = config_lib.load_config("configs/shapes.py")
  config.stage1.enc_stride_s = (1, 1, 1, 2)
  with pytest.raises(ValueError, match="enc_stride"):
    _abstract(config)


@pytest.mark.parametrize("kernel,strides,padding", [
    ((3, 3, 3), (1, 1, 1), "SAME"),
    ((3, 7, 7), (2, 2, 2), ((1, 1), (3, 3), (3, 3))),
    ((3, 3, 3), (2, 1, 2), "SAME"),
])
def test_taps_conv_equals_native(kernel, strides, padding):
  x = jax.random.normal(KEY, (2, 7, 9, 10, 5))
  native = layers.Conv(6, kernel, strides, padding, impl="native")
  taps = layers.Conv(6, kernel, strides, padding, impl="taps")
  params = native.init(KEY, x)
  a, b = native.apply(params, x), taps.apply(params, x)
  assert a.shape == b.shape
  np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5)


class _Normalized(nn.Module):
  @nn.compact
  def __call__(self, update: bool):
    kernel = self.param("kernel", nn.initializers.normal(1.0), (3, 3, 4, 8))
    return layers.spectral_normalize(self, kernel, update)


def test_spectral_norm_largest_singular_value_is_one():
  m = _Normalized()
  variables = m.init(KEY, False)
  w = variables["params"]["kernel"].reshape(-1, 8)
  assert np.linalg.svd(w, compute_uv=False)[0] > 3.0  # Far from 1 before normalising.
  for _ in range(30):
    _, upd = m.apply(variables, True, mutable=[layers.SPECTRAL])
    variables = {**variables, **upd}
  normalized = m.apply(variables, False).reshape(-1, 8)
  assert np.linalg.svd(normalized, compute_uv=False)[0] == pytest.approx(1.0, abs=1e-3)
  # Eval mode leaves the stored vector alone.
  _, upd = m.apply(variables, False, mutable=[layers.SPECTRAL])
  np.testing.assert_array_equal(upd[layers.SPECTRAL]["u"], variables[layers.SPECTRAL]["u"])


def test_adain_channel_statistics_follow_z():
  x = 3.0 * jax.random.normal(KEY, (2, 4, 5, 6, 8)) + 1.0
  z = jax.random.normal(jax.random.PRNGKey(1), (2, 16))
  m = layers.ADAIN()
  params = m.init(KEY, x, z)
  out = np.asarray(m.apply(params, x, z))
  style = params["params"]["style"]
  gb = np.asarray(z @ style["kernel"] + style["bias"])
  gamma, beta = gb[:, :8], gb[:, 8:]
  np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), beta, atol=1e-4)
  np.testing.assert_allclose(out.std(axis=(1, 2, 3)), np.abs(gamma), rtol=1e-3, atol=1e-4)


def test_spade_with_zero_convs_is_plain_group_norm():
  x = jax.random.normal(KEY, (2, 3, 8, 8, 32)) * 2 + 0.5
  x0 = jax.random.normal(KEY, (2, 16, 16, 3))
  m = layers.SPADE(hidden=8)
  params = m.init(KEY, x, x0)
  params = jax.tree_util.tree_map(jnp.zeros_like, params)
  out = np.asarray(m.apply(params, x, x0))
  g = np.asarray(x).reshape(2, 3, 8, 8, 16, 2)  # 16 groups of 2 channels.
  mean = g.mean(axis=(1, 2, 3, 5), keepdims=True)
  var = g.var(axis=(1, 2, 3, 5), keepdims=True)
  expected = ((g - mean) / np.sqrt(var + 1e-5)).reshape(x.shape)
  np.testing.assert_allclose(out, expected, atol=1e-4)


def test_actnorm_initialises_from_the_init_batch():
  x = 5.0 * jax.random.normal(KEY, (4, 6, 6, 3)) - 2.0
  m = layers.ActNorm()
  out = np.asarray(m.apply(m.init(KEY, x), x))
  np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
  np.testing.assert_allclose(out.std(axis=(0, 1, 2), ddof=1), 1.0, atol=1e-3)  # Unbiased, as torch.
