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
