"""Landscape sky time-lapse (user's manual_dir), 128x128: SPEC §3-§4.

Args: 'tiny' shrinks widths/batch/steps for tests.
"""

from i2v_flax import config_lib


def get_config(arg=None):
  variant, tiny = config_lib.parse_arg(arg)
  if variant is not None:
    raise ValueError(f"Unknown landscape variant {variant!r}; only 'tiny' is accepted.")
  c = config_lib.base_config()
  c.data.name = "landscape"  # Videos read from --config.data.manual_dir.
  c.data.resolution = 128  # 128^2 frames.
  c.data.brightness = c.data.contrast = c.data.saturation = 0.3  # Colour jitter 0.3/0.3/0.3.
  c.data.hue = 0.15  # Hue jitter 0.15.
  c.data.resize_crop = True  # Resize to 144 then random crop 128.
  c.data.max_start_frame = -1  # Train clips start anywhere in a video (reference).
  c.data.shuffle_buffer = 512  # Whole videos (tens of MB each when encoded).
  c.data.stage2_jitter = False  # The reference's stage 2 trains without colour jitter.
  c.eval.num_videos = 0  # All 153 test videos (sky_test)...
  c.eval.clips_per_video = 6  # ...6 clips each...
  c.eval.random_start = True  # ...from seeded random starts (reference protocol).
  c.stage1.enc_widths = (64, 128, 128, 256, 512)  # SPEC §3.1 landscape row.
  c.stage1.enc_stride_s = (2, 2, 2, 2)  # 128 / 2 (stem) / 16 = 4.
  c.stage1.dec_nf = 32  # Decoder nf.
  c.stage1.dec_up_s = (2, 2, 2, 2, 2)  # g4 upsamples x(1,2,2) at 128^2.
  c.stage1.dt_stride_s = (1, 2, 2, 2)  # D_T spatial strides at 128^2.
  c.stage1.batch_size = 7  # SPEC §3.5.
  c.stage1.num_epochs = 100  # SPEC §3.5.
  c.stage1.epoch_clips = 10740  # The reference's stage-1 epoch: 1534 steps at batch 7.
  c.stage1.val_videos = 64  # Held out of the train split for checkpoint selection.
  c.stage2.epoch_clips = 10740  # The reference's stage-2 epoch: 215 steps at batch 50.
  c.stage1.w_kl = 1e-6  # beta.
  c.stage1.w_rec = 20.0  # L1 weight.
  c.stage1.w_percep = 30.0  # LPIPS weight.
  c.stage2.cond_dim = 128  # 128-d x_0 embedding.
  c.stage2.decay_every_epochs = 6  # Step decay every 6 epochs for 128^2 data.
  return config_lib.shrink_to_tiny(c) if tiny else c
