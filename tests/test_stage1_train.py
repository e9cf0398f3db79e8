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
from i2v_flax.train import checkpoints, common, run_config, stage1, stage1_state, validation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(steps=4, reference=True):
  """shapes:tiny; `reference`: the paper configs' update order and R1 weighting instead of the
  demo's (the adversarial tests then share one compiled 'adv' step)."""
  c = config_lib.load_config("configs/shapes.py:tiny")
  if reference:
    c.stage1.update_order, c.stage1.r1_weighting = "d_first", "reference"
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

  def cut_z(path, leaf):  # z enters only through these kernels (the demo's spatial z: the last two).
    names = [getattr(k, "key", None) for k in path]
    feeds_z = "kernel" in names and bool({"fc", "style", "z_conv", "local_style"} & set(names))
    return np.zeros_like(leaf) if feeds_z else leaf
  decoder = jax.device_get(state["decoder"])
  decoder["params"] = jax.tree_util.tree_map_with_path(cut_z, decoder["params"])
  blind = dict(state, decoder=parallel.replicate(decoder, mesh))
  _, _, _, z_use = steps["eval"](blind, video, jax.random.PRNGKey(1))
  np.testing.assert_array_equal(np.asarray(z_use), 0.0)


def test_resume_equals_straight_run(tmp_path):
  straight = stage1.train(_config(4), str(tmp_path / "a"), _iter_from)
  warm = _params(stage1.train(_config(2), str(tmp_path / "b"), _iter_from))
  resumed = stage1.train(_config(4), str(tmp_path / "b"), _iter_from)
  assert int(resumed["step"]) == 4
  _assert_trees_close(_params(straight), _params(resumed), atol=1e-6)
  # The discriminators moved after warm-up (steps 2, 3), so this compares real D updates too.
  for d in ("d_t", "d_s"):
    moved = [np.max(np.abs(a - b)) for a, b in zip(jax.tree_util.tree_leaves(warm[d]),
                                                    jax.tree_util.tree_leaves(_params(resumed)[d]))]
    assert min(moved) > 0, (d, moved)  # Every D tensor took its two Adam steps.
  _, restored = stage1.restore_stage1(str(tmp_path / "b"))
  _assert_trees_close(restored["decoder"]["params"], _params(resumed)["decoder"], atol=0)


class _Recorder:
  """Delegates init/apply to a module and records (via a jit-safe callback) what passes by."""

  def __init__(self, module, record, what):
    self.module, self.record, self.what = module, record, what

  def _keep(self, name, x):
    jax.debug.callback(lambda v: self.record.__setitem__(name, np.asarray(v)), x)

  def init(self, key, x, *args, **kwargs):
    if self.what == "init_input":
      self._keep("d_s_init", x)
    return self.module.init(key, x, *args, **kwargs)

  def apply(self, *args, **kwargs):
    out = self.module.apply(*args, **kwargs)
    if self.what == "apply_output":
      self._keep("decoded", out)
    return out


def test_adversarial_step_follows_the_reference():
  """D_S's ActNorm initialises on generated frames; in one 'adv' step (update_order='d_first')
  D_T and D_S step first and the generator's g_t / g_s are scored by the UPDATED
  discriminators, on the same D_T window and D_S frame indices as the D step."""
  c = config_lib.resolve_epochs(_config())
  mesh, models = parallel.make_mesh(), stage1.build_models(c)
  record = {}
  spy = models._replace(decoder=_Recorder(models.decoder, record, "apply_output"),
                        d_s=_Recorder(models.d_s, record, "init_input"))
  video = parallel.shard_batch(_batch(0)["video"], mesh)
  state = jax.jit(stage1.make_init_fn(c, spy))(video, jax.random.PRNGKey(0))
  jax.effects_barrier()
  generated = record["decoded"].reshape((-1,) + record["decoded"].shape[2:])
  for frame in record["d_s_init"]:  # Each init frame is a generated frame, none a real one.
    assert np.min(np.abs(generated - frame).reshape(len(generated), -1).max(1)) == 0
    assert np.min(np.abs(_batch(0)["video"][:, 1:] - frame).max(axis=(2, 3, 4))) > 0.1

  before = jax.device_get(state)
  steps = stage1._cached_steps(c, models, mesh, None)
  new, metrics, fake = jax.device_get(steps["adv"](state, video))
  _, k_win, k_frames = stage1_state.step_keys(before)
  start = int(stage1_state.window_start(k_win, 16, c.stage1.dt_window))
  window = fake[:, start:start + c.stage1.dt_window]
  frames = fake.reshape((-1,) + fake.shape[2:])[stage1_state.frame_indices(
      k_frames, fake, c.stage1.ds_num_frames)]
  g_t = lambda d_t: -float(np.mean(models.d_t.apply(d_t, window)[0]))  # noqa: E731
  g_s = lambda d_s: -float(np.mean(models.d_s.apply(d_s, frames)))  # noqa: E731
  assert float(metrics["g_t"]) == pytest.approx(g_t(new["d_t"]), rel=1e-4, abs=1e-5)
  assert float(metrics["g_s"]) == pytest.approx(g_s(new["d_s"]), rel=1e-4, abs=1e-5)
  assert abs(g_t(before["d_t"]) - g_t(new["d_t"])) > 1e-3  # So the old D would not pass.
  assert abs(g_s(before["d_s"]) - g_s(new["d_s"])) > 1e-3


