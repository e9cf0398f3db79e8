"""Stage-2 parity with the reference (fixtures in tests/fixtures/reference, format in
shared/reference/README.md): the converted cINN and ResNet-50 embedder reproduce every stored
output, BAIR eta bins at their edges, control 'cond' blocks have the reference's shapes, the
converters fail clearly, and a frozen ResNet-50 embedder is left alone by a stage-2 step."""

import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from i2v_flax import config_lib, parallel
from i2v_flax.convert import fixtures
from i2v_flax.convert import stage2 as conv
from i2v_flax.data import control
from i2v_flax.models import cinn
from i2v_flax.train import stage2

FIXTURE_DIR = os.path.join(os.path.dirname(__file__), "fixtures", "reference")
STAGE2_FIXTURES = [n for n in fixtures.list_fixtures(FIXTURE_DIR) if n.startswith("stage2_")]


@pytest.fixture(scope="module")
def loaded():
  cache = {}
  return lambda name: cache.setdefault(name, fixtures.load_fixture(FIXTURE_DIR, name))


@pytest.mark.parametrize("name", STAGE2_FIXTURES)
def test_fixture_outputs_reproduced_within_tolerance(name, loaded):
  fx = loaded(name)
  ours = conv.PARITY_RUNNERS[fx.meta["reference"]["class"]](fx)
  names = [o["name"] for o in fx.meta["outputs"]]
  assert set(names) <= set(ours), set(names) - set(ours)
  errors = {}
  for k in names:
    assert ours[k].shape == fx.output(k).shape, (k, ours[k].shape, fx.output(k).shape)
    errors[k] = float(np.max(np.abs(ours[k].astype(np.float64) - fx.output(k))))
  print(name, errors)
  assert all(errors[k] <= fx.tolerance(k) for k in names), {
      k: (e, fx.tolerance(k)) for k, e in errors.items() if e > fx.tolerance(k)}


@pytest.mark.parametrize("name", ["stage2_cinn", "stage2_cinn_control"])
def test_exact_logdet_is_reference_plus_leaky_relu_term(name, loaded):
  fx = loaded(name)
  control_on = bool(fx.config["control"])
  arch = conv.cinn_arch(fx.state_dict, control=control_on)
  variables = conv.cinn_variables(fx.state_dict, control=control_on)
  exact = arch.build().clone(exact_leaky_logdet=True)
  cond = fx.output("intermediate/cond")
  nu, logdet = exact.apply(variables, fx.inputs["z"], cond, method=exact.forward)
  count = fx.output("intermediate/lrelu_negative_count").sum(0)
  assert count.min() > 0
  np.testing.assert_allclose(nu, fx.output("output/nu"), atol=1e-5)
  np.testing.assert_allclose(logdet, fx.output("output/logdet") + count * math.log(0.9),
                             atol=1e-5)


def test_bair_eta_bins_at_the_reference_edges(loaded):
  u = np.array([[0.3, 0.1, 0.7], [1.0, -1e-6, 0.0], [0.99999, 0.2, 0.5], [-0.5, 1.5, 0.15]])
  bins = control.bair_eta_from_unit(u).reshape(-1, 3, 10).argmax(-1)
  np.testing.assert_array_equal(bins, [[2, 0, 6], [9, 0, 0], [9, 1, 4], [0, 9, 1]])
  xyz = u * control.BAIR_RANGE + control.BAIR_OFFSET  # Same bins through positions, numpy & tf.
  np.testing.assert_array_equal(control.bair_eta(xyz[:3]), control.bair_eta_from_unit(u[:3]))
  np.testing.assert_array_equal(control.bair_eta_tf(tf.constant(xyz)).numpy(),
                                control.bair_eta(xyz))
  fx = loaded("stage2_cinn_control")
  np.testing.assert_array_equal(control.bair_eta_from_unit(fx.inputs["eta_pos"]),
                                fx.output("output/eta_onehot"))


def _param_shapes(tree):
  return jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)


def test_control_cond_blocks_have_the_reference_shapes(loaded):
  fx = loaded("stage2_cinn_control")
  arch = conv.cinn_arch(fx.state_dict)  # Control is detected from the narrower cond blocks.
  assert (arch.eta_dim, arch.cond_dim, arch.control_every) == (30, 6, 4)
  flow = arch.build()
  assert flow.block_modes == fx.meta["block_modes"]
  fresh = jax.eval_shape(lambda: flow.init(jax.random.PRNGKey(0), jnp.zeros((2, 8)),
                                           jnp.zeros((2, 36)), method=flow.forward))
  converted = conv.cinn_variables(fx.state_dict)
  assert _param_shapes(fresh["params"]) == _param_shapes(converted["params"])
  # The bair control config: 'cond' blocks' s/t nets take [c, eta] = 64 + 30 inputs only.
  c = config_lib.load_config("configs/bair.py:control")
  bair = cinn.build_conditional_flow(c.stage2)
  v = jax.eval_shape(lambda: bair.init(jax.random.PRNGKey(0), jnp.zeros((2, 64)),
                                       jnp.zeros((2, 94)), method=bair.forward))
  first = lambda i, net: v["params"][f"block_{i}"]["coupling"][net]["Dense_0"]["kernel"].shape
  for i in range(c.stage2.num_blocks):
    for net in ("s1", "t1", "s2", "t2"):
      assert first(i, net) == ((94, 512) if i % 4 else (32 + 94, 512)), (i, net)


