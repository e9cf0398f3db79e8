"""Shared training infrastructure: optimiser semantics, checkpoints, guards, GIFs, config.json."""

import os

import imageio.v2 as imageio
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from i2v_flax import config_lib, parallel, video_io
from i2v_flax.train import checkpoints, common, optimizers, run_config


def _torch_adam(params, grads, lr, b1, b2, eps=1e-8, weight_decay=0.0, amsgrad=False):
  """numpy transcription of torch.optim.Adam.step (torch 2.x `_single_tensor_adam`), float64."""
  p = np.array(params, np.float64)
  m, v, v_max, out = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p), []
  for t, g in enumerate(grads, start=1):
    g = np.asarray(g, np.float64) + weight_decay * p  # Coupled L2 (not AdamW).
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    bc1, bc2 = 1 - b1**t, 1 - b2**t
    if amsgrad:
      v_max = np.maximum(v_max, v)  # The max of the RAW second moment ...
      denom = np.sqrt(v_max) / np.sqrt(bc2) + eps  # ... bias-corrected afterwards.
    else:
      denom = np.sqrt(v) / np.sqrt(bc2) + eps
    p = p - (lr / bc1) * m / denom
    out.append(p.copy())
  return out


def _run(tx, params, grads):
  p, state, out = jnp.asarray(params, jnp.float32), None, []
  state = tx.init(p)
  for g in grads:
    updates, state = tx.update(jnp.asarray(g, jnp.float32), state, p)
    p = p + updates
    out.append(np.asarray(p))
  return out


# Varying magnitudes and signs: an early large gradient is what separates torch's AMSGrad (max
# of the raw v) from optax.amsgrad (max of the corrected v).
_GRADS = [[3.0, -0.2, 0.0], [0.1, 0.4, -1.0], [-0.5, 0.05, 2.0], [0.2, -0.3, 0.1],
          [1.5, 0.0, -0.4], [-0.05, 0.6, 0.3], [0.3, -0.1, -0.2]]


def test_stage1_adam_matches_torch_over_several_steps():
  """Coupled weight decay over 7 steps with varying gradients (one step cannot tell: b1, b2
  cancel in the first update) and the per-epoch staircase decay."""
  tx, schedule = optimizers.adam_coupled_wd(0.1, 0.5, 0.9, 0.05, steps_per_epoch=100,
                                            decay_per_epoch=0.5)
  params = [1.0, -2.0, 0.5]
  want = _torch_adam(params, _GRADS, 0.1, 0.5, 0.9, weight_decay=0.05)
  np.testing.assert_allclose(_run(tx, params, _GRADS), want, rtol=1e-5, atol=1e-6)
  assert not np.allclose(_run(optimizers.adam_coupled_wd(0.1, 0.5, 0.9, 0.0, 100, 0.5)[0],
                              params, _GRADS)[-1], want[-1], atol=1e-3)  # wd matters here.
  _, schedule = optimizers.adam_coupled_wd(0.1, 0.5, 0.9, 0.01, steps_per_epoch=2,
                                           decay_per_epoch=0.5)
  np.testing.assert_allclose([schedule(0), schedule(1), schedule(2), schedule(5)],
                             [0.1, 0.1, 0.05, 0.025], rtol=1e-6)


def test_lr_cooldown_anneals_every_optimiser_to_zero_at_the_last_step():
  """lr_cooldown_steps (demo) = a half cosine over the run's last N steps on top of the staircase;
  the discriminators count updates from the end of warm-up, so theirs starts that much earlier
  in their count and both reach 0 at the same global step. 0 (reference) changes nothing."""
  from i2v_flax.train import stage1_state
  config = config_lib.load_config("configs/shapes.py")
  s1 = config.stage1
  s1.num_train_steps, s1.warmup_steps, s1.steps_per_epoch, s1.lr_decay_per_epoch = 100, 20, 50, 0.5
  s1.lr, s1.lr_cooldown_steps = 1.0, 0
  _, plain = stage1_state.make_optimizer(config)
  s1.lr_cooldown_steps = 40
  _, g = stage1_state.make_optimizer(config)
  _, d = stage1_state.make_optimizer(config, discriminator=True)
  np.testing.assert_allclose([g(0), g(59), g(60), g(80), g(100)], [1.0, 0.5, 0.5, 0.25, 0.0],
                             atol=1e-6)
  np.testing.assert_allclose([plain(59), plain(80), plain(100)], [0.5, 0.5, 0.25], atol=1e-6)
  # D update k happens at global step warmup + k: D's lr at global step s is d(s - 20).
  np.testing.assert_allclose([d(60 - 20), d(80 - 20), d(100 - 20)], [1.0, 0.25, 0.0], atol=1e-6)


