"""Shared training infrastructure: optimiser semantics, checkpoints, guards, GIFs, config.json."""

import os

import imageio.v2 as imageio
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from i2v_flax import config_lib, parallel, video_io
from i2v_flax.train import checkpoints, common, optimizers, run_config


def test_adam_coupled_weight_decay_matches_torch_formula():
  """One step equals torch Adam with weight_decay: g += wd * p before the moments."""
  tx, schedule = optimizers.adam_coupled_wd(0.1, 0.5, 0.9, 0.01, steps_per_epoch=2,
                                        decay_per_epoch=0.5)
  p = {"w": jnp.array([1.0, -2.0])}
  g = {"w": jnp.array([0.3, 0.0])}
  state = tx.init(p)
  updates, state = tx.update(g, state, p)
  g_eff = np.array([0.3, 0.0]) + 0.01 * np.array([1.0, -2.0])
  m = 0.5 * g_eff / (1 - 0.5)
  v = 0.1 * g_eff**2 / (1 - 0.9)
  np.testing.assert_allclose(updates["w"], -0.1 * m / (np.sqrt(v) + 1e-8), rtol=1e-5)
  # Staircase decay once per epoch.
  np.testing.assert_allclose([schedule(0), schedule(1), schedule(2), schedule(5)],
                             [0.1, 0.1, 0.05, 0.025], rtol=1e-6)


def test_checkpoint_roundtrip_and_partial_restore(tmp_path):
  mesh = parallel.make_mesh()
  mngr = checkpoints.make_checkpoint_manager(str(tmp_path / "ckpt"), save_interval_steps=2,
                                        max_to_keep=2, item_names=("models", "train"))
  models = {"a": jnp.arange(3.0)}
  train = {"step": jnp.array(4), "opt": (jnp.ones(2), jnp.zeros(1))}
  assert checkpoints.save_checkpoint(mngr, 4, {"models": models, "train": train})
  assert not checkpoints.save_checkpoint(mngr, 5, {"models": models, "train": train})  # interval
  mngr.wait_until_finished()
  out = checkpoints.restore_checkpoint(
      mngr, {"models": checkpoints.abstract_like(models, parallel.replicated(mesh))})
  assert set(out) == {"models"}
  np.testing.assert_array_equal(out["models"]["a"], [0.0, 1.0, 2.0])
  mngr.close()


def test_state_saver_splits_models_and_never_saves_a_step_twice(tmp_path):
  mesh = parallel.make_mesh()
  mngr = checkpoints.make_checkpoint_manager(str(tmp_path / "ckpt"), save_interval_steps=10,
                                        max_to_keep=5, item_names=("models", "train"))
  save = checkpoints.make_state_saver(mngr, ("enc",), last_saved=0)
  state = {"enc": {"w": jnp.arange(3.0)}, "step": jnp.array(3), "opt": jnp.ones(2)}
  save(3, state)  # Off the interval: still written.
  save(3, {**state, "step": jnp.array(99)})  # SIGTERM on a just-saved step: skipped, no error.
  resumed = checkpoints.make_state_saver(mngr, ("enc",), last_saved=3)
  resumed(3, state)  # The step a run resumed from is already on disk: skipped, no error.
  mngr.wait_until_finished()
  assert mngr.all_steps() == [3]
  abstract = checkpoints.abstract_like(state, parallel.replicated(mesh))
  restored = checkpoints.restore_state(mngr, abstract, ("enc",), step=3)
  assert set(restored) == set(state)
  np.testing.assert_array_equal(restored["enc"]["w"], [0.0, 1.0, 2.0])
  assert int(restored["step"]) == 3
  mngr.close()


def test_check_finite_names_terms_and_checkpoint():
  common.check_finite({"l1": 1.0}, 3, "/x")
  with pytest.raises(common.NonFiniteLossError, match=r"step 3.*l1.*/x/ckpt"):
    common.check_finite({"l1": np.nan, "kl": 0.0}, 3, "/x/ckpt")


def test_mesh_jit_keeps_params_replicated_and_batch_sharded():
  mesh = parallel.make_mesh()
  f = common.mesh_jit(lambda p, x: (p + x.sum(), x * 2), mesh,
                      (common.REPLICATED, common.BATCH), (common.REPLICATED, common.BATCH))
  p, x = f(jnp.ones(3), parallel.shard_batch(np.ones((len(jax.devices()) * 2, 3)), mesh))
  assert p.sharding.is_fully_replicated
  np.testing.assert_allclose(p, 1 + 2 * len(jax.devices()) * 3)


def test_video_grid_and_atomic_gif(tmp_path):
  a = -np.ones((3, 4, 8, 8, 3), np.float32)
  b = np.ones((3, 2, 8, 8, 3), np.float32)
  grid = video_io.video_grid([a, b], max_rows=2)
  assert grid.shape == (4, 2 * 9 + 1, 2 * 9 + 1, 3) and grid.dtype == np.uint8
  assert grid[0, 1, 1, 0] == 0 and grid[3, 1, 10, 0] == 255  # short column holds its last frame
  path = str(tmp_path / "s" / "x.gif")
  video_io.write_video(path, grid)
  assert imageio.mimread(path)[0].shape[:2] == (19, 19)
  assert os.listdir(tmp_path / "s") == ["x.gif"]  # no temp file left behind


def test_config_json_roundtrip_and_compat_check(tmp_path):
  c = config_lib.load_config("configs/shapes.py:tiny")
  run_config.write_config(str(tmp_path), c)
  assert run_config.read_config(str(tmp_path)).stage1.z_dim == c.stage1.z_dim
  run_config.check_compatible(str(tmp_path), c, ["stage1.z_dim", "stage1.enc_widths"])
  c2 = config_lib.load_config("configs/shapes.py:tiny")
  c2.stage1.enc_widths = (8, 8, 16, 16, 32)
  with pytest.raises(ValueError, match=r"stage1.enc_widths.*new --workdir"):
    run_config.check_compatible(str(tmp_path), c2, ["stage1.z_dim", "stage1.enc_widths"])
