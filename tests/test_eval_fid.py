"""FID plumbing without the (user-supplied) weights: error message, shapes, weight round trip."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from i2v_flax.evaluation import fid, inception


def test_missing_weights_name_the_file_and_the_fix():
  with pytest.raises(FileNotFoundError, match="fid_weights=None.*pt_inception-2015-12-05"):
    fid.fid(np.zeros((2, 8, 8, 3)), np.zeros((2, 8, 8, 3)), None)
  with pytest.raises(FileNotFoundError, match="/no/such.npz"):
    inception.load_fid_variables("/no/such.npz")


def test_pool3_shape_and_npz_round_trip(tmp_path):
  # 75^2 is the smallest input the architecture accepts; FID itself resizes to 299^2.
  model = inception.InceptionV3Pool3()
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 75, 75, 3)), jnp.float32)
  variables = model.init(jax.random.key(0), x)
  out = model.apply(variables, x)
  assert out.shape == (1, 2048)
  assert np.all(np.isfinite(np.asarray(out)))
  # Saving in the documented npz layout and loading gives the same network.
  flat = {jax.tree_util.keystr(k, simple=True, separator="/"): np.asarray(v)
          for k, v in jax.tree_util.tree_leaves_with_path(variables)}
  assert "params/Mixed_7c/branch_pool/conv/kernel" in flat
  assert "batch_stats/Conv2d_1a_3x3/bn/mean" in flat
  np.savez(tmp_path / "w.npz", **flat)
  loaded = inception.load_fid_variables(str(tmp_path / "w.npz"))
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, jax.device_get(variables))


def test_torch_state_dict_conversion_layout():
  sd = {"Mixed_5b.branch1x1.conv.weight": np.ones((64, 192, 1, 1)),
        "Mixed_5b.branch1x1.bn.weight": np.full(64, 2.0),
        "Mixed_5b.branch1x1.bn.bias": np.zeros(64),
        "Mixed_5b.branch1x1.bn.running_mean": np.zeros(64),
        "Mixed_5b.branch1x1.bn.running_var": np.ones(64),
        "Mixed_5b.branch1x1.bn.num_batches_tracked": np.array(0)}
  flat = inception.convert_torch_state_dict(sd)
  assert flat["params/Mixed_5b/branch1x1/conv/kernel"].shape == (1, 1, 192, 64)
  assert flat["params/Mixed_5b/branch1x1/bn/scale"][0] == 2.0
  assert set(flat) == {"params/Mixed_5b/branch1x1/conv/kernel",
                       "params/Mixed_5b/branch1x1/bn/scale", "params/Mixed_5b/branch1x1/bn/bias",
                       "batch_stats/Mixed_5b/branch1x1/bn/mean",
                       "batch_stats/Mixed_5b/branch1x1/bn/var"}
