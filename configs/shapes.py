"""The procedural `shapes` dataset, sized so the whole demo trains on a 2-core laptop CPU.

One bouncing disc or square on a static texture (`res32_single`; the original harder scene of
1-3 objects on a drifting texture is the `res32` builder config). 32x32 frames, small
widths, no LPIPS (VGG-16 would cost more than the whole model at this size: set
--config.stage1.w_percep to use it). Control is on: eta = object 0's final position and the
background drift direction.
Args: 'tiny' shrinks widths/batch/steps for tests; 'res64' trains at 64x64.
"""

from i2v_flax import config_lib


def get_config(arg=None):
  variant, tiny = config_lib.parse_arg(arg)
  c = config_lib.base_config()
  d, s1, s2 = c.data, c.stage1, c.stage2
  d.name = "shapes"  # Procedural i2v_shapes TFDS builder, generated offline.
  d.builder_config = "res32_single"  # 32x32, 24 frames, one large object, static texture.
  d.resolution = 32  # Model resolution.
  d.max_start_frame = 7  # 24-frame videos: starts in [0, 7].
  d.control = True  # Emit eta (object-0 final position, drift direction).
  d.flip = False  # No flip: it would contradict eta.
  d.brightness = d.contrast = d.saturation = 0.0  # No colour jitter: colours identify objects.
  d.shuffle_buffer = 1024  # Clips in the shuffle buffer.

  # Stage 1 is sized for ~13 minutes on 2 CPU cores (see benchmarks/stage1_step.py): thin
  # networks, small batch, a high lr, no adversarial phase (raise num_train_steps to get one).
  s1.enc_widths = (8, 16, 32, 32, 32)  # Small 3-D ResNet-18.
  s1.enc_stride_s = (2, 2, 1, 1)  # 32 / 2 (stem) / 4 = 4; early strides are cheaper.
  s1.enc_x0_diff = True  # Encoder also sees x_t - x_0: z is used from step ~800, not ~1600 (README).
  s1.z_dim = 128  # 8 latents per cell of the 4x4 map, not 4: +0.3 dB on four runs (README).
  s1.z_spatial = True  # z as a 4x4x(z_dim/16) map (conv heads, conv start): +0.2 dB (README).
  s1.dec_local_style = True  # ADAIN also per pixel from that map: z used from step ~400 (README).
  s1.dec_nf = 6  # Decoder widths 96..6.
  s1.dec_up_s = (2, 2, 1, 1, 2)  # 4 * 8 = 32; only g4 runs at full resolution (cheap on CPU).
  s1.dec_coords = True  # (t, y, x) channels into every decoder block (README: +1.8 dB oracle).
  s1.spade_hidden = 16  # SPADE hidden width.
  s1.dt_widths = (8, 8, 16, 32, 32)  # Small D_T.
  s1.dt_stride_s = (1, 1, 1, 2)  # 32 / 4 (stem + pool) / 2 = 4.
  s1.ds_width = 8  # Small D_S.
  s1.ds_num_frames = 16  # Frames per D_S batch.
  s1.w_percep = 0.0  # LPIPS off on CPU (see docstring).
  s1.w_kl = 1e-5  # beta.
  s1.lr = 1e-3  # Much faster than the reference's 2e-4 for a short CPU run.
  s1.batch_size = 4  # Global batch.
  s1.steps_per_epoch = 1000  # 4000 train videos / 4.
  s1.num_train_steps = 2400  # About 12 minutes on 2 idle CPU cores.
  s1.lr_cooldown_steps = 1200  # Cosine lr to 0 over the second half (README: constant lr plateaus).
  s1.warmup_steps = 2400  # No GAN in the short CPU run: at lr 1e-3 it cut held-out PSNR 18.3 -> 13.9 dB.
  s1.log_every = 25  # Scalars every N steps.
  # The demo as tuned before issue 14 (its run has no GAN phase, so only the first two matter
  # there): stage 1's last checkpoint, no validation hold-out; and, should the GAN phase be
  # switched on, R1 weighted w_gp per sample and G stepped against the old D.
  s1.select = "latest"  # Reference: 'best'.
  s1.val_videos = 0  # Reference setting: a hold-out (e.g. 64) for 'best'.
  s1.r1_weighting = "per_sample"  # Reference: 'reference' (w_gp / B^2).
  s1.update_order = "g_first"  # Reference: 'd_first'.
  s1.sample_every = 400  # GIF grid + held-out PSNR every N steps.
  s1.checkpoint_every = 400  # Checkpoint every N steps.

  # Stage 2 is sized for ~3.5 minutes on 2 CPU cores: the frozen stage-1 encoder forward is most
  # of a step (benchmarks/stage2_step.py), so the batch is halved and the flow kept small; a
  # high lr halved every 3 epochs. 10 epochs, not 4: the NLL still fell at 4 epochs, and with
  # eta given the final-position error fell from 5.5 to 3.4 px (README).
  s2.num_blocks = 8  # Flow blocks.
  s2.hidden = 256  # s/t MLP width; 128 lost control once z had 128 dims (README).
  s2.cond_dim = 32  # x_0 embedding.
  s2.embedder_widths = (16, 32, 64, 64)  # 2-D ResNet embedder widths.
  s2.control = "continuous"  # eta = (x, y) of object 0 at the last frame + drift direction.
  s2.eta_dim = 4  # 2 + 2.
  s2.eta_dropout = 0.25  # Optional control: samples without eta go several ways; 0.25 follows eta better than 0.5 (README).
  s2.lr = 1e-3  # 100x the reference's 1e-5 for a short CPU run (amsgrad, clamp 2 keep it stable).
  s2.amsgrad = "optax"  # As tuned before issue 14 (optax's corrected max); reference: 'torch'.
  s2.batch_size = 25  # Global batch.
  s2.steps_per_epoch = 160  # 4000 / 25.
  s2.num_train_steps = 1600  # 10 epochs.
  s2.decay_every_epochs = 3  # lr halves at steps 480, 960, 1440.
  s2.log_every = 50  # Scalars every N steps.
  s2.sample_every = 800  # GIF every N steps.
  s2.checkpoint_every = 400  # Checkpoint every N steps.

  c.eval.metrics = ("shapes", "fvd", "lpips")  # Ground-truth shapes metrics + FVD + LPIPS.
  c.report.num_videos = 256  # The report scores the model on the test videos (demo_eval.py).
  c.eval.batch_size = 64  # 32x32 videos: bigger inference chunks (1024 samples: 10 s vs 14 s).
  if variant == "res64":
    d.builder_config = "res64"  # 64x64 videos.
    d.resolution = 64  # Model resolution.
    s1.enc_stride_s = (1, 2, 2, 2)  # 64 / 2 / 8 = 4.
    s1.dec_up_s = (2, 2, 2, 2, 1)  # 4 * 16 = 64.
    s1.dt_stride_s = (1, 1, 2, 2)  # 64 / 4 / 4 = 4.
  elif variant is not None:
    raise ValueError(f"Unknown shapes variant {variant!r}; use 'res64' and/or 'tiny'.")
  return config_lib.shrink_to_tiny(c) if tiny else c
