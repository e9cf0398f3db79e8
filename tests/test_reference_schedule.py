"""Every paper config's training schedule against the reference's (issue 14): epochs in steps,
warm-up, R1 strength, update order, stage-2 AMSGrad and checkpoint selection; and the demo's
explicit pre-issue-14 settings. Pure config arithmetic: no model is built."""

import pytest

from i2v_flax import config_lib
from i2v_flax.errors import InvalidInput
from i2v_flax.train import validation

# (config, train videos or None) -> (stage-1 steps/epoch, stage-2 steps/epoch, R1 weight).
# The reference: stage 1 floor(clips / batch) (drop_last), stage 2 ceil(clips / 50).
TABLE = {
    ("configs/bair.py", None): (4326, 866, 10 / 100),  # 43,264 clips at 10 / 50.
    ("configs/iper.py", None): (1242, 332, 10 / 100),  # 12,420 / 10; 16,560 / 50.
    ("configs/landscape.py", None): (1534, 215, 10 / 49),  # 10,740 / 7; 10,740 / 50.
    ("configs/dtdb.py:clouds", 30): (428, 30, 10 / 49),  # 30 x 100 / 7; 30 x 50 / 50.
    ("configs/dtdb.py:fire", 30): (342, 24, 10 / 49),  # 30 x 80; 30 x 40.
    ("configs/dtdb.py:vegetation", 30): (235, 24, 10 / 49),  # 30 x 55; 30 x 40.
    ("configs/dtdb.py:waterfall", 30): (514, 18, 10 / 49),  # 30 x 120; 30 x 30.
}


@pytest.mark.parametrize("spec,videos", list(TABLE))
def test_paper_configs_follow_the_reference_schedule(spec, videos):
  s1_steps, s2_steps, r1 = TABLE[(spec, videos)]
  config = config_lib.resolve_epochs(config_lib.load_config(spec), videos)
  s1, s2 = config.stage1, config.stage2
  assert (s1.steps_per_epoch, s2.steps_per_epoch) == (s1_steps, s2_steps)
  assert s1.warmup_steps == s1_steps  # One epoch without GAN/FM terms.
  assert config_lib.steps(s1) == s1.num_epochs * s1_steps
  assert config_lib.r1_weight(s1) == pytest.approx(r1)
  assert s1.update_order == "d_first" and s2.amsgrad == "torch" and s1.select == "best"
  assert s1.lr_cooldown_steps == 0 and not s1.enc_x0_diff  # Demo departures stay off.
  assert not (s1.z_spatial or s1.dec_local_style or s1.dec_coords) and s1.dec_output == "rgb"
  assert s1.val_metric == "fvd" and s1.val_videos > 0


def test_a_per_video_epoch_needs_the_video_count():
  config = config_lib.load_config("configs/dtdb.py:fire")
  with pytest.raises(InvalidInput, match="train videos"):
    config_lib.resolve_epochs(config)
  config.stage1.steps_per_epoch = 7  # An explicit number always wins.
  config.stage2.steps_per_epoch = 3
  assert config_lib.resolve_epochs(config).stage1.warmup_steps == 7


def test_demo_keeps_its_tuned_settings_one_line_from_the_reference():
  demo = config_lib.resolve_epochs(config_lib.load_config("configs/shapes.py"))
  s1, s2 = demo.stage1, demo.stage2
  assert (s1.steps_per_epoch, s1.warmup_steps, s2.steps_per_epoch) == (1000, 2400, 160)
  assert (s1.select, s1.val_videos, s1.update_order, s2.amsgrad) == (
      "latest", 0, "g_first", "optax")
  assert config_lib.r1_weight(s1) == s1.w_gp == 10.0  # 'per_sample'.
  assert validation.splits(demo) == ("train", None)  # No hold-out: trains on every video.
  s1.select = "best"
  s1.val_videos = 64
  assert validation.splits(demo) == ("train[:-64]", "train[-64:]")
  with pytest.raises(InvalidInput, match="quarter"):
    validation.check_holdout(demo, 200)
