"""One place that defines every config field, so dataset configs only state what differs.

The per-dataset files in `configs/` call `base_config()` and override the numbers of SPEC §3-§4.
`shrink_to_tiny()` turns any of them into a config that runs a few steps on a laptop CPU in
tests. Every field carries a one-line comment; `describe()` of a field is its comment.
"""

from __future__ import annotations

import copy

import ml_collections

from i2v_flax import errors

KNOWN_DATASETS = ("shapes", "bair", "iper", "landscape", "dtdb")
DTDB_TEXTURES = ("fire", "vegetation", "waterfall", "clouds")


def base_config() -> ml_collections.ConfigDict:
  """The bair-sized defaults; dataset configs override what differs."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # Global seed: parameter init, data order, flow permutations, sampling.
  c.compute_dtype = "float32"  # 'float32' or 'bfloat16' compute for the big convolutions; params stay float32.

  # ---------------------------------------------------------------- data
  d = c.data = ml_collections.ConfigDict()
  d.name = "bair"  # Dataset: one of shapes, bair, iper, landscape, dtdb.
  d.builder_config = ""  # TFDS builder config (e.g. 'res64' for shapes, 'fire' for dtdb); '' = default.
  d.data_dir = ml_collections.FieldReference(None, field_type=str)  # TFDS data_dir; None = TFDS default (~/tensorflow_datasets).
  d.manual_dir = ml_collections.FieldReference(None, field_type=str)  # Folder with the user's downloaded videos (iper, landscape, dtdb).
  d.resolution = 64  # Frame height and width fed to the model.
  d.clip_length = 17  # Frames per clip: x_0 plus 16 frames to predict.
  d.max_start_frame = 13  # Train clips start uniformly in [0, max_start_frame] (clamped to the video length; -1 = anywhere); test clips at 0.
  d.control = False  # Whether to emit the control variable `eta` with each clip.
  d.flip = True  # Random horizontal flip with p=0.5 (forced off when control is on).
  d.brightness = 0.1  # Colour-jitter brightness strength (one draw per clip).
  d.contrast = 0.1  # Colour-jitter contrast strength.
  d.saturation = 0.1  # Colour-jitter saturation strength.
  d.hue = 0.0  # Colour-jitter hue strength.
  d.jitter_style = "kornia"  # 'kornia' (the authors' kornia 0.5: additive brightness, multiplicative contrast, HSV saturation, hue; random order) or 'torchvision' (fixed order, fuses into one affine map: faster).
  d.stage2_jitter = True  # Colour jitter on stage 2's training clips too (landscape: False, as the reference's stage-2 config).
  d.resize_crop = False  # Resize to resolution+16 then random-crop to resolution (centre crop at test).
  d.shuffle_buffer = 2048  # tf.data shuffle buffer (clips) for training.
  d.num_parallel_calls = -1  # tf.data parallelism; -1 = AUTOTUNE.

  # ---------------------------------------------------------------- stage 1
  s1 = c.stage1 = ml_collections.ConfigDict()
  s1.z_dim = 64  # Dimension of the video latent z.
  s1.enc_widths = (64, 128, 256, 512, 512)  # Encoder stem + 4 stage widths (3-D ResNet-18).
  s1.enc_stride_t = (1, 2, 2, 2)  # Encoder temporal stride of each stage's first block (stem strides 2).
  s1.enc_stride_s = (1, 2, 2, 2)  # Encoder spatial stride of each stage's first block (stem strides 2).
  s1.enc_x0_diff = False  # Demo departure: the encoder also sees x_t - x_0 (README).
  s1.z_spatial = False  # Demo departure: z as a 4x4x(z_dim/16) map, 3x3 conv heads (README).
  s1.dec_local_style = False  # Demo departure (needs z_spatial): ADAIN also per pixel from z's map.
  s1.dec_nf = 64  # Decoder base width nf (blocks use 16nf..nf).
  s1.dec_up_t = (2, 2, 2, 2, 1)  # Decoder temporal upsampling before g0..g4 (product = 16 frames).
  s1.dec_up_s = (2, 2, 2, 2, 1)  # Decoder spatial upsampling before g0..g4 (4 * product = resolution).
  s1.dec_coords = False  # Demo departure: (t, y, x) channels into every decoder block (README).
  s1.dec_output = "rgb"  # 'rgb' (reference), 'blend' (mask-mix with x_0), 'warp' (moved x_0).
  s1.spade_hidden = 128  # Width of SPADE's hidden 2-D conv on x_0.
  s1.spectral_norm = True  # Spectral norm on decoder convs and discriminators (one power iteration per step).
  s1.dt_widths = (64, 64, 128, 256, 512)  # Temporal discriminator stem + 4 stage widths.
  s1.dt_stride_s = (1, 1, 2, 2)  # D_T spatial stride per stage (temporal stride is 2 everywhere).
  s1.dt_window = 12  # D_T sees a random window of this many consecutive frames.
  s1.ds_num_frames = 20  # D_S sees this many frames drawn from the batch.
  s1.ds_width = 64  # D_S first-layer width (then x2, x4, x8).
  s1.w_rec = 10.0  # Weight of the reconstruction loss.
  s1.w_rec_unmixed = 0.0  # dec_output blend/warp: same loss on the frames before mixing, x w_rec.
  s1.rec_loss = "l1"  # Reconstruction loss: 'l1' (reference) or 'l2' (mean squared error; tried for the demo, not used: README).
  s1.w_percep = 30.0  # Weight of the LPIPS-VGG perceptual loss (0 = no VGG weights needed).
  s1.w_kl = 1e-5  # beta: weight of the KL term.
  s1.w_t = 1.0  # Weight of the temporal-discriminator generator term.
  s1.w_fm = 10.0  # Weight of D_T feature matching.
  s1.w_gp = 10.0  # The reference's gradient-penalty weight on D_T (see r1_weighting).
  s1.r1_weighting = "reference"  # R1 is per sample; 'reference': weighted w_gp/B^2 (the authors' strength: 0.1 at batch 10), 'per_sample': weighted w_gp (100x stronger at batch 10).
  s1.update_order = "d_first"  # 'd_first' (reference): D_T, D_S step on the fakes, then G's GAN/FM terms use the updated D; 'g_first': G against the old D.
  s1.lr = 2e-4  # Adam learning rate (generator and both discriminators).
  s1.b1 = 0.5  # Adam beta1.
  s1.b2 = 0.9  # Adam beta2.
  s1.weight_decay = 1e-5  # Coupled L2 weight decay (torch Adam semantics).
  s1.lr_decay_per_epoch = 0.98  # Exponential learning-rate decay factor per epoch.
  s1.lr_cooldown_steps = 0  # Demo departure: anneal the lr to 0 over the last N steps (cosine).
  s1.batch_size = 10  # Global batch size (divisible by the number of devices).
  s1.num_epochs = 55  # Training length in epochs.
  s1.epoch_clips = 43264  # Clips per epoch (reference: bair's 43,264 train videos); lr decay, warm-up and num_epochs count epochs.
  s1.epoch_clips_per_video = 0  # > 0: an epoch is (train videos x this) clips, counted from the prepared split at run time (dtdb).
  s1.drop_last = True  # Steps per epoch = floor(clips / batch) (the reference's stage-1 loader drops the last partial batch).
  s1.steps_per_epoch = -1  # > 0 overrides the epoch length in steps; -1 derives it from epoch_clips.
  s1.num_train_steps = -1  # Overrides num_epochs * steps_per_epoch when > 0.
  s1.warmup_steps = -1  # No GAN/FM terms and no D updates before this step; -1 = one epoch (reference).
  s1.select = "best"  # Stage-1 checkpoint that stage 2, evaluation and sampling use: 'best' (validation metric; latest if none) or 'latest'.
  s1.val_metric = "fvd"  # Validation metric for 'best': 'fvd' (I3D, of posterior-sampled reconstructions, as the reference's best_PFVD) or 'psnr' (posterior-mean reconstruction PSNR, cheap).
  s1.val_videos = 256  # Last N videos of the train split held out from stage 1 for validation (0: no validation).
  s1.val_every = -1  # Validate every N steps; -1 = once per epoch (reference).
  s1.log_every = 50  # Scalars to TensorBoard every N steps.
  s1.sample_every = 1000  # GIF grid [input | reconstruction | prior sample] every N steps.
  s1.checkpoint_every = 1000  # Checkpoint interval in steps.
  s1.keep_checkpoints = 3  # How many checkpoints to keep.
  # Gradient accumulation: the step runs batch_size / microbatches videos at a time (the same
  # update, exactly; the adversarial step then runs the generator forward twice). For a batch
  # whose activations do not fit in memory, e.g. bair batch 10 on a 24 GB CPU machine.
  s1.microbatches = 1
  s1.microbatch_loop = "auto"  # 'scan' (one jitted step), 'host' (one jitted call per microbatch: XLA-CPU runs a loop body's convs ~7x slower) or 'auto' (host on CPU, scan elsewhere).
  s1.remat = False  # Recompute decoder blocks in the backward pass (for accelerator memory; ~15 % more FLOPs).
  s1.conv3d_impl = "auto"  # 'native', 'taps', 'fast' (custom-VJP convs, models/fast_conv.py) or 'auto' (fast on CPU, native elsewhere).

  # ---------------------------------------------------------------- stage 2
  s2 = c.stage2 = ml_collections.ConfigDict()
  s2.stage1_workdir = ml_collections.FieldReference(None, field_type=str)  # Stage-1 workdir; None = the run's own workdir.
  s2.num_blocks = 20  # Flow blocks (ActNorm, LeakyReLU, double coupling, permutation).
  s2.hidden = 512  # Width of the s/t MLPs.
  s2.num_hidden_layers = 2  # Hidden Dense(512->512) layers in each s/t MLP.
  s2.clamp = 2.0  # Soft clamp of the coupling log-scale; None reproduces the reference.
  s2.exact_leaky_logdet = True  # Count the LeakyReLU in the flow logdet; False = the reference's logdet (converted models).
  s2.leaky_slope = 0.9  # Slope of the invertible LeakyReLU.
  s2.cond_dim = 64  # Dimension of the x_0 embedding c.
  s2.embedder = "resnet_small"  # x_0 embedder: 'resnet_small' (2-D ResNet below) or 'resnet50' (the reference's, always frozen; weights from embedder_init).
  s2.embedder_norm = "in"  # resnet50 norm: 'in' (InstanceNorm: bair, iper, clouds, fire, vegetation) or 'bn' (BatchNorm stats: landscape, waterfall).
  s2.embedder_widths = (32, 64, 128, 256)  # 2-D ResNet embedder stage widths.
  s2.embedder_pool = "mean"  # resnet_small's final map: 'mean' (global average) or 'flatten' (keeps where things are; demo departure).
  s2.freeze_embedder = False  # Train the x_0 embedder jointly (False) or keep it frozen.
  s2.embedder_init = ml_collections.FieldReference(None, field_type=str)  # Frozen embedder weights: a stage-2 workdir, or for resnet50 Encoder_stage2.pth / its state_dict as .npz.
  s2.control = ""  # '', 'bins' (bair: 3x10 one-hot) or 'continuous' (shapes/texture direction).
  s2.eta_dim = 0  # Dimension of eta (30 for bins; 4 for shapes: position + drift direction).
  s2.control_every = 4  # With control, blocks whose index is not a multiple of this feed s/t only [c, eta] (no half of x), as the reference.
  s2.eta_dropout = 0.0  # Demo departure: hide eta from this fraction of training clips, so one flow samples with and without control (0 = reference).
  s2.lr = 1e-5  # Adam (amsgrad) learning rate.
  s2.amsgrad = "torch"  # 'torch' (reference): max of the raw second moment, then bias correction; 'optax': optax.amsgrad's max of the corrected one.
  s2.weight_decay = 0.0  # Coupled L2 weight decay (the reference's 0).
  s2.b1 = 0.9  # Adam beta1.
  s2.b2 = 0.99  # Adam beta2.
  s2.batch_size = 50  # Global batch size.
  s2.num_epochs = 31  # Training length in epochs.
  s2.epoch_clips = 43264  # Clips per epoch (reference: bair's 43,264 train videos).
  s2.epoch_clips_per_video = 0  # > 0: an epoch is (train videos x this) clips, counted at run time (dtdb).
  s2.drop_last = False  # Steps per epoch = ceil(clips / batch) (the reference's stage-2 loader keeps the last batch).
  s2.steps_per_epoch = -1  # > 0 overrides the epoch length in steps; -1 derives it from epoch_clips.
  s2.num_train_steps = -1  # Overrides num_epochs * steps_per_epoch when > 0.
  s2.decay_every_epochs = 7  # Step decay interval (6 for 128^2 data).
  s2.decay_factor = 0.5  # Step decay factor.
  s2.log_every = 50  # Scalars every N steps.
  s2.sample_every = 1000  # GIF of x_0 -> 4 sampled videos every N steps.
  s2.checkpoint_every = 1000  # Checkpoint interval in steps.
  s2.keep_checkpoints = 3  # How many checkpoints to keep.

  # ---------------------------------------------------------------- evaluation
  e = c.eval = ml_collections.ConfigDict()
  e.split = "test"  # Split evaluated.
  e.num_videos = 256  # Test videos used, in split order (paper protocol: 256 for bair); 0 = all.
  e.clips_per_video = 1  # Clips cut from each test video (landscape 6, dtdb 5: the reference's protocol).
  e.num_clips = 0  # > 0: this many clips cycling over the test videos instead (iper: 1000).
  e.random_start = False  # Seeded random clip starts (iper, landscape); False = frame 0.
  e.protocol = "reference"  # 'reference' (the authors' frame alignment per dataset: compares with the paper) or 'aligned' (generated x_i vs real x_i).
  e.num_sample_sets = 5  # K independent sample sets for mean +- std.
  e.div_num_samples = 5  # Samples per x_0 for DIV-VGG / DIV-I3D.
  e.batch_size = 16  # Batch size for generation and feature extraction.
  e.metrics = ("fvd", "lpips", "div_vgg", "div_i3d")  # Metrics computed by --mode=eval.
  e.fid_weights = ml_collections.FieldReference(None, field_type=str)  # InceptionV3 pool3 weights file for FID (user supplied).
  e.dtfvd_weights = ml_collections.FieldReference(None, field_type=str)  # DTFVD I3D weights: the reference's I3D_16.pth.tar (needs torch) or its .npz conversion.
  e.temperature = 1.0  # Sampling temperature of nu.

  # ---------------------------------------------------------------- the main job's report
  r = c.report = ml_collections.ConfigDict()
  r.num_videos = 0  # shapes only: score the model on this many test videos in the report (0: off).
  r.metrics = ("shapes",)  # Protocol metrics of that evaluation (cINN, w/o cINN, static).
  r.num_sample_sets = 1  # Sample sets scored.
  r.num_samples = 4  # Samples per x_0 for the final-position spread.
  return c


def steps_per_epoch(stage_cfg: ml_collections.ConfigDict, num_train_videos: int | None = None,
                    default: int | None = None) -> int:
  """Steps in one epoch of a stage, as the reference counts them: clips per epoch / batch.

  An explicit `steps_per_epoch > 0` wins. Otherwise the clips are `epoch_clips`, or for a
  per-video epoch (dtdb) `num_train_videos x epoch_clips_per_video`; floored when the stage drops
  the last partial batch (stage 1), else rounded up (stage 2). Without the video count a
  per-video epoch returns `default`, or raises when there is none.
  """
  if stage_cfg.steps_per_epoch > 0:
    return int(stage_cfg.steps_per_epoch)
  clips = int(stage_cfg.epoch_clips)
  if stage_cfg.epoch_clips_per_video > 0:
    if num_train_videos is None:
      if default is not None:
        return default
      raise errors.InvalidInput(
          "This config's epoch is (train videos x epoch_clips_per_video) clips, but the number of "
          "train videos is not known yet. Fix: train through train_and_evaluate (it counts the "
          "prepared split), or set --config.stage1.steps_per_epoch / stage2.steps_per_epoch.")
    clips = int(num_train_videos) * int(stage_cfg.epoch_clips_per_video)
  batch = int(stage_cfg.batch_size)
  steps_ = clips // batch if stage_cfg.drop_last else -(-clips // batch)
  if steps_ <= 0:
    raise errors.InvalidInput(f"An epoch of {clips} clips holds no full batch of {batch}. Fix: a "
                              "smaller batch_size or an explicit steps_per_epoch.")
  return steps_


def resolve_epochs(config: ml_collections.ConfigDict, num_train_videos: int | None = None
                   ) -> ml_collections.ConfigDict:
  """A copy whose stage1/stage2 steps_per_epoch and stage1.warmup_steps are explicit numbers
  (the ones config.json records and the schedules use). Raises for a per-video epoch whose
  video count is unknown."""
  config = copy.deepcopy(config)
  for stage_cfg in (config.stage1, config.stage2):
    stage_cfg.steps_per_epoch = steps_per_epoch(stage_cfg, num_train_videos)
  if config.stage1.warmup_steps < 0:
    config.stage1.warmup_steps = config.stage1.steps_per_epoch
  return config


def steps(stage_cfg: ml_collections.ConfigDict) -> int:
  """Total training steps of a stage: explicit override, else epochs x steps per epoch."""
  if stage_cfg.num_train_steps > 0:
    return int(stage_cfg.num_train_steps)
  return int(stage_cfg.num_epochs * steps_per_epoch(stage_cfg))


def r1_weight(stage1_cfg: ml_collections.ConfigDict) -> float:
  """The weight on the per-sample R1 mean: w_gp / B^2 with 'reference' weighting (the reference
  differentiates mean D(real), so its per-sample gradients are 1/B too small), w_gp otherwise."""
  w = float(stage1_cfg.w_gp)
  if stage1_cfg.get("r1_weighting", "per_sample") == "reference":
    return w / float(stage1_cfg.batch_size) ** 2
  return w


def shrink_to_tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A variant that keeps the topology (strides, resolutions) but runs in seconds on a CPU."""
  s1, s2 = c.stage1, c.stage2
  s1.enc_widths = (8, 8, 16, 16, 16)
  s1.dec_nf = 4
  s1.spade_hidden = 16
  s1.dt_widths = (8, 8, 8, 16, 16)
  s1.ds_width = 8
  s1.ds_num_frames = 4
  s1.batch_size = 2
  s1.num_train_steps = 4
  s1.steps_per_epoch = 2
  s1.warmup_steps = 2
  s1.lr_cooldown_steps = 0  # Tiny runs test mechanics at a steady lr (the schedule has a test).
  s1.val_videos = min(s1.val_videos, 4)
  s1.val_every = 2
  s1.w_percep = 0.0
  s1.conv3d_impl = "native"  # Tiny runs are compile-bound; 'taps' only pays off for big convs.
  s1.log_every = 1
  s1.sample_every = 2
  s1.checkpoint_every = 2
  s2.num_blocks = 4
  s2.hidden = 32
  s2.cond_dim = 16
  s2.embedder_widths = (8, 8, 16, 16)
  s2.batch_size = 4
  s2.num_train_steps = 4
  s2.steps_per_epoch = 2
  s2.log_every = 1
  s2.sample_every = 2
  s2.checkpoint_every = 2
  c.eval.num_videos = 8
  c.report.num_videos = min(c.report.num_videos, 8)
  c.eval.num_sample_sets = 2
  c.eval.div_num_samples = 2
  c.eval.batch_size = 4
  c.data.shuffle_buffer = 16
  return c


def parse_arg(arg: str | None) -> tuple[str | None, bool]:
  """Split a config arg like 'fire,tiny' or 'tiny' into (variant, tiny)."""
  parts = [p for p in (arg or "").split(",") if p]
  tiny = "tiny" in parts
  rest = [p for p in parts if p != "tiny"]
  if len(rest) > 1:
    raise errors.InvalidInput(f"Config arg {arg!r} names several variants {rest}; give at most one plus 'tiny'.")
  return (rest[0] if rest else None), tiny


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Load 'path/to/config.py[:arg]' the way --config does, for tests, notebooks and benchmarks."""
  import importlib.util
  import os

  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), path)
    if not os.path.exists(here):
      raise errors.MissingInput(f"Config file {path!r} not found (also looked in {here!r}).")
    path = here
  module_spec = importlib.util.spec_from_file_location(
      "i2v_config_" + os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)