def test_frames_for_the_spatial_discriminator_are_drawn_with_replacement():
  video = np.zeros((1, 2, 4, 4, 3), np.float32)  # 2 frames, 50 draws: repeats are certain.
  idx = np.asarray(stage1_state.frame_indices(jax.random.PRNGKey(0), video, 50))
  assert set(idx.tolist()) == {0, 1}


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
  z, mu, logvar = jax.jit(lambda v, k: stage1.encode(models.encoder, variables["encoder"], v[:, 1:],
                                                       k, v[:, 0]))(video, jax.random.PRNGKey(0))
  assert z.shape == mu.shape == logvar.shape == (2, c.stage1.z_dim)
  frames = jax.jit(lambda x0, z: stage1.decode(models.decoder, variables["decoder"], x0, z))(
      video[:, 0], mu)
  assert frames.shape == (2, 16, 32, 32, 3) and np.all(np.abs(frames) <= 1)


def test_best_checkpoint_is_selected_on_held_out_videos(shapes_data_dir, tmp_path, monkeypatch):
  """select='best': the last val_videos train videos are held out of training, scored every
  val_every steps (FVD of posterior-sampled reconstructions; cheap features stand in for I3D),
  and the best-scoring models are what restore_stage1 (hence stage 2 and sampling) returns."""
  from i2v_flax import data as data_lib
  from i2v_flax.evaluation import fvd as fvd_lib
  c = _config(4, reference=False)  # The trained_workdir fixture's compiled steps.
  c.data.data_dir = shapes_data_dir
  c.stage1.warmup_steps = 4  # Warm-up only: selection does not depend on the GAN phase.
  c.stage1.select, c.stage1.val_videos, c.stage1.val_every = "best", 4, 2
  monkeypatch.setattr(fvd_lib, "fvd_features", lambda v, batch_size=8: np.asarray(
      v, np.float64).reshape(len(v), 16, -1).mean(-1))
  measured, scripted = [], iter([5.0, 7.0])  # Lower is better: step 2 must win.
  real_score = validation.Validator.__call__
  monkeypatch.setattr(validation.Validator, "__call__",
                      lambda self, m: measured.append(real_score(self, m)) or next(scripted))
  wd = str(tmp_path)
  stage1.train_and_evaluate(c, wd)
  assert len(measured) == 2 and np.all(np.isfinite(measured)) and measured[0] != measured[1]
  assert validation.best_step(wd) == 2
  for split, ok in (("train[:-4]", lambda i: i < 12), ("train[-4:]", lambda i: i >= 12)):
    batch = next(data_lib.create_iterator(c.data, split, 4, with_metadata=True, repeat=False))
    assert all(ok(i) for i in batch["index"]), (split, batch["index"])
  config, best = stage1.restore_stage1(wd)  # config.json says select='best'.
  _, latest = stage1.restore_stage1(wd, select="latest")
  models = stage1.build_models(config)
  abstract = checkpoints.abstract_like(stage1._abstract_models(config, models),
                                       parallel.replicated(parallel.make_mesh()))
  mngr = ocp.CheckpointManager(os.path.join(wd, "checkpoints", "stage1"),
                               item_names=("models", "train"))
  step2 = checkpoints.restore_checkpoint(mngr, {"models": abstract}, step=2)["models"]
  mngr.close()
  _assert_trees_close(best["decoder"]["params"], step2["decoder"]["params"], atol=0)
  assert not np.allclose(jax.tree_util.tree_leaves(best["decoder"]["params"])[0],
                         jax.tree_util.tree_leaves(latest["decoder"]["params"])[0])


