"""Stage-2 training end to end on a tiny workdir: NLL goes down, resume continues, samples are
written, restore gives an invertible flow, and wrong/missing stage-1 checkpoints fail clearly."""

import os
import shutil

import numpy as np
import pytest

from i2v_flax import config_lib
from i2v_flax import data as data_lib
from i2v_flax.models import cinn
from i2v_flax.train import stage1, stage2
from i2v_flax.train.stage2_steps import optional_eta


def _tiny(shapes_data_dir):
  c = config_lib.load_config("configs/shapes.py:tiny")
  c.data.data_dir = shapes_data_dir
  c.stage2.sample_every = 1000  # One GIF, at the last step.
  c.stage2.checkpoint_every = 1000
  c.stage2.log_every = 1000
  c.stage2.decay_every_epochs = 100  # No lr decay within the test's few steps.
  return c


def _iter(config):
  return lambda start: data_lib.create_iterator(config.data, "train", config.stage2.batch_size,
                                                seed=start)


def _fixed_nll(workdir, config, batch):
  """NLL of the restored flow on fixed clips (encoder mean, so only the flow changes)."""
  _, s1 = stage1.restore_stage1(workdir)
  cfg, v = stage2.restore_stage2(workdir)
  flow, embedder = stage2.build_flow(cfg)
  enc = stage1.build_models(cfg).encoder
  _, mu, _ = stage1.encode(enc, s1["encoder"], batch["video"][:, 1:], None, batch["video"][:, 0])
  cond = stage2.condition(embedder, v["embedder"], batch["video"][:, 0],
                          optional_eta(cfg, batch["eta"]))
  nu, logdet = stage2.flow_inverse(flow, v["flow"], mu, cond)
  z = stage2.flow_forward(flow, v["flow"], nu, cond)
  np.testing.assert_allclose(z, mu, atol=1e-4)  # Restored flow is exactly invertible.
  return float(stage2.nll_metrics(nu, logdet, mu)["nll"]), v


def test_stage2_trains_resumes_samples_and_restores(trained_workdir, shapes_data_dir, tmp_path):
  """`trained_workdir` (conftest) ran stage1/stage2.train_and_evaluate for the tiny config."""
  workdir = str(tmp_path / "run")
  shutil.copytree(trained_workdir, workdir)
  config = _tiny(shapes_data_dir)
  start = config_lib.steps(config.stage2)
  batch = next(data_lib.create_iterator(config.data, "train", 16, seed=1, shuffle=False))
  nll_start, v_start = _fixed_nll(workdir, config, batch)
  assert v_start["step"] == start
  assert os.path.exists(os.path.join(workdir, "samples", f"stage2_{start}.gif"))

  config.stage2.lr = 3e-3
  config.stage2.num_train_steps = 30  # Resume from the fixture's last step and continue to 30.
  sample_batch = next(data_lib.create_iterator(config.data, "test", 4, shuffle=False))
  state = stage2.train(config, workdir, _iter(config), sample_batch)
  assert int(state["step"]) == 30  # Continued from the checkpoint, not restarted.
  nll_30, v30 = _fixed_nll(workdir, config, batch)
  assert v30["step"] == 30
  assert nll_30 < nll_start - 0.5, (nll_start, nll_30)
  assert os.path.getsize(os.path.join(workdir, "samples", "stage2_30.gif")) > 1000
  for i in range(config.stage2.num_blocks):  # The permutations travel with the checkpoint.
    np.testing.assert_array_equal(v30["flow"][cinn.CONSTS][f"block_{i}"]["perm"],
                                  cinn.block_permutation(config.seed, i, config.stage1.z_dim))

  config.stage2.num_blocks = 3  # A different architecture must not resume into this workdir.
  with pytest.raises(ValueError, match="stage2.num_blocks"):
    stage2.train(config, workdir, _iter(config))


def test_stage1_mismatch_and_missing_errors(trained_workdir, shapes_data_dir, tmp_path):
  config = _tiny(shapes_data_dir)
  trained_z_dim = config.stage1.z_dim  # The fixture's (the demo config's).
  config.stage1.z_dim = 32
  config.stage2.stage1_workdir = trained_workdir
  with pytest.raises(ValueError, match=rf"stage1.z_dim={trained_z_dim}.*stage1.z_dim=32.*Fix"):
    stage2.train(config, str(tmp_path / "a"), _iter(config))
  config = _tiny(shapes_data_dir)
  config.data.resolution = 64
  config.stage2.stage1_workdir = trained_workdir
  with pytest.raises(ValueError, match=r"data.resolution=32.*data.resolution=64"):
    stage2.train(config, str(tmp_path / "b"), _iter(config))
  config = _tiny(shapes_data_dir)
  with pytest.raises(FileNotFoundError, match="train stage 1"):
    stage2.train(config, str(tmp_path / "empty"), _iter(config))
  with pytest.raises(FileNotFoundError, match="Train stage 2 first"):
    stage2.restore_stage2(str(tmp_path / "empty"), config)
