"""The inference API on a (tiny) trained model: determinism, the explain/transfer identity,
control, long videos, the w/o-cINN prior, and clear errors."""

import dataclasses

import jax
import numpy as np
import pytest

from i2v_flax import data, sampling
from i2v_flax.train import stage1, stage2
from i2v_flax.train.stage2_steps import optional_eta


@pytest.fixture(scope="module")
def model(trained_workdir):
  return sampling.load(trained_workdir)


@pytest.fixture(scope="module")
def clips(model, shapes_data_dir):
  cfg = model.config.data
  cfg.unlock()
  cfg.data_dir = shapes_data_dir
  return next(iter(data.create_iterator(cfg, "test", 4, shuffle=False, repeat=False)))


def test_sample_is_seeded_and_stochastic(model, clips):
  x0 = clips["video"][:2, 0]
  a = model.sample(x0, 3, seed=0, eta=clips["eta"][:2])
  b = model.sample(x0, 3, seed=0, eta=clips["eta"][:2])
  c = model.sample(x0, 3, seed=1, eta=clips["eta"][:2])
  assert a.shape == (2, 3, 16, 32, 32, 3) and a.dtype == np.float32
  assert np.abs(a).max() <= 1.0
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - c).max() > 1e-4
  assert np.abs(a[:, 0] - a[:, 1]).max() > 1e-4  # Samples of one x_0 differ.


def test_chunked_inference_equals_one_call(model, clips):
  """Batches larger than config.eval.batch_size run in padded chunks; results must not change."""
  def with_chunk(size):
    config = model.config.copy_and_resolve_references()
    config.eval.batch_size = size
    return dataclasses.replace(model, config=config)
  whole, chunked = with_chunk(16), with_chunk(4)  # 6 videos: one call vs chunks of 4 and 2 (+2 pad).
  x0, eta = clips["video"][:3, 0], clips["eta"][:3]
  np.testing.assert_allclose(chunked.sample(x0, 2, seed=3, eta=eta),
                             whole.sample(x0, 2, seed=3, eta=eta), atol=1e-5)
  np.testing.assert_allclose(chunked.encode(clips["video"][:3], eta=eta),
                             whole.encode(clips["video"][:3], eta=eta), atol=1e-5)


def test_transfer_onto_own_first_frame_is_the_reconstruction(model, clips):
  """T(T^-1(mu; x_0); x_0) = mu, so transferring a video onto its own x_0 must equal decoding
  the encoder mean: checks the explain direction, the flow inverse and the wiring together."""
  video, eta = clips["video"][:2], clips["eta"][:2]
  moved = model.transfer(video, video[:, 0], eta_a=eta, eta_b=eta)
  enc_vars = jax.device_get(model.variables["encoder"])
  dec_vars = jax.device_get(model.variables["decoder"])
  _, mu, _ = stage1.encode(model.stage1_models.encoder, enc_vars, video[:, 1:], None, video[:, 0])
  recon = stage1.decode(model.stage1_models.decoder, dec_vars, video[:, 0], mu)
  np.testing.assert_allclose(moved, np.asarray(recon), atol=2e-4)


def test_encode_returns_the_nu_that_regenerates_the_video_latent(model, clips):
  video, eta = clips["video"][:2], clips["eta"][:2]
  nu = model.encode(video, eta=eta)
  assert nu.shape == (2, model.z_dim) and np.isfinite(nu).all()
  variables = jax.device_get(model.variables)
  cond = stage2.condition(model.embedder, variables["embedder"], video[:, 0],
                          optional_eta(model.config, eta))
  z = stage2.flow_forward(model.flow, variables["flow"], nu, cond)
  _, mu, _ = stage1.encode(model.stage1_models.encoder, variables["encoder"], video[:, 1:], None,
                           video[:, 0])
  np.testing.assert_allclose(np.asarray(z), np.asarray(mu), atol=1e-4)


def test_changing_eta_changes_the_video(model, clips):
  x0 = np.repeat(clips["video"][:1, 0], 2, 0)
  etas = np.stack([sampling.eta_from_values(model.config, [0.2, 0.2, 1, 0]),
                   sampling.eta_from_values(model.config, [0.8, 0.8, 0, 1])])
  out = model.sample(x0, 1, seed=0, eta=etas)
  assert np.abs(out[0] - out[1]).max() > 1e-4


def test_extend_continues_the_sample(model, clips):
  x0, eta = clips["video"][:1, 0], clips["eta"][:1]
  first = model.sample(x0, 2, seed=5, eta=eta)
  long = model.extend(x0, length=40, num_samples=2, seed=5, eta=eta)
  assert long.shape == (1, 2, 40, 32, 32, 3)
  np.testing.assert_allclose(long[:, :, :16], first, atol=1e-6)
  # mode='z' reuses the first chunk's z: chunk 2 = decode(last frame of chunk 1, same z).
  z_mode = model.extend(x0, length=32, num_samples=2, seed=5, eta=eta, mode="z")
  np.testing.assert_allclose(z_mode[:, :, :16], first, atol=1e-6)
  _, z = model._sample_with_z(x0, 2, 1.0, 5, eta, "cinn")
  again = model._batched(model._decode, first[0, :, -1], z[0])
  np.testing.assert_allclose(z_mode[0, :, 16:], again, atol=1e-5)


def test_gaussian_prior_skips_the_flow(model, clips):
  x0 = clips["video"][:1, 0]
  gauss = model.sample(x0, 2, seed=0, prior="gaussian")
  rng = np.random.default_rng(0)
  z = rng.standard_normal((2, model.z_dim)).astype(np.float32)
  direct = model._batched(model._decode, np.repeat(x0, 2, 0), z)
  np.testing.assert_allclose(gauss[0], direct, atol=1e-6)


def test_bad_inputs_raise_clear_errors(model, clips):
  with pytest.raises(ValueError, match="x0 must be"):
    model.sample(np.zeros((1, 16, 16, 3), np.float32))
  with pytest.raises(ValueError, match="eta must be"):
    model.sample(clips["video"][:1, 0], eta=np.zeros((1, 7), np.float32))
  with pytest.raises(ValueError, match="prior must be"):
    model.sample(clips["video"][:1, 0], prior="uniform")
  with pytest.raises(ValueError, match="4 numbers"):
    sampling.eta_from_values(model.config, [0.5, 0.5])
  with pytest.raises(FileNotFoundError):
    sampling.load("/nonexistent/workdir")
