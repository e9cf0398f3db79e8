"""The stage-2 step in isolation (a stub encoder stands in for stage 1): frozen vs joint embedder,
the NLL bookkeeping and its constants."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from i2v_flax import config_lib, parallel
from i2v_flax.train import stage2


class _StubEncoder(nn.Module):
  """(B, 16, H, W, 3), rng -> (z, mu, logvar) like stage1.encode, but a single Dense."""
  z_dim: int = 64

  @nn.compact
  def __call__(self, video, rng, x0=None):
    mu = nn.Dense(self.z_dim)(jnp.mean(video, axis=(1, 2, 3)))
    logvar = jnp.full_like(mu, -2.0)
    z = mu if rng is None else mu + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mu.shape)
    return z, mu, logvar


def _setup(freeze):
  config = config_lib.load_config("configs/shapes.py:tiny")
  config.stage2.embedder_widths = (4, 4)
  config.stage2.freeze_embedder = freeze
  config.stage2.lr = 1e-2
  flow, embedder = stage2.build_flow(config)
  enc = _StubEncoder()
  rng = np.random.default_rng(0)
  batch = {"video": jnp.asarray(rng.uniform(-1, 1, (4, 17, 32, 32, 3)), jnp.float32),
           "eta": jnp.asarray(rng.uniform(0, 1, (4, 4)), jnp.float32)}
  enc_vars = enc.init(jax.random.PRNGKey(0), batch["video"][:, 1:], None)
  steps = stage2.make_steps(config, flow, embedder, enc, None, parallel.make_mesh())
  z = steps["encode"](enc_vars, batch["video"], jax.random.PRNGKey(1))
  state = jax.jit(stage2.make_init_fn(config, flow, embedder))(
      z, batch["video"][:, 0], batch["eta"], jax.random.PRNGKey(2))
  return steps, state, batch, enc_vars


def test_frozen_embedder_is_not_trained_joint_one_is():
  for freeze in (True, False):
    steps, state, batch, enc_vars = _setup(freeze)
    # Host copies: the step donates (deletes) its input state.
    emb0, flow0 = jax.device_get((state["embedder"], state["flow"]))
    losses = []
    for _ in range(5):
      state, metrics = steps["train"](state, batch, enc_vars)
      losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0]
    same = [np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(emb0),
                                                jax.tree_util.tree_leaves(state["embedder"]))]
    assert all(same) if freeze else not any(same)
    assert set(state["opt"][0].mu) == ({"flow"} if freeze else {"flow", "embedder"})
    assert not np.array_equal(flow0["params"]["block_0"]["actnorm"]["loc"],
                              state["flow"]["params"]["block_0"]["actnorm"]["loc"])
    assert int(state["step"]) == 5


def test_nll_metrics_constants():
  nu = jnp.array([[1.0, -2.0], [0.0, 0.5]])
  z = jnp.array([[3.0, 0.0], [1.0, 1.0]])
  logdet = jnp.array([0.5, -1.5])
  m = stage2.nll_metrics(nu, logdet, z)
  loss = np.mean([0.5 * 5.0, 0.5 * 0.25]) - np.mean([0.5, -1.5])
  np.testing.assert_allclose(m["loss"], loss, rtol=1e-6)
  np.testing.assert_allclose(m["nll"], loss + math.log(2 * math.pi), rtol=1e-6)
  np.testing.assert_allclose(m["bits_per_dim"], m["nll"] / (2 * math.log(2)), rtol=1e-6)
  np.testing.assert_allclose(m["nll_ref"], np.mean([4.5, 1.0]) + math.log(2 * math.pi), rtol=1e-6)
  # For the identity flow (nu = z, logdet = 0) the NLL is exactly the N(0, I) reference.
  m = stage2.nll_metrics(z, jnp.zeros(2), z)
  np.testing.assert_allclose(m["nll"], m["nll_ref"], rtol=1e-6)


def test_optional_eta_adds_a_given_indicator_and_widens_the_flow_condition():
  """stage2.eta_dropout > 0 (the demo's optional control): the flow sees [eta * given, given],
  so eta can be withheld at sampling; 0 (reference) leaves eta and the flow unchanged."""
  import jax.numpy as jnp
  from i2v_flax import config_lib
  from i2v_flax.models.cinn import build_conditional_flow
  from i2v_flax.train.stage2_steps import optional_eta
  config = config_lib.load_config("configs/shapes.py:tiny")
  eta = jnp.asarray([[0.2, 0.8, 0.0, 0.0], [0.5, 0.5, 1.0, 0.0]])
  out = optional_eta(config, eta, jnp.asarray([1.0, 0.0]))
  np.testing.assert_allclose(out, [[0.2, 0.8, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
  np.testing.assert_allclose(optional_eta(config, eta)[:, -1], [1.0, 1.0])
  assert build_conditional_flow(config.stage2).eta_dim == 5
  config.stage2.eta_dropout = 0.0
  assert optional_eta(config, eta) is eta
  assert build_conditional_flow(config.stage2).eta_dim == 4
  assert config_lib.load_config("configs/bair.py:control").stage2.eta_dropout == 0.0