def test_converted_negative_scale_roundtrips(loaded):
  fx = loaded("stage2_cinn")
  sd = dict(fx.state_dict)
  sd["sub_layers.2.norm_layer.scale"] = -sd["sub_layers.2.norm_layer.scale"]
  flow, v = conv.cinn_arch(sd).build(), conv.cinn_variables(sd)
  assert float(v["params"]["block_2"]["actnorm"]["scale"].max()) < 0
  z, c = fx.inputs["z"], fx.inputs["c"]
  nu, _ = flow.apply(v, z, c, method=flow.forward)
  np.testing.assert_allclose(flow.apply(v, nu, c, method=flow.inverse), z, atol=1e-5)


def test_converter_errors_name_the_key_and_shapes(loaded):
  sd = dict(loaded("stage2_cinn").state_dict)
  bad = {**sd, "sub_layers.1.coupling.t.1.main.2.weight": np.zeros((16, 15), np.float32)}
  with pytest.raises(ValueError, match=r"sub_layers\.1\.coupling\.t\.1\.main\.2\.weight has shape "
                                       r"\(16, 15\), expected \(16, 16\)"):
    conv.cinn_variables(bad)
  missing = {k: v for k, v in sd.items() if k != "sub_layers.3.shuffle.forward_shuffle_idx"}
  with pytest.raises(ValueError, match=r"missing keys \['sub_layers\.3\.shuffle\.forward"):
    conv.cinn_variables(missing)
  with pytest.raises(ValueError, match="unknown keys.*sub_layers.0.extra"):
    conv.cinn_variables({**sd, "sub_layers.0.extra": np.zeros(1)})
  with pytest.raises(ValueError, match="conditioning_option"):
    conv.cinn_variables({**sd, "conditioning_layers.0.weight": np.zeros((6, 6, 1, 1))})
  with pytest.raises(ValueError, match="never data-initialised"):
    conv.cinn_variables({**sd, "sub_layers.0.norm_layer.initialized": np.uint8(0)})
  emb = loaded("stage2_embedder_bn").state_dict
  with pytest.raises(ValueError, match="embedder_norm='bn'"):
    conv.embedder_variables(emb, "in")
  with pytest.raises(ValueError, match=r"model\.layer2\.0\.bn1\.weight"):
    conv.embedder_variables({k: v for k, v in emb.items() if k != "model.layer2.0.bn1.weight"})


class _StubEncoder(nn.Module):
  """Stands in for stage 1: (B, 16, H, W, 3), rng -> (z, mu, logvar)."""

  @nn.compact
  def __call__(self, video, rng, x0=None):
    mu = nn.Dense(64)(jnp.mean(video, axis=(1, 2, 3)))
    z = mu if rng is None else mu + 0.1 * jax.random.normal(rng, mu.shape)
    return z, mu, jnp.zeros_like(mu)


def test_frozen_resnet50_embedder_loaded_from_state_dict_gets_no_update(loaded, tmp_path):
  fx = loaded("stage2_embedder_bn")
  path = str(tmp_path / "Encoder_stage2.npz")
  np.savez(path, **fx.state_dict)
  config = config_lib.load_config("configs/shapes.py:tiny")
  s2 = config.stage2
  s2.embedder, s2.embedder_norm, s2.embedder_init = "resnet50", "bn", path
  s2.cond_dim = conv.embedder_cond_dim(fx.state_dict)
  flow, embedder = stage2.build_flow(config)
  rng = np.random.default_rng(0)
  batch = {"video": jnp.asarray(rng.uniform(-1, 1, (2, 17, 64, 64, 3)), jnp.float32),
           "eta": jnp.asarray(rng.uniform(0, 1, (2, 4)), jnp.float32)}
  enc = _StubEncoder()
  enc_vars = enc.init(jax.random.PRNGKey(0), batch["video"][:, 1:], None)
  steps = stage2.make_steps(config, flow, embedder, enc, None, parallel.make_mesh())
  z = steps["encode"](enc_vars, batch["video"], jax.random.PRNGKey(1))
  state = stage2.make_init_fn(config, flow, embedder)(z, batch["video"][:, 0], batch["eta"],
                                                      jax.random.PRNGKey(2))
  state["embedder"] = stage2.load_embedder_init(config, state["embedder"])
  expected = conv.embedder_variables(fx.state_dict, "bn")
  assert _param_shapes(state["embedder"]) == _param_shapes(expected)
  np.testing.assert_array_equal(state["embedder"]["batch_stats"]["bn1"]["var"],
                                expected["batch_stats"]["bn1"]["var"])
  emb0, flow0 = jax.device_get((state["embedder"], state["flow"]["params"]))
  state, metrics = steps["train"](state, batch, enc_vars)
  assert np.isfinite(float(metrics["loss"]))
  assert set(state["opt"][0].mu) == {"flow"}  # Not in the optimiser.
  for a, b in zip(jax.tree_util.tree_leaves(emb0), jax.tree_util.tree_leaves(state["embedder"])):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree_util.tree_leaves(flow0), jax.tree_util.tree_leaves(state["flow"]["params"])))
