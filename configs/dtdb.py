"""DTDB dynamic textures (user's manual_dir), 128x128, one texture per model: SPEC §3-§4.

Arg: the texture (fire, vegetation, waterfall, clouds), optionally with 'tiny' and/or 'control'
(control = global motion direction, which the reference never shipped).
Usage: --config=configs/dtdb.py:fire, --config=configs/dtdb.py:clouds,control,tiny
"""

from i2v_flax import config_lib

# The reference's epochs, in clips per train video: (stage 1, stage 2).
EPOCH_CLIPS_PER_VIDEO = {"clouds": (100, 50), "fire": (80, 40), "vegetation": (55, 40),
                         "waterfall": (120, 30)}


def get_config(arg=None):
  parts = [p for p in (arg or "").split(",") if p]
  control = "control" in parts
  variant, tiny = config_lib.parse_arg(",".join(p for p in parts if p != "control"))
  texture = variant or "fire"
  if texture not in config_lib.DTDB_TEXTURES:
    raise ValueError(
        f"Unknown DTDB texture {texture!r}; choose one of {config_lib.DTDB_TEXTURES}, "
        "e.g. --config=configs/dtdb.py:fire")
  c = config_lib.base_config()
  c.data.name = "dtdb"  # Videos read from --config.data.manual_dir/<texture>.
  c.data.builder_config = texture  # Which texture.
  c.data.resolution = 128  # 128^2 frames.
  c.data.brightness = c.data.contrast = c.data.saturation = 0.3  # Colour jitter 0.3/0.3/0.3.
  c.data.hue = 0.15  # Hue jitter 0.15.
  c.data.resize_crop = True  # Resize to 144 then random crop 128.
  c.data.max_start_frame = -1  # Train clips start anywhere in a video (reference).
  c.data.shuffle_buffer = 256  # Whole videos.
  c.eval.num_videos = 0  # All eval videos of the texture...
  c.eval.clips_per_video = 5  # ...5 copies of each start-0 clip (reference protocol).
  c.stage1.enc_widths = (64, 64, 128, 256, 512)  # SPEC §3.1 dtdb row.
  c.stage1.enc_stride_s = (2, 2, 2, 2)  # 128 / 2 (stem) / 16 = 4.
  c.stage1.dec_nf = 32  # Decoder nf.
  c.stage1.dec_up_s = (2, 2, 2, 2, 2)  # g4 upsamples x(1,2,2) at 128^2.
  c.stage1.dt_stride_s = (1, 2, 2, 2)  # D_T spatial strides at 128^2.
  c.stage1.batch_size = 7  # SPEC §3.5.
  c.stage1.num_epochs = 60  # SPEC §3.5.
  c.stage1.epoch_clips_per_video = EPOCH_CLIPS_PER_VIDEO[texture][0]  # Reference: train videos x this.
  c.stage1.val_videos = 16  # Held out of the (small) train split for checkpoint selection.
  c.stage2.epoch_clips_per_video = EPOCH_CLIPS_PER_VIDEO[texture][1]  # Reference: train videos x this.
  c.stage1.w_kl = 1e-6  # beta.
  c.stage1.w_rec = 10.0  # L1 weight.
  c.stage1.w_percep = 30.0  # LPIPS weight.
  c.stage2.cond_dim = 128  # 128-d x_0 embedding.
  c.stage2.decay_every_epochs = 6  # Step decay every 6 epochs for 128^2 data.
  if control:
    c.data.control = True  # Emit eta = global motion direction.
    c.stage2.control = "continuous"  # Continuous eta.
    c.stage2.eta_dim = 2  # Unit 2-vector.
  return config_lib.shrink_to_tiny(c) if tiny else c
