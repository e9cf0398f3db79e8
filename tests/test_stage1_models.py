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
  ev = jax.eval_shape(m.encoder.init, KEY, video, KEY, x0)
  dv = jax.eval_shape(m.decoder.init, KEY, x0, z)
  tv = jax.eval_shape(m.d_t.init, KEY, window)
  sv = jax.eval_shape(m.d_s.init, KEY, x0)
  outs = (jax.eval_shape(m.encoder.apply, ev, video, KEY, x0), jax.eval_shape(m.decoder.apply, dv, x0, z),
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


def test_decoder_demo_options_default_to_the_reference():
  """dec_coords / dec_output are demo departures: the paper configs build the reference decoder
  (no coordinate inputs, no blend/warp head), and switching them on changes exactly those
  parameters."""
  from i2v_flax.models.decoder import Decoder
  x0, z = jnp.zeros((1, 32, 32, 3)), jnp.zeros((1, 8))
  kw = dict(nf=2, up_t=(2, 2, 2, 2, 1), up_s=(2, 2, 1, 1, 2), spade_hidden=4)
  for spec in ("configs/bair.py", "configs/landscape.py"):
    s1 = config_lib.load_config(spec).stage1
    assert s1.dec_coords is False and s1.dec_output == "rgb"
  ref = jax.eval_shape(Decoder(**kw).init, KEY, x0, z)["params"]
  demo = jax.eval_shape(Decoder(**kw, coords=True, output="warp").init, KEY, x0, z)["params"]
  assert "warp_head" not in ref and "warp_head" in demo
  blend = jax.eval_shape(Decoder(**kw, output="blend").init, KEY, x0, z)["params"]
  assert set(blend) - set(ref) == {"blend_head"}
  for block in ("head", "g0", "g4"):
    k_ref, k_demo = ref[block]["conv0"]["kernel"].shape, demo[block]["conv0"]["kernel"].shape
    assert k_demo[:3] == k_ref[:3] and k_demo[3] == k_ref[3] + 3  # + (t, y, x) channels.
  with pytest.raises(ValueError, match="dec_output"):
    Decoder(**kw, output="flow").init(KEY, x0, z)


def test_encoder_x0_diff_feeds_exactly_the_difference_to_x0():
  """enc_x0_diff is off in the paper configs; on, the stem reads [x_t, x_t - x_0]. With x_0 = 0
  that is conv_a(x) + conv_b(x), so the plain encoder with stem kernel a + b must agree exactly;
  with the real x_0 the output changes, and a missing x_0 is a clear error."""
  from i2v_flax.models.encoder import Encoder
  for spec in ("configs/bair.py", "configs/iper.py"):
    assert config_lib.load_config(spec).stage1.enc_x0_diff is False
  kw = dict(widths=(4, 4, 8, 8, 8), stride_t=(1, 2, 2, 2), stride_s=(1, 1, 1, 2), z_dim=6)
  video = jax.random.normal(KEY, (2, 16, 16, 16, 3))
  x0 = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
  diff_enc, plain_enc = Encoder(**kw, x0_diff=True), Encoder(**kw)
  v_diff = diff_enc.init(KEY, video, None, x0)
  stem = v_diff["params"]["stem"]["kernel"]
  assert stem.shape[-2] == 6 and plain_enc.init(KEY, video)["params"]["stem"]["kernel"].shape[-2] == 3
  folded = jax.tree_util.tree_map(lambda a: a, v_diff)
  folded["params"]["stem"]["kernel"] = stem[..., :3, :] + stem[..., 3:, :]
  mu_zero_x0 = diff_enc.apply(v_diff, video, None, jnp.zeros_like(x0))[1]
  np.testing.assert_allclose(mu_zero_x0, plain_enc.apply(folded, video)[1], rtol=1e-4, atol=1e-5)
  assert float(jnp.max(jnp.abs(diff_enc.apply(v_diff, video, None, x0)[1] - mu_zero_x0))) > 1e-3
  with pytest.raises(ValueError, match="x0"):
    diff_enc.apply(v_diff, video)


def test_spatial_z_is_a_4x4_map_whose_cells_render_their_own_place():
  """z_spatial is off in the paper configs (the Dense start from a z vector); on, the encoder's
  heads give a (4, 4, z_dim / 16) map flattened row-major, and the decoder reads the same layout:
  changing the latent of cell (3, 3) moves the decoder's 4x4 start only in cells (2..3, 2..3)."""
  from i2v_flax.models.decoder import Decoder
  from i2v_flax.models.encoder import Encoder
  for spec in CONFIGS[:3]:
    assert config_lib.load_config(spec).stage1.z_spatial is False
  enc = Encoder(widths=(4, 4, 8, 8, 8), stride_t=(1, 2, 2, 2), stride_s=(1, 1, 1, 2), z_dim=32,
                z_spatial=True)
  video = jax.random.normal(KEY, (2, 16, 16, 16, 3))
  ev = enc.init(KEY, video)
  (_, mu, logvar), inter = enc.apply(ev, video, capture_intermediates=True)
  assert mu.shape == logvar.shape == (2, 32) and ev["params"]["mu"]["kernel"].shape == (3, 3, 8, 2)
  np.testing.assert_array_equal(mu.reshape(2, 4, 4, 2), inter["intermediates"]["mu"]["__call__"][0])
  with pytest.raises(ValueError, match="divisible by 16"):
    Encoder(widths=(4, 4, 8, 8, 8), stride_t=(1, 2, 2, 2), stride_s=(1, 1, 1, 2), z_dim=24,
            z_spatial=True).init(KEY, video)
  from i2v_flax.train import stage1_state
  config = config_lib.load_config("configs/shapes.py:tiny")
  config.stage1.z_spatial, config.stage1.z_dim = True, 24
  with pytest.raises(ValueError, match="z_dim=16"):  # Caught before any model is built.
    stage1_state.check_stage1_config(config)

  kw = dict(nf=2, up_t=(2, 2, 2, 2, 1), up_s=(2, 2, 1, 1, 2), spade_hidden=4)
  x0, z = jnp.zeros((1, 32, 32, 3)), jax.random.normal(KEY, (1, 32))
  assert "fc" in jax.eval_shape(Decoder(**kw).init, KEY, x0, z)["params"]
  dec = Decoder(**kw, z_spatial=True)
  dv = dec.init(KEY, x0, z)
  assert "fc" not in dv["params"] and dv["params"]["z_conv"]["kernel"].shape == (3, 3, 2, 32)
  start = lambda zz: dec.apply(dv, x0, zz, capture_intermediates=True)[1][  # noqa: E731
      "intermediates"]["z_conv"]["__call__"][0][0]
  moved = jnp.abs(start(z.at[0, 30:].add(1.0)) - start(z)).max(-1)  # Cell (3, 3) = last 2 entries.
  assert bool(jnp.all(moved[2:, 2:] > 0)) and float(moved[:2].max() + moved[:, :2].max()) == 0.0


def test_local_style_starts_as_adain_and_reads_only_nearby_latents():
  """dec_local_style (with z_spatial) adds a per-pixel style from the z map, zero-initialised: a
  fresh decoder equals the one without it, and once trained, the latent of cell (0, 0) only moves
  the style near the top-left corner. Without a spatial z it is a clear error."""
  from i2v_flax.models.decoder import Decoder
  kw = dict(nf=2, up_t=(2, 2, 2, 2, 1), up_s=(2, 2, 1, 1, 2), spade_hidden=4, z_spatial=True)
  x0, z = jax.random.normal(KEY, (1, 32, 32, 3)), jax.random.normal(KEY, (1, 32))
  plain, local = Decoder(**kw), Decoder(**kw, local_style=True)
  vp, vl = plain.init(KEY, x0, z), local.init(KEY, x0, z)
  np.testing.assert_array_equal(plain.apply(vp, x0, z), local.apply(vl, x0, z))
  with pytest.raises(ValueError, match="z_spatial"):
    Decoder(**dict(kw, z_spatial=False), local_style=True).init(KEY, x0, z)
  from i2v_flax.train import stage1_state
  config = config_lib.load_config("configs/shapes.py:tiny")
  config.stage1.dec_local_style, config.stage1.z_spatial = True, False
  with pytest.raises(ValueError, match="z_spatial=True"):
    stage1_state.check_stage1_config(config)

  adain = layers.ADAIN(local=True)
  x = jax.random.normal(KEY, (1, 2, 16, 16, 3))
  v = adain.init(KEY, x, z)
  v = jax.tree_util.tree_map(jnp.zeros_like, v)  # Only the local path, with a trained kernel:
  v["params"]["local_style"]["kernel"] = jax.random.normal(KEY, (3, 3, 2, 6))
  moved = jnp.abs(adain.apply(v, x, z.at[0, :2].add(1.0)) - adain.apply(v, x, z)).max((0, 1, 4))
  assert float(moved[:4, :4].min()) > 0 and float(moved[8:].max() + moved[:, 8:].max()) == 0.0


def test_frame_coordinates_are_cell_centres():
  from i2v_flax.models.decoder import frame_coordinates
  c = frame_coordinates(jnp.zeros((2, 2, 4, 8, 5)))
  assert c.shape == (2, 2, 4, 8, 3)
  np.testing.assert_allclose(c[0, :, 0, 0, 0], [-0.5, 0.5])  # t of the 2 frames.
  np.testing.assert_allclose(c[0, 0, :, 0, 1], [-0.75, -0.25, 0.25, 0.75])  # y.
  np.testing.assert_allclose(c[1, 1, 3, :, 2], (np.arange(8) + 0.5) / 4 - 1)  # x.


def test_warp_bilinear_shifts_and_has_the_right_flow_gradient():
  from i2v_flax.models.decoder import warp_bilinear
  img = jax.random.uniform(KEY, (2, 9, 10, 3))
  flow = jnp.zeros((2, 3, 9, 10, 2)).at[:, 1, ..., 0].set(2.0).at[:, 2, ..., 1].set(-1.0)
  out = warp_bilinear(img, flow)
  np.testing.assert_allclose(out[:, 0], img, atol=1e-6)  # Zero flow: identity.
  np.testing.assert_allclose(out[:, 1, :, :-2], img[:, :, 2:], atol=1e-6)  # Reads 2 px right.
  np.testing.assert_allclose(out[:, 2, 1:], img[:, :-1], atol=1e-6)  # Reads 1 px up.
  np.testing.assert_allclose(out[:, 1, :, -2:], img[:, :, -1:].repeat(2, 2), atol=1e-6)  # Border.
  # Fractional flow interpolates; its gradient matches a central finite difference.
  f = lambda d: jnp.sum(warp_bilinear(img, jnp.full((2, 1, 9, 10, 2), d)) ** 2)  # noqa: E731
  eps, d = 1e-3, 0.3
  np.testing.assert_allclose(jax.grad(f)(d), (f(d + eps) - f(d - eps)) / (2 * eps), rtol=2e-2)


@pytest.mark.parametrize("output", ["blend", "warp"])
def test_fresh_mixing_head_blends_x0_and_the_generated_frame_equally(output):
  """Zero-initialised blend/warp head: flow 0 and mask 0.5, so output = (x_0 + rgb) / 2; a mask
  driven to 1 returns x_0 itself in every frame, driven to 0 the generated frames."""
  from i2v_flax.models.decoder import Decoder
  x0 = jax.random.uniform(KEY, (1, 32, 32, 3), minval=-1, maxval=1)
  z = jax.random.normal(KEY, (1, 8))
  kw = dict(nf=2, up_t=(2, 2, 2, 2, 1), up_s=(2, 2, 1, 1, 2), spade_hidden=4, coords=True)
  mixed = Decoder(**kw, output=output)
  variables = mixed.init(KEY, x0, z)
  head = f"{output}_head"
  assert variables["params"][head]["kernel"].shape[-1] == {"blend": 1, "warp": 3}[output]
  rgb = Decoder(**kw).apply({k: {n: p for n, p in v.items() if n != head}
                             for k, v in variables.items()}, x0, z)
  np.testing.assert_allclose(mixed.apply(variables, x0, z), 0.5 * (x0[:, None] + rgb), atol=1e-5)
  for logit, want in ((30.0, jnp.broadcast_to(x0[:, None], rgb.shape)), (-30.0, rgb)):
    bias = variables["params"][head]["bias"].at[-1].set(logit)
    moved = jax.tree_util.tree_map(lambda a: a, variables)
    moved["params"][head]["bias"] = bias
    np.testing.assert_allclose(mixed.apply(moved, x0, z), want, atol=1e-5)


def test_remat_decoder_has_the_same_parameters_outputs_and_gradients():
  """stage1.remat only trades memory for recomputation: same variables, same values."""
  from i2v_flax.models.decoder import Decoder
  kw = dict(nf=2, up_t=(2, 2, 1, 1, 1), up_s=(2, 1, 1, 1, 2), spade_hidden=4, coords=True)
  x0 = jax.random.normal(KEY, (2, 16, 16, 3))
  z = jax.random.normal(jax.random.PRNGKey(1), (2, 8))
  plain, remat = Decoder(**kw), Decoder(**kw, remat=True)
  variables = jax.jit(plain.init)(KEY, x0, z)
  assert (jax.tree.structure(jax.eval_shape(remat.init, KEY, x0, z))
          == jax.tree.structure(variables))

  def loss(model, params, update_stats):
    out, state = model.apply({**variables, "params": params}, x0, z, update_stats,
                             mutable=["spectral"] if update_stats else [])
    return jnp.mean(jnp.sin(3 * out)), state

  grad = lambda model: jax.jit(jax.value_and_grad(  # noqa: E731
      lambda p: loss(model, p, True), has_aux=True))(variables["params"])
  (l_p, s_p), g_p = grad(plain)
  (l_r, s_r), g_r = grad(remat)
  np.testing.assert_allclose(l_r, l_p, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g_r, g_p)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), s_r, s_p)
  assert config_lib.load_config("configs/bair.py").stage1.remat is False