_EIGHT_DEVICES = r"""
import json, jax, numpy as np
from i2v_flax import config_lib, parallel
from i2v_flax.train import stage1
c = config_lib.resolve_epochs(config_lib.load_config("configs/shapes.py:tiny"))
c.stage1.update_order, c.stage1.r1_weighting = "d_first", "reference"
c.stage1.batch_size = 8
c.stage1.conv3d_impl = "native"  # Fewer ops than 'taps' -> faster SPMD compile; impl is orthogonal.
# The demo's x_t - x_0 encoder input and spatial z are per-sample (no cross-device term), but
# they change the fakes and with them D_T's near-ties (below): the seed was chosen for the
# plain encoder and the vector z.
c.stage1.enc_x0_diff = c.stage1.z_spatial = c.stage1.dec_local_style = False
# Seed 1: with seed 0 the step's D_T window holds a near-tie (a max-pool, say) where R1 moves by
# 1e-3 between 1 and 8 devices (other windows of the same clips agree to 1e-6); D's first Adam
# step turns that into sign flips and, scored by the updated D, into a different G gradient.
video_np = np.tanh(np.random.RandomState(1).randn(8, 17, 32, 32, 3)).astype(np.float32)
models = stage1.build_models(c)
init = jax.jit(stage1.make_init_fn(c, models))(video_np, jax.random.PRNGKey(0))
init = jax.device_get(init)
out = {}
for n in (1, 8):
  mesh = parallel.make_mesh(jax.devices()[:n])
  steps = stage1.make_steps(c, models, mesh, None)
  video = parallel.shard_batch(video_np, mesh)
  state = parallel.replicate(init, mesh)
  state, m, fake = steps["adv"](state, video)
  params = {k: state[k]["params"] for k in ("encoder", "decoder", "d_t", "d_s")}
  out[n] = (jax.device_get(m), jax.device_get(fake), jax.device_get(params))
m1, m8 = out[1][0], out[8][0]
diff = np.concatenate([np.abs(a - b).ravel() for a, b in zip(
    jax.tree_util.tree_leaves(out[1][2]), jax.tree_util.tree_leaves(out[8][2]))])
print(json.dumps({"metrics": {k: [float(m1[k]), float(m8[k])] for k in m1},
                  "fake": float(np.max(np.abs(out[1][1] - out[8][1]))),
                  "params_off": float(np.mean(diff > 0.01 * c.stage1.lr)),
                  "devices": jax.device_count()}))
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
  # Adam's first step moves every weight by ~+-lr, so rounding noise in ~zero gradients flips a
  # few (0.12 % measured) by 2 lr; a sharding bug (per-shard gradients, other frames or windows)
  # would move a large fraction.
  assert result["params_off"] < 5e-3, result


def test_bfloat16_compute_gives_finite_losses_and_float32_parameters():
  """compute_dtype='bfloat16' (for GPUs/TPUs; slower on CPU, benchmarks/README.md): the warm-up
  and adversarial steps run with finite losses, parameters and optimiser state stay float32."""
  c = config_lib.resolve_epochs(_config())
  c.compute_dtype = "bfloat16"
  mesh, models = parallel.make_mesh(), stage1.build_models(c)
  steps = stage1.make_steps(c, models, mesh, None)  # Not the shared cache: keep its fp32 steps.
  video = parallel.shard_batch(_batch(0)["video"], mesh)
  state = jax.jit(stage1.make_init_fn(c, models))(video, jax.random.PRNGKey(0))
  before = _params(state)
  for name in ("g_warmup", "adv"):
    state, metrics, _ = steps[name](state, video)
    metrics = jax.device_get(metrics)
    assert all(np.all(np.isfinite(v)) for v in metrics.values()), (name, metrics)
  assert 0.05 < float(metrics["l1"]) < 2.0
  after = _params(state)
  for x, y in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after)):
    assert y.dtype == np.float32
  assert any(np.any(x != y) for x, y in zip(jax.tree_util.tree_leaves(before),
                                            jax.tree_util.tree_leaves(after)))


@pytest.mark.parametrize("step_name", ["g_warmup", "adv"])
def test_microbatched_step_equals_the_whole_batch_step(step_name):
  """stage1.microbatches=2 accumulates the gradient over two halves of the batch (the adversarial
  step with D stepped first on all the fakes, and D_S scoring frames drawn across the batch),
  in a lax.scan and in one jitted call per microbatch: the update, the fakes and the logged
  terms equal the one-pass step's."""
  c = config_lib.resolve_epochs(_config())
  c.stage1.batch_size = 4
  # The accumulation is generic over the parameter tree; the budgets below are calibrated on the
  # paper's vector z (64 numbers). With the demo's spatial z the 4x4 head block holds more gradient
  # entries at rounding level (behind the normalisations): 0.56 % of weights flip their first Adam
  # step between one pass and two microbatches, against 0.13 %, while the g_warmup grad norms agree
  # to 2e-5; with the demo's z_dim 128 'adv' logs a feature-matching term 1.0e-4 apart (rel).
  c.stage1.z_spatial = c.stage1.dec_local_style = False
  c.stage1.z_dim = 64
  mesh, models = parallel.make_mesh(), stage1.build_models(c)
  video = parallel.shard_batch(_batch(3, b=4)["video"], mesh)
  state = jax.jit(stage1.make_init_fn(c, models))(video, jax.random.PRNGKey(0))
  results = []
  for micro, loop in ((1, "scan"), (2, "scan"), (2, "host")):
    c.stage1.microbatches, c.stage1.microbatch_loop = micro, loop
    step = stage1.make_steps(c, models, mesh, None)[step_name]
    results.append(jax.device_get(step(jax.tree.map(lambda a: a.copy(), state), video)))
  one, m_one, fake_one = results[0]
  for loop, (two, m_two, fake_two) in zip(("scan", "host"), results[1:]):
    np.testing.assert_allclose(fake_two, fake_one, atol=1e-4, err_msg=loop)  # Conv kernels: ~1e-5.
    assert set(m_two) == set(m_one)
    for name in m_one:
      rel = 1e-3 if name.endswith("grad_norm") else 1e-4
      assert float(m_two[name]) == pytest.approx(float(m_one[name]), rel=rel, abs=1e-5), (loop,
                                                                                         name)
    # Adam's first step moves every weight by ~+-lr: rounding noise flips only near-zero
    # gradients; a wrong accumulation (a missing half, a double-counted D_S term) moves most.
    a, b = jax.tree_util.tree_leaves(_params(one)), jax.tree_util.tree_leaves(_params(two))
    # 'adv' also scores G with the D that just took its first Adam step, whose own near-tie
    # flips move more G weights: 0.67 % on a 2026-12-04 CPU at fe03bdd (the code this budget was
    # set on passed elsewhere), so 1 %; still far below a wrong accumulation's "most".
    off = sum(int(np.sum(np.abs(x - y) > 1e-6)) for x, y in zip(a, b)) / sum(x.size for x in a)
    assert off < (5e-3 if step_name == "g_warmup" else 1e-2), (loop, off)
    spectral = lambda s: jax.tree_util.tree_leaves(s["decoder"].get("spectral", {}))  # noqa: E731
    for x, y in zip(spectral(one), spectral(two)):
      np.testing.assert_allclose(x, y, atol=1e-6, err_msg=loop)
  assert int(results[2][0]["step"]) == int(one["step"]) == 1


def test_microbatch_loop_is_python_on_cpu_and_checked():
  from i2v_flax import errors
  from i2v_flax.train import microbatch
  assert jax.default_backend() == "cpu"
  assert microbatch.resolve_loop("auto") == "host"  # XLA-CPU: loop bodies' convs are slow.
  assert microbatch.resolve_loop("scan") == "scan"
  with pytest.raises(errors.InvalidInput, match="microbatch_loop"):
    microbatch.resolve_loop("python")


def test_microbatches_must_split_the_batch_evenly():
  from i2v_flax import config_check, errors
  c = _config()
  c.stage1.batch_size, c.stage1.microbatches = 4, 3
  with pytest.raises(errors.InvalidInput, match="microbatches"):
    config_check.check_config(c, device_count=1)
  c.stage1.microbatches = 2
  config_check.check_config(c, device_count=2)
  with pytest.raises(errors.InvalidInput, match="microbatches"):
    config_check.check_config(c, device_count=4)
