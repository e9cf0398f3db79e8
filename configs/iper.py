"""iPER human motion (user's manual_dir, 256^2 frames resized to 64^2): SPEC §3-§4.

Args: 'tiny' shrinks widths/batch/steps for tests.
"""

from i2v_flax import config_lib


def get_config(arg=None):
  variant, tiny = config_lib.parse_arg(arg)
  if variant is not None:
    raise ValueError(f"Unknown iper variant {variant!r}; only 'tiny' is accepted.")
  c = config_lib.base_config()
  c.data.name = "iper"  # Videos read from --config.data.manual_dir.
  c.data.resolution = 64  # Frames resized from 256^2.
  c.data.brightness = c.data.contrast = c.data.saturation = 0.2  # Colour jitter 0.2 (SPEC §7).
  c.data.hue = 0.0  # No hue jitter.
  c.data.max_start_frame = -1  # Train clips start anywhere in a video (reference).
  c.data.shuffle_buffer = 256  # Whole videos (iPER has ~200 train videos).
  c.eval.num_videos = 0  # All test videos (the authors' test.txt)...
  c.eval.num_clips = 1000  # ...1000 clips cycling over them...
  c.eval.random_start = True  # ...from seeded random starts (reference protocol).
  c.stage1.num_epochs = 100  # SPEC §3.5.
  c.stage1.epoch_clips = 12420  # The reference's stage-1 epoch: 1242 steps at batch 10.
  c.stage1.val_videos = 16  # Held out of the (small) train split for checkpoint selection.
  c.stage2.epoch_clips = 16560  # The reference's stage-2 epoch: 332 steps at batch 50.
  c.stage1.w_kl = 1e-4  # beta.
  c.stage1.w_percep = 40.0  # LPIPS weight.
  c.stage2.cond_dim = 128  # 128-d x_0 embedding for non-bair data.
  return config_lib.shrink_to_tiny(c) if tiny else c
