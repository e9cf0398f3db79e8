"""Stage-1 losses against hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from i2v_flax import losses


def test_r1_is_per_sample_mean_of_squared_gradient_norms():
  a = jnp.array([0.5, -1.0, 2.0])

  def d(x):  # D(x_i) = sum_j a_j x_ij^2 -> grad 2 a x_i
    return jnp.sum(a * x**2, axis=-1)

  x = jnp.array([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5], [2.0, 0.0, 0.0]])
  penalty, logits = losses.r1_penalty(d, x)
  per_sample = np.sum((2 * np.asarray(a) * np.asarray(x)) ** 2, axis=-1)
  assert float(penalty) == pytest.approx(per_sample.mean(), rel=1e-6)  # not / B^2
  np.testing.assert_allclose(logits, d(x))


def test_r1_with_aux():
  penalty, _, aux = losses.r1_penalty(lambda x: (jnp.sum(3 * x, -1), "aux"), jnp.ones((2, 4)),
                                      has_aux=True)
  assert aux == "aux" and float(penalty) == pytest.approx(36.0)


def test_hinge_and_generator_terms():
  real, fake = jnp.array([2.0, 0.0]), jnp.array([-2.0, 0.0])
  assert float(losses.hinge_d(real, fake)) == pytest.approx(0.5)
  assert float(losses.hinge_d(jnp.array([-1.0]), jnp.array([1.0]))) == pytest.approx(2.0)
  assert float(losses.generator_adversarial(jnp.array([1.0, 3.0]))) == pytest.approx(-2.0)


def test_kl_matches_closed_form():
  mu = jnp.array([[1.0, 0.0], [0.0, 0.0]])
  logvar = jnp.array([[0.0, np.log(2.0)], [0.0, 0.0]])
  expected = 0.5 * ((1.0) + (2.0 - 1.0 - np.log(2.0))) / 2  # mean over the batch of 2
  assert float(losses.kl_standard_normal(mu, logvar)) == pytest.approx(expected, rel=1e-6)


def test_feature_matching_value_and_no_gradient_to_real():
  real = [jnp.ones((2, 3)), jnp.zeros((2, 5))]
  fake = [jnp.zeros((2, 3)), jnp.full((2, 5), 2.0)]
  assert float(losses.feature_matching(real, fake)) == pytest.approx(1.5)
  g = jax.grad(lambda r: losses.feature_matching([r], [jnp.zeros((2, 3))]))(real[0])
  np.testing.assert_array_equal(g, 0.0)


def test_l1_is_mean_abs():
  assert float(losses.l1(jnp.zeros((1, 2, 2, 2, 3)), jnp.full((1, 2, 2, 2, 3), -0.5))) == 0.5


def _tiny_config(**stage1_overrides):
  from i2v_flax import config_lib
  c = config_lib.load_config("configs/shapes.py:tiny")
  c.stage1.update(stage1_overrides)
  return c


def _tiny_steps(config, lpips_weights):
  """(stage-1 steps, a fresh state, a sharded random 2-clip batch) for `config`."""
  from i2v_flax import parallel
  from i2v_flax.train import stage1, stage1_steps
  mesh = parallel.make_mesh()
  models = stage1.build_models(config)
  steps = stage1_steps.make_steps(config, models, mesh, lpips_weights)
  video = np.tanh(np.random.RandomState(0).randn(2, 17, 32, 32, 3)).astype(np.float32)
  video = parallel.shard_batch(video, mesh)
  state = jax.jit(stage1.make_init_fn(config, models))(video, jax.random.PRNGKey(0))
  return steps, state, video


def test_lpips_weights_are_an_argument_of_the_compiled_generator_step():
  """Closed over, VGG-16's 14.7M weights would be constants in the HLO (~2 bytes of text per
  byte of weights); as a bound argument the step's module stays small and the term is live."""
  from i2v_flax import parallel
  from i2v_flax.models import lpips
  c = _tiny_config(w_percep=1.0)
  vgg = jax.device_put(lpips.load_lpips_params(), parallel.replicated(parallel.make_mesh()))
  steps, state, video = _tiny_steps(c, vgg)
  vgg_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(vgg))
  assert vgg_bytes > 50e6
  assert len(steps["g_warmup"].lower(state, video).as_text()) < 0.1 * vgg_bytes
  _, metrics, _ = steps["g_warmup"](state, video)
  assert 0 < float(metrics["lpips"]) < 1
  l1_only = float(c.stage1.w_rec * metrics["l1"] + c.stage1.w_kl * metrics["kl"])
  assert float(metrics["g_loss"]) == pytest.approx(l1_only + float(metrics["lpips"]), rel=1e-5)


def test_l2_is_mean_square():
  assert float(losses.l2(jnp.zeros((1, 2, 2, 2, 3)), jnp.full((1, 2, 2, 2, 3), -0.5))) == 0.25


@pytest.mark.parametrize("rec_loss", ["l1", "l2"])
def test_rec_loss_picks_the_reconstruction_term_of_the_generator_loss(rec_loss):
  """'l1' is the reference; 'l2' (demo option) trains on what PSNR scores. The step's g_loss is
  w_rec * that term + w_kl * KL, and the unused term is not what is optimised."""
  from i2v_flax import config_lib
  assert config_lib.base_config().stage1.rec_loss == "l1"
  c = _tiny_config(rec_loss=rec_loss)
  steps, state, video = _tiny_steps(c, None)
  _, metrics, fake = steps["g_warmup"](state, video)
  target = np.asarray(video)[:, 1:]
  rec = {"l1": np.mean(np.abs(np.asarray(fake) - target)),
         "l2": np.mean(np.square(np.asarray(fake) - target))}[rec_loss]
  expected = c.stage1.w_rec * rec + c.stage1.w_kl * float(metrics["kl"])
  assert float(metrics["g_loss"]) == pytest.approx(expected, rel=1e-4)


def test_rec_loss_is_checked():
  from i2v_flax import config_check
  c = _tiny_config(rec_loss="mse")
  with pytest.raises(ValueError, match="rec_loss"):
    config_check.check_config(c)


def test_unmixed_frames_get_their_own_reconstruction_loss():
  """dec_output='blend' with w_rec_unmixed: g_loss adds w_rec * w_rec_unmixed * L1 of the frames
  before mixing. A fresh blend head mixes half-half, so those frames are 2 * fake - x_0."""
  c = _tiny_config(dec_output="blend", w_rec_unmixed=0.5)
  steps, state, video = _tiny_steps(c, None)
  _, metrics, fake = steps["g_warmup"](state, video)
  v = np.asarray(video)
  unmixed = 2 * np.asarray(fake) - v[:, :1]
  np.testing.assert_allclose(float(metrics["rec_unmixed"]), np.mean(np.abs(unmixed - v[:, 1:])),
                             rtol=1e-4)
  expected = (c.stage1.w_rec * (float(metrics["l1"]) + 0.5 * float(metrics["rec_unmixed"]))
              + c.stage1.w_kl * float(metrics["kl"]))
  assert float(metrics["g_loss"]) == pytest.approx(expected, rel=1e-5)


def test_unmixed_loss_without_a_mixing_decoder_is_an_error():
  from i2v_flax import config_lib, errors
  from i2v_flax.train import stage1_state
  assert config_lib.base_config().stage1.w_rec_unmixed == 0.0
  with pytest.raises(errors.InvalidInput, match="dec_output=blend"):
    stage1_state.check_stage1_config(_tiny_config(w_rec_unmixed=1.0))
