"""Behaviour of the stage-2 flow: exact inverse, exact log-determinant, identity init, ActNorm
data init, fixed permutations, control routing, and maximum likelihood on a conditional Gaussian.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from i2v_flax import config_lib
from i2v_flax.models import cinn, embedder

jax.config.update("jax_default_matmul_precision", "highest")


def _flow(**kw):
  defaults = dict(num_blocks=3, hidden=32, num_hidden_layers=1, clamp=2.0, cond_dim=5, eta_dim=0,
                  control_every=2, seed=0)
  defaults.update(kw)
  return cinn.ConditionalFlow(**defaults)


def _perturb(variables, key, scale=0.1):
  """Nonzero random parameters everywhere, so couplings and ActNorm are far from the identity."""
  leaves, treedef = jax.tree_util.tree_flatten(variables["params"])
  keys = jax.random.split(key, len(leaves))
  leaves = [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  return {**variables, "params": jax.tree_util.tree_unflatten(treedef, leaves)}


def _data(key, n, d, cd):
  kz, kc = jax.random.split(key)
  return 2.0 * jax.random.normal(kz, (n, d)) + 0.5, jax.random.normal(kc, (n, cd))


@pytest.mark.parametrize("eta_dim", [0, 3])
def test_inverse_of_forward_at_init_perturbed_and_after_training(eta_dim):
  flow = _flow(eta_dim=eta_dim)
  z, cond = _data(jax.random.PRNGKey(0), 64, 8, 5 + eta_dim)
  variables = flow.init(jax.random.PRNGKey(1), z, cond, method=flow.forward)

  def roundtrip_error(v):
    nu, _ = flow.apply(v, z, cond, method=flow.forward)
    assert not np.allclose(nu, z, atol=1e-2)  # The flow does something.
    return float(jnp.max(jnp.abs(flow.apply(v, nu, cond, method=flow.inverse) - z)))

  assert roundtrip_error(variables) < 1e-4
  assert roundtrip_error(_perturb(variables, jax.random.PRNGKey(2))) < 1e-4

  def loss(params):
    nu, logdet = flow.apply({**variables, "params": params}, z, cond, method=flow.forward)
    return jnp.mean(0.5 * jnp.sum(nu**2, -1)) - jnp.mean(logdet)

  opt = optax.adam(1e-2)

  @jax.jit
  def step(params, state):
    updates, state = opt.update(jax.grad(loss)(params), state)
    return optax.apply_updates(params, updates), state

  params, state = variables["params"], opt.init(variables["params"])
  loss0 = loss(params)
  for _ in range(10):
    params, state = step(params, state)
  assert loss(params) < loss0
  assert roundtrip_error({**variables, "params": params}) < 1e-4


@pytest.mark.parametrize("clamp", [2.0, None])
def test_logdet_equals_slogdet_of_jacobian(clamp):
  flow = _flow(clamp=clamp, eta_dim=2)
  z, cond = _data(jax.random.PRNGKey(3), 16, 8, 7)
  variables = _perturb(flow.init(jax.random.PRNGKey(4), z, cond, method=flow.forward),
                       jax.random.PRNGKey(5))
  nu, logdet = flow.apply(variables, z, cond, method=flow.forward)
  # Negative pre-activations exist, so the LeakyReLU term is exercised.
  assert float(jnp.mean(nu < 0)) > 0.1

  def f(zi, ci):
    return flow.apply(variables, zi[None], ci[None], method=flow.forward)[0][0]

  jac = jax.vmap(jax.jacfwd(f))(z, cond)
  _, expected = jnp.linalg.slogdet(jac)
  np.testing.assert_allclose(logdet, expected, atol=1e-4, rtol=1e-5)


def test_leaky_relu_logdet_term():
  x = jnp.array([[-1.0, 2.0, -3.0, 0.5]])
  y, ld = cinn.leaky_relu_bijector(x, 0.9)
  np.testing.assert_allclose(y, [[-0.9, 2.0, -2.7, 0.5]], rtol=1e-6)
  np.testing.assert_allclose(ld, [2 * math.log(0.9)], rtol=1e-6)
  xr, ldr = cinn.leaky_relu_bijector(y, 0.9, inverse=True)
  np.testing.assert_allclose(xr, x, rtol=1e-6)
  np.testing.assert_allclose(ldr, -ld, rtol=1e-6)


def test_zero_initialised_flow_is_a_fixed_permutation_up_to_leaky_relu():
  """Without ActNorm data init the couplings only swap their halves (reference order [b', a']):
  the whole flow is then the fixed LeakyReLUs, swaps and permutations, and with slope 1 a pure
  permutation with logdet 0."""
  z, cond = _data(jax.random.PRNGKey(6), 32, 8, 5)
  for slope in (0.9, 1.0):
    flow = _flow(actnorm_data_init=False, leaky_slope=slope)
    variables = flow.init(jax.random.PRNGKey(7), z, cond, method=flow.forward)
    nu, logdet = flow.apply(variables, z, cond, method=flow.forward)
    expected, expected_ld = np.asarray(z), np.zeros(len(z))
    for i in range(flow.num_blocks):
      expected_ld += np.sum(expected < 0, -1) * math.log(slope)
      expected = np.where(expected < 0, slope * expected, expected)
      expected = np.concatenate([expected[:, 4:], expected[:, :4]], -1)
      expected = expected[:, cinn.block_permutation(0, i, 8)]
    np.testing.assert_allclose(nu, expected, atol=1e-6)
    np.testing.assert_allclose(logdet, expected_ld, atol=1e-5)
  np.testing.assert_allclose(logdet, 0.0)  # slope 1: nothing but permutations.
  coupling = cinn.DoubleAffineCoupling(hidden=16, num_hidden_layers=2)
  cv = coupling.init(jax.random.PRNGKey(8), z, cond)
  y, ld = coupling.apply(cv, z, cond)
  np.testing.assert_array_equal(y, jnp.concatenate([z[:, 4:], z[:, :4]], -1))
  np.testing.assert_array_equal(ld, 0.0)


def test_actnorm_data_init_whitens_init_batch():
  x = 3.0 * jax.random.normal(jax.random.PRNGKey(9), (256, 6)) + jnp.arange(6.0)
  an = cinn.ActNorm()
  v = an.init(jax.random.PRNGKey(0), x)
  y, ld = an.apply(v, x)
  np.testing.assert_allclose(jnp.mean(y, 0), 0.0, atol=1e-5)
  # The reference's statistics: unbiased std, scale = 1 / (std + 1e-6).
  np.testing.assert_allclose(jnp.var(y, 0, ddof=1), 1.0, atol=1e-4)
  np.testing.assert_allclose(v["params"]["scale"], 1.0 / (np.std(x, 0, ddof=1) + 1e-6), rtol=1e-5)
  np.testing.assert_allclose(ld, -jnp.sum(jnp.log(jnp.std(x, 0, ddof=1))), rtol=1e-4)
  # In the flow, block 0's ActNorm is initialised from the flow's own init batch.
  flow = _flow()
  z, cond = _data(jax.random.PRNGKey(10), 128, 8, 5)
  fv = flow.init(jax.random.PRNGKey(0), z, cond, method=flow.forward)
  np.testing.assert_allclose(fv["params"]["block_0"]["actnorm"]["loc"], -jnp.mean(z, 0), atol=1e-5)


def test_negative_actnorm_scale_is_exact_and_invertible():
  """The reference stores a signed scale; a converted checkpoint may hold negative entries."""
  flow = _flow(clamp=None, eta_dim=2)
  z, cond = _data(jax.random.PRNGKey(30), 16, 8, 7)
  v = _perturb(flow.init(jax.random.PRNGKey(31), z, cond, method=flow.forward),
               jax.random.PRNGKey(32))
  scale = v["params"]["block_1"]["actnorm"]["scale"]
  v["params"]["block_1"]["actnorm"]["scale"] = scale * jnp.array([-1, 1, -1, 1, 1, -1, 1, 1.0])
  nu, logdet = flow.apply(v, z, cond, method=flow.forward)
  np.testing.assert_allclose(flow.apply(v, nu, cond, method=flow.inverse), z, atol=1e-4)
  jac = jax.vmap(jax.jacfwd(
      lambda zi, ci: flow.apply(v, zi[None], ci[None], method=flow.forward)[0][0]))(z, cond)
  np.testing.assert_allclose(logdet, jnp.linalg.slogdet(jac)[1], atol=1e-4, rtol=1e-5)


def test_reference_logdet_switch_drops_exactly_the_leaky_relu_term():
  z, cond = _data(jax.random.PRNGKey(33), 16, 8, 5)
  exact = _flow(clamp=None)
  v = _perturb(exact.init(jax.random.PRNGKey(34), z, cond, method=exact.forward),
               jax.random.PRNGKey(35))
  ref = _flow(clamp=None, exact_leaky_logdet=False)
  nu_e, ld_e = exact.apply(v, z, cond, method=exact.forward)
  nu_r, ld_r = ref.apply(v, z, cond, method=ref.forward)
  np.testing.assert_array_equal(nu_e, nu_r)
  count, x = np.zeros(len(z)), z
  for i in range(exact.num_blocks):  # Negatives at each block's LeakyReLU input.
    an = v["params"][f"block_{i}"]["actnorm"]
    count += np.sum(np.asarray(an["scale"] * (x + an["loc"])) < 0, -1)
    x = cinn.flow_block(exact, i).apply(cinn.block_variables(v, i), x, cond)[0]
  assert count.min() > 0
  np.testing.assert_allclose(ld_e, ld_r + count * math.log(0.9), atol=1e-5)


def test_data_init_actnorms_reinitialises_block_by_block():
  flow = _flow(actnorm_data_init=False)
  z, cond = _data(jax.random.PRNGKey(36), 64, 8, 5)
  v = _perturb(flow.init(jax.random.PRNGKey(37), z, cond, method=flow.forward),
               jax.random.PRNGKey(38))
  v2 = cinn.data_init_actnorms(flow, v, z, cond)
  x = z
  for i in range(flow.num_blocks):
    an = v2["params"][f"block_{i}"]["actnorm"]
    y = np.asarray(an["scale"] * (x + an["loc"]))
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(0, ddof=1), 1.0, atol=1e-4)
    x = cinn.flow_block(flow, i).apply(cinn.block_variables(v2, i), x, cond)[0]
  for i in range(flow.num_blocks):  # Only ActNorm changed.
    np.testing.assert_array_equal(v2["params"][f"block_{i}"]["coupling"]["s1"]["Dense_0"]["kernel"],
                                  v["params"][f"block_{i}"]["coupling"]["s1"]["Dense_0"]["kernel"])


def test_permutations_are_fixed_saved_and_seeded():
  z, cond = _data(jax.random.PRNGKey(11), 8, 8, 5)
  perms = lambda seed: flow_vars(seed)[cinn.CONSTS]
  flow_vars = lambda seed: _flow(seed=seed).init(jax.random.PRNGKey(seed + 100), z, cond,
                                                 method="forward")
  p0, p0b, p1 = perms(0), perms(0), perms(1)
  # A separate, non-trained collection: integer arrays, and nothing named perm in 'params'.
  assert cinn.CONSTS != "params" and len(jax.tree_util.tree_leaves(p0)) == 3  # One per block.
  assert all(np.issubdtype(np.asarray(p).dtype, np.integer) for p in jax.tree_util.tree_leaves(p0))
  param_paths = [jax.tree_util.keystr(k) for k, _ in
                 jax.tree_util.tree_flatten_with_path(flow_vars(0)["params"])[0]]
  assert param_paths and not any("perm" in p for p in param_paths)
  for a, b in zip(jax.tree_util.tree_leaves(p0), jax.tree_util.tree_leaves(p0b)):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in
             zip(jax.tree_util.tree_leaves(p0), jax.tree_util.tree_leaves(p1)))
  # The stored permutation is what the flow applies: editing it changes the output.
  flow, v = _flow(), flow_vars(0)
  nu = flow.apply(v, z, cond, method=flow.forward)[0]
  edited = jax.tree_util.tree_map(lambda p: p[::-1], v[cinn.CONSTS])
  nu2 = flow.apply({**v, cinn.CONSTS: edited}, z, cond, method=flow.forward)[0]
  assert not np.allclose(nu, nu2)


def test_changing_eta_changes_sampled_z_and_cond_blocks_see_only_the_condition():
  flow = _flow(num_blocks=4, eta_dim=3, control_every=4)
  z, cond = _data(jax.random.PRNGKey(12), 16, 8, 8)
  v = _perturb(flow.init(jax.random.PRNGKey(13), z, cond, method=flow.forward),
               jax.random.PRNGKey(14))
  nu = jax.random.normal(jax.random.PRNGKey(15), (16, 8))
  cond2 = cond.at[:, 5:].set(-cond[:, 5:] + 1.0)
  za = flow.apply(v, nu, cond, method=flow.inverse)
  zb = flow.apply(v, nu, cond2, method=flow.inverse)
  assert float(jnp.mean(jnp.abs(za - zb))) > 1e-2
  in_dims = lambda i: v["params"][f"block_{i}"]["coupling"]["s1"]["Dense_0"]["kernel"].shape[0]
  # Reference control: 'cond' blocks (index % 4 != 0) see only [c, eta], never a half of x.
  assert [in_dims(i) for i in range(4)] == [4 + 8, 8, 8, 8]
  assert flow.block_modes == ["normal", "cond", "cond", "cond"]
  # Every block sees eta: changing eta alone changes a cond block's output.
  blk, bv = cinn.flow_block(flow, 2), cinn.block_variables(v, 2)
  assert not np.allclose(blk.apply(bv, z, cond)[0], blk.apply(bv, z, cond2)[0])
  with pytest.raises(ValueError, match="cond_dim \\+ eta_dim"):
    flow.apply(v, nu, cond[:, :5], method=flow.inverse)


def test_bair_flow_parameter_count_matches_reference():
  c = config_lib.load_config("configs/bair.py")
  flow = cinn.build_conditional_flow(c.stage2)
  v = jax.eval_shape(lambda: flow.init(jax.random.PRNGKey(0), jnp.zeros((2, 64)),
                                       jnp.zeros((2, 64)), method=flow.forward))
  assert sum(x.size for x in jax.tree_util.tree_leaves(v["params"])) == 47_313_920


def test_embedder_shapes_and_gradient():
  e = embedder.ImageEmbedder(widths=(4, 8), cond_dim=6)
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 3), minval=-1, maxval=1)
  v = jax.jit(e.init)(jax.random.PRNGKey(1), x)
  c = jax.jit(e.apply)(v, x)
  assert c.shape == (2, 6)
  assert not np.allclose(c[0], c[1])  # Different images, different conditions.
  g = jax.jit(jax.grad(lambda p: jnp.sum(e.apply({"params": p}, x) ** 2)))(v["params"])
  assert all(np.isfinite(l).all() for l in jax.tree_util.tree_leaves(g))
  assert float(jnp.abs(g["Conv_0"]["kernel"]).sum()) > 0


@pytest.mark.parametrize("pool", ["mean", "flatten"])
def test_embedder_pool_reads_the_final_map_as_named(pool):
  """'mean' (default) projects the average of the final map; 'flatten' (demo) the whole map, so
  c can say where things are in x_0."""
  e = embedder.ImageEmbedder(widths=(4, 8), cond_dim=6, pool=pool)
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 3), minval=-1, maxval=1)
  v = e.init(jax.random.PRNGKey(1), x)
  c, state = e.apply(v, x, capture_intermediates=True)
  final = state["intermediates"]["ResBlock2D_1"]["__call__"][0]  # (2, 4, 4, 8)
  feats = jnp.mean(final, axis=(1, 2)) if pool == "mean" else final.reshape(2, -1)
  dense = v["params"]["Dense_0"]
  assert dense["kernel"].shape == ((8, 6) if pool == "mean" else (4 * 4 * 8, 6))
  np.testing.assert_allclose(c, feats @ dense["kernel"] + dense["bias"], rtol=1e-5, atol=1e-6)


def test_embedder_pool_is_checked():
  e = embedder.ImageEmbedder(widths=(4,), cond_dim=6, pool="max")
  with pytest.raises(ValueError, match="embedder_pool=mean"):
    e.init(jax.random.PRNGKey(1), jnp.zeros((1, 8, 8, 3)))
  c = config_lib.load_config("configs/shapes.py:tiny")
  assert config_lib.base_config().stage2.embedder_pool == "mean"  # The reference-like default.
  assert embedder.build_embedder(c.stage2).pool == c.stage2.embedder_pool


def _toy_gaussian(key, n):
  """z = A(c) nu + b(c) with lower-triangular A whose diagonal and off-diagonals depend on c."""
  kc, kn = jax.random.split(key)
  c = jax.random.normal(kc, (n, 2))
  nu = jax.random.normal(kn, (n, 4))
  diag = jnp.exp(0.5 * jnp.stack([c[:, 0], -c[:, 1], 0.3 * c[:, 0] + 0.2, -0.5 + 0 * c[:, 0]], 1))
  a = jax.vmap(jnp.diag)(diag)
  a = a.at[:, 1, 0].set(0.8 * c[:, 1]).at[:, 2, 0].set(0.5).at[:, 3, 1].set(-0.6 + 0.4 * c[:, 0])
  b = jnp.stack([jnp.sin(c[:, 0]), c[:, 1], c[:, 0] * c[:, 1], 1.0 + 0 * c[:, 0]], 1)
  z = jnp.einsum("nij,nj->ni", a, nu) + b
  # Exact NLL per sample, constants included: 0.5|nu|^2 + log|det A| + d/2 log 2pi.
  nll = 0.5 * jnp.sum(nu**2, -1) + jnp.sum(jnp.log(diag), -1) + 2 * math.log(2 * math.pi)
  return z, c, nll


def test_flow_learns_conditional_gaussian_to_analytic_nll():
  flow = _flow(num_blocks=4, hidden=64, num_hidden_layers=1, cond_dim=2, clamp=2.0)
  z, c, _ = _toy_gaussian(jax.random.PRNGKey(20), 512)
  variables = flow.init(jax.random.PRNGKey(21), z, c, method=flow.forward)

  def nll(params, z, c):
    nu, logdet = flow.apply({**variables, "params": params}, z, c, method=flow.forward)
    return jnp.mean(0.5 * jnp.sum(nu**2, -1) - logdet) + 2 * math.log(2 * math.pi)

  opt = optax.adam(optax.cosine_decay_schedule(3e-3, 600))

  @jax.jit
  def step(params, state, key):
    zb, cb, _ = _toy_gaussian(key, 256)
    grads = jax.grad(nll)(params, zb, cb)
    updates, state = opt.update(grads, state)
    return optax.apply_updates(params, updates), state

  params, state = variables["params"], opt.init(variables["params"])
  for i in range(600):
    params, state = step(params, state, jax.random.PRNGKey(1000 + i))
  zt, ct, nll_true = _toy_gaussian(jax.random.PRNGKey(7), 8192)
  gap_per_dim = (float(nll(params, zt, ct)) - float(jnp.mean(nll_true))) / 4
  print("toy conditional Gaussian: test NLL gap per dim", gap_per_dim)
  assert gap_per_dim < 0.05, gap_per_dim
  assert gap_per_dim > -0.05  # A test NLL far below the truth would mean a wrong log-det.
