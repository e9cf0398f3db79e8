"""Stage-1 training: learning, resume == straight run, non-finite guard, entry point, 8 devices.

All runs use `configs/shapes.py:tiny` and share compiled steps (stage1 caches them per
architecture), so the expensive XLA compiles happen once per test session.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from i2v_flax import config_lib, parallel
from i2v_flax.models import lpips
from i2v_flax.train import common, run_config, stage1

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(steps=4):
  c = config_lib.load_config("configs/shapes.py:tiny")
  c.stage1.num_train_steps = steps
  c.stage1.warmup_steps = 2
  c.stage1.checkpoint_every = 2
  c.stage1.sample_every = 2
  return c


def _batch(i, b=2, r=32):
  return {"video": np.tanh(np.random.RandomState(i).randn(b, 17, r, r, 3)).astype(np.float32)}


def _iter_from(start, bad_from=None):
  i = start
  while True:
    batch = _batch(i)
    if bad_from is not None and i >= bad_from:
      batch["video"][:] = np.nan
    yield batch
    i += 1


def _params(state):
  return jax.device_get({k: state[k]["params"] for k in ("encoder", "decoder", "d_t", "d_s")})


def _assert_trees_close(a, b, atol):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(x, y, atol=atol, rtol=0)


@pytest.fixture(autouse=True)
def _no_vgg(monkeypatch):
  """w_percep = 0 must never touch the VGG weights."""
  def fail():
    raise AssertionError("VGG weights loaded although w_percep = 0")
  monkeypatch.setattr(lpips, "load_lpips_params", fail)


def test_generator_steps_reduce_l1_on_a_fixed_batch():
  c = _config()
  c.stage1.lr = 2e-3
  mesh = parallel.make_mesh()
  models = stage1.build_models(c)
  steps = stage1._cached_steps(c, models, mesh, None)
  video = parallel.shard_batch(_batch(0)["video"], mesh)
  state = jax.jit(stage1.make_init_fn(c, models))(video, jax.random.PRNGKey(0))
  l1 = []
  for _ in range(8):
    state, metrics, _ = steps["g_warmup"](state, video)
    l1.append(float(metrics["l1"]))
  assert l1[-1] < 0.9 * l1[0], l1


def test_eval_z_use_measures_how_much_the_decoder_depends_on_z():
  c = _config()
  mesh = parallel.make_mesh()
  models = stage1.build_models(c)
  steps = stage1._cached_steps(c, models, mesh, None)
  video = parallel.shard_batch(_batch(0)["video"], mesh)
  state = jax.jit(stage1.make_init_fn(c, models))(video, jax.random.PRNGKey(0))
  _, _, _, z_use = steps["eval"](state, video, jax.random.PRNGKey(1))
  assert np.all(np.asarray(z_use) > 1e-3), z_use  # A fresh decoder reacts to z.

  def cut_z(path, leaf):  # z only enters through 'fc' and the ADAIN 'style' Dense kernels.
    names = [getattr(k, "key", None) for k in path]
    feeds_z = "kernel" in names and ("fc" in names or "style" in names)
    return np.zeros_like(leaf) if feeds_z else leaf
  decoder = jax.device_get(state["decoder"])
  decoder["params"] = jax.tree_util.tree_map_with_path(cut_z, decoder["params"])
  blind = dict(state, decoder=parallel.replicate(decoder, mesh))
  _, _, _, z_use = steps["eval"](blind, video, jax.random.PRNGKey(1))
  np.testing.assert_array_equal(np.asarray(z_use), 0.0)


def test_resume_equals_straight_run(tmp_path):
  straight = stage1.train(_config(4), str(tmp_path / "a"), _iter_from)
  stage1.train(_config(2), str(tmp_path / "b"), _iter_from)
  resumed = stage1.train(_config(4), str(tmp_path / "b"), _iter_from)
  assert int(resumed["step"]) == 4
  _assert_trees_close(_params(straight), _params(resumed), atol=1e-6)
  # The discriminators moved after warm-up (steps 2, 3), so this compares real D updates too.
  _, restored = stage1.restore_stage1(str(tmp_path / "b"))
  _assert_trees_close(restored["decoder"]["params"], _params(resumed)["decoder"], atol=0)


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
  wd = str(tmp_path)
  good = stage1.train(_config(2), wd, _iter_from)
  with pytest.raises(common.NonFiniteLossError, match="step 2.*checkpoints/stage1"):
    stage1.train(_config(4), wd, lambda s: _iter_from(s, bad_from=2))
  mngr = ocp.CheckpointManager(os.path.join(wd, "checkpoints", "stage1"))
  assert mngr.latest_step() == 2
  _, restored = stage1.restore_stage1(wd)
  _assert_trees_close(restored["encoder"]["params"], _params(good)["encoder"], atol=0)


def test_resume_refuses_a_different_architecture(tmp_path):
  c = _config(2)
  run_config.write_config(str(tmp_path), c)
  c.stage1.z_dim = 32
  with pytest.raises(ValueError, match="z_dim.*new --workdir"):
    stage1.train(c, str(tmp_path), _iter_from)


def test_restore_without_checkpoint_names_workdir_and_command(tmp_path):
  with pytest.raises(FileNotFoundError, match=f"{tmp_path}.*--mode=train_stage1"):
    stage1.restore_stage1(str(tmp_path))


def test_train_and_evaluate_on_shapes_data(trained_workdir):
  """The session fixture ran stage1.train_and_evaluate on the tiny shapes build."""
  wd = trained_workdir
  c = config_lib.load_config("configs/shapes.py:tiny")
  assert os.path.exists(os.path.join(wd, "samples", "stage1_2.gif"))
  assert os.listdir(os.path.join(wd, "tensorboard", "stage1"))
  with open(os.path.join(wd, "config.json")) as f:
    assert json.load(f)["stage1"]["z_dim"] == c.stage1.z_dim
  config, variables = stage1.restore_stage1(wd)
  models = stage1.build_models(config)
  video = _batch(0)["video"]
  z, mu, logvar = jax.jit(lambda v, k: stage1.encode(models.encoder, variables["encoder"], v, k))(
      video[:, 1:], jax.random.PRNGKey(0))
  assert z.shape == mu.shape == logvar.shape == (2, c.stage1.z_dim)
  frames = jax.jit(lambda x0, z: stage1.decode(models.decoder, variables["decoder"], x0, z))(
      video[:, 0], mu)
  assert frames.shape == (2, 16, 32, 32, 3) and np.all(np.abs(frames) <= 1)


_EIGHT_DEVICES = r"""
import json, jax, numpy as np
from i2v_flax import config_lib, parallel
from i2v_flax.train import stage1
c = config_lib.load_config("configs/shapes.py:tiny")
c.stage1.batch_size = 8
c.stage1.conv3d_impl = "native"  # Fewer ops than 'taps' -> faster SPMD compile; impl is orthogonal.
video_np = np.tanh(np.random.RandomState(0).randn(8, 17, 32, 32, 3)).astype(np.float32)
models = stage1.build_models(c)
init = jax.jit(stage1.make_init_fn(c, models))(video_np, jax.random.PRNGKey(0))
init = jax.device_get(init)
out = {}
for n in (1, 8):
  mesh = parallel.make_mesh(jax.devices()[:n])
  steps = stage1.make_steps(c, models, mesh, None)
  video = parallel.shard_batch(video_np, mesh)
  state = parallel.replicate(init, mesh)
  state, gm, fake = steps["g_adv"](state, video)
  state, dm = steps["d"](state, video, fake)
  params = {k: state[k]["params"] for k in ("encoder", "decoder", "d_t", "d_s")}
  out[n] = (jax.device_get({**gm, **dm}), jax.device_get(fake), jax.device_get(params))
m1, m8 = out[1][0], out[8][0]
worst_param = max(float(np.max(np.abs(a - b))) for a, b in zip(
    jax.tree_util.tree_leaves(out[1][2]), jax.tree_util.tree_leaves(out[8][2])))
print(json.dumps({"metrics": {k: [float(m1[k]), float(m8[k])] for k in m1},
                  "fake": float(np.max(np.abs(out[1][1] - out[8][1]))),
                  "params": worst_param, "devices": jax.device_count()}))
"""


def test_step_on_eight_fake_devices_equals_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  proc = subprocess.run([sys.executable, "-c", _EIGHT_DEVICES], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["devices"] == 8
  for name, (one, eight) in result["metrics"].items():
    # Gradient norms sum ~10^5 squared terms whose reduction order depends on the sharding.
    rel = 1e-3 if name.endswith("grad_norm") else 1e-4
    assert eight == pytest.approx(one, rel=rel, abs=1e-5), (name, result)
  assert result["fake"] < 1e-4, result  # XLA picks per-shape conv kernels: ~1e-5 noise.
  # Adam turns rounding noise in ~zero gradients into +-lr steps, so params get lr-level slack.
  assert result["params"] < 2.5 * _config().stage1.lr