def test_stage2_amsgrad_has_torch_semantics():
  """torch's AMSGrad (max of the raw second moment, then bias correction), 7 steps; optax's
  amsgrad (max of the corrected moment) is measurably different on the same gradients."""
  kwargs = dict(steps_per_epoch=100, decay_every_epochs=7, decay_factor=0.5)
  params = [1.0, -2.0, 0.5]
  want = _torch_adam(params, _GRADS, 0.01, 0.9, 0.99, amsgrad=True)
  tx, _ = optimizers.amsgrad_step_decay(0.01, 0.9, 0.99, semantics="torch", **kwargs)
  np.testing.assert_allclose(_run(tx, params, _GRADS), want, rtol=1e-5, atol=1e-7)
  tx_optax, _ = optimizers.amsgrad_step_decay(0.01, 0.9, 0.99, semantics="optax", **kwargs)
  step_torch = np.abs(want[-1] - want[-2])
  step_optax = np.abs(np.diff(_run(tx_optax, params, _GRADS)[-2:], axis=0))[0]
  # The corrected max latches the early 3.0: optax's step is smaller, by half where it hit.
  assert np.all(step_optax < step_torch) and step_optax[0] < 0.5 * step_torch[0], (
      step_optax, step_torch)
  _, schedule = optimizers.amsgrad_step_decay(1.0, 0.9, 0.99, steps_per_epoch=3,
                                              decay_every_epochs=2, decay_factor=0.5)
  np.testing.assert_allclose([schedule(5), schedule(6), schedule(12)], [1.0, 0.5, 0.25])


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


def test_an_older_workdirs_config_gains_the_new_fields_with_their_defaults(tmp_path):
  import json
  c = config_lib.load_config("configs/shapes.py:tiny")
  path = run_config.write_config(str(tmp_path), c)
  saved = json.loads(open(path).read())
  del saved["eval"]["protocol"], saved["stage1"]["select"]  # Fields a past version lacked.
  saved["stage1"]["dec_nf"] = 5  # Saved values still win over the defaults.
  open(path, "w").write(json.dumps(saved))
  old = run_config.read_config(str(tmp_path))
  base = config_lib.base_config()
  assert old.eval.protocol == base.eval.protocol and old.stage1.select == base.stage1.select
  assert old.stage1.dec_nf == 5 and old.data.name == "shapes"


def test_bound_trailing_args_call_lower_and_compile_like_the_jitted_function():
  from i2v_flax.train import common
  w = jax.random.normal(jax.random.PRNGKey(0), (300, 300))  # 360 KB.
  bound = common.BoundTrailingArgs(jax.jit(lambda x, w: x @ w), w)
  x = jnp.ones((4, 300))
  np.testing.assert_allclose(bound(x), x @ w, rtol=1e-5)
  lowered = bound.lower(x)
  closed_over = jax.jit(lambda x: x @ w).lower(x)
  assert len(closed_over.as_text()) > w.nbytes  # A closure bakes w in as a constant...
  assert len(lowered.as_text()) < 0.05 * w.nbytes  # ...the bound argument does not.
  compiled = lowered.compile()
  np.testing.assert_allclose(compiled(x), x @ w, rtol=1e-5)
  assert compiled.cost_analysis() is not None  # Other attributes are the compiled function's.