def test_every_option_that_changes_stage1_parameter_shapes_is_checked_on_resume():
  """Resuming checks stage1.ARCH_FIELDS against the workdir's config; an option that changes
  parameter shapes but is missing there resumes into an opaque orbax shape error instead."""
  from i2v_flax.train import stage1, stage1_state

  def param_shapes(c):
    video = jax.ShapeDtypeStruct((2, c.data.clip_length, c.data.resolution, c.data.resolution, 3),
                                 jnp.float32)
    init = stage1_state.make_init_fn(c, build_models(c))
    state = jax.eval_shape(init, video, jax.random.key(0))
    models = {k: state[k] for k in ("encoder", "decoder", "d_t", "d_s")}
    return jax.tree.map(lambda a: a.shape, models)

  base = config_lib.load_config("configs/shapes.py:tiny")
  reference = param_shapes(base)
  changing = []
  for key, value in base.stage1.items():
    if isinstance(value, bool):
      c = config_lib.load_config("configs/shapes.py:tiny")
      c.stage1[key] = not value
      try:
        stage1_state.check_stage1_config(c)
        shapes = param_shapes(c)
      except ValueError:
        continue  # Not a valid combination on its own.
      if shapes != reference:
        changing.append(f"stage1.{key}")
  assert "stage1.enc_x0_diff" in changing and "stage1.dec_coords" in changing  # The probe works.
  assert set(changing) <= set(stage1.ARCH_FIELDS), set(changing) - set(stage1.ARCH_FIELDS)
