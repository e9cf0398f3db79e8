"""Stage-1 state_dict conversion: layouts and the errors a user meets with a wrong file/config."""

from __future__ import annotations

import os

import numpy as np
import pytest

from i2v_flax.convert import stage1, torch_layout
from i2v_flax.convert.fixtures import load_fixture
from i2v_flax.convert.torch_layout import ConversionError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "reference")


@pytest.fixture(scope="module")
def ds():
  fx = load_fixture(FIXTURES, "stage1_disc_spatial")
  return fx, stage1.spatial_discriminator_from_reference(fx.config)


@pytest.fixture(scope="module")
def dec():
  fx = load_fixture(FIXTURES, "stage1_decoder")
  return fx, stage1.decoder_from_reference(fx.config)


def test_spectral_v_reorder_round_trips_and_matches_the_kernel_rows():
  w = np.random.default_rng(0).standard_normal((5, 3, 2, 3, 4)).astype(np.float32)  # O,I,k...
  v = np.random.default_rng(1).standard_normal(3 * 2 * 3 * 4).astype(np.float32)
  kernel = torch_layout.conv_to_flax(w)
  ours = torch_layout.sn_v_to_flax(v, kernel.shape)
  # torch's W_mat v equals our v @ kernel.reshape(-1, O).
  np.testing.assert_allclose(w.reshape(5, -1) @ v, ours @ kernel.reshape(-1, 5), rtol=1e-5)
  np.testing.assert_array_equal(torch_layout.sn_v_to_torch(ours, kernel.shape), v)


def test_decoder_fc_is_permuted_to_channel_minor(dec):
  fx, module = dec
  variables = stage1.convert_decoder(fx.state_dict, module, 64)
  w, b = fx.state_dict["fc.weight"], fx.state_dict["fc.bias"]
  z = np.random.default_rng(0).standard_normal((2, w.shape[1])).astype(np.float32)
  torch_out = (z @ w.T + b).reshape(2, -1, 4, 4)  # Channel-major (B, C, 4, 4).
  fc = variables["params"]["fc"]
  ours = (z @ fc["kernel"] + fc["bias"]).reshape(2, 4, 4, -1)
  np.testing.assert_allclose(ours, torch_out.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)


def test_unknown_missing_and_misshaped_keys_are_all_named(dec):
  fx, module = dec
  sd = dict(fx.state_dict)
  sd["g_9.conv_0.bias"] = np.zeros(3, np.float32)
  del sd["g_1.conv_s.weight_u"]
  sd["head_0.norm_1.linear.bias"] = np.zeros(7, np.float32)
  with pytest.raises(ConversionError) as e:
    stage1.convert_decoder(sd, module, 64)
  msg = str(e.value)
  assert "g_9.conv_0.bias" in msg and "unknown" in msg
  assert "g_1.conv_s.weight_u (expected shape (64,))" in msg
  assert "head_0.norm_1.linear.bias: the file has shape (7,)" in msg and "(256,)" in msg
  assert "Fix:" in msg


def test_widths_that_differ_from_the_config_fail_with_both_shapes(ds):
  fx, _ = ds
  narrow = stage1.spatial_discriminator_from_reference({**fx.config, "ndf": 4})
  with pytest.raises(ConversionError, match=r"main\.0\.bias: the file has shape \(8,\), the "
                     r"model built from the config expects \(4,\)"):
    stage1.convert_spatial_discriminator(fx.state_dict, narrow, 64)


def test_an_uninitialised_actnorm_is_refused(ds):
  fx, module = ds
  sd = {**fx.state_dict, "main.3.initialized": np.zeros((), np.uint8)}
  with pytest.raises(ConversionError, match="main.3.initialized is 0"):
    stage1.convert_spatial_discriminator(sd, module, 64)


def test_the_wrong_file_is_reported_as_such(dec, ds):
  fx, module = dec
  with pytest.raises(ConversionError, match="stage-1 decoder.*missing keys.*unknown keys"):
    stage1.convert_decoder({**ds[0].state_dict, "fc.weight": fx.state_dict["fc.weight"]},
                           module, 64)


def test_a_dataparallel_prefix_is_accepted(ds):
  fx, module = ds
  sd = {"module." + k: v for k, v in fx.state_dict.items()}
  variables = stage1.convert_spatial_discriminator(sd, module, 64)
  np.testing.assert_array_equal(variables["spectral"]["conv0"]["u"],
                                fx.state_dict["main.0.weight_u"])


def test_reference_options_without_counterpart_are_refused():
  with pytest.raises(ConversionError, match="use_max_pool"):
    stage1.encoder_from_reference({"channels": [64] * 5, "stride_t": [1] * 4, "stride_s": [1] * 4,
                                   "z_dim": 8, "use_max_pool": True})
  with pytest.raises(ConversionError, match="stride_t"):
    stage1.temporal_discriminator_from_reference({"channels": [64] * 5, "stride_s": [1] * 4,
                                                  "stride_t": [1, 2, 2, 2]})
