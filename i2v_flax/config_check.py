"""Start-up validation of a config (and of the workdir a mode needs), before any data is built
or any model compiled.

A bad value otherwise surfaces minutes later as a shape error inside XLA, a division by zero in
a schedule or a silently odd run. `check_config` range-checks every numeric field of
`config_lib.base_config()` and names the field and its fix; `check_workdir` checks what the mode
needs on disk (a writable workdir, a finished stage 1 for stage 2, a model for eval, the
dataset's manual_dir). Both raise `errors.InvalidInput` / `errors.MissingInput`.
"""

from __future__ import annotations

import math
import numbers
import os
import tempfile
from typing import Any, Callable, Sequence

import ml_collections

from i2v_flax import config_lib, errors
from i2v_flax.errors import InvalidInput, MissingInput

MODES = ("all", "train_stage1", "train_stage2", "eval")
KNOWN_METRICS = ("fvd", "lpips", "div_vgg", "div_i3d", "fid", "dtfvd", "shapes")
CHOICES = {
    "compute_dtype": ("float32", "bfloat16"),
    "data.name": config_lib.KNOWN_DATASETS,
    "stage1.dec_output": ("rgb", "blend", "warp"),
    "stage1.rec_loss": ("l1", "l2"),
    "stage1.conv3d_impl": ("native", "taps", "fast", "auto"),
    "stage1.microbatch_loop": ("auto", "scan", "host"),
    "stage2.embedder": ("resnet_small", "resnet50"),
    "stage2.embedder_norm": ("in", "bn"),
    "stage2.embedder_pool": ("mean", "flatten"),
    "stage2.control": ("", "bins", "continuous"),
    "stage1.r1_weighting": ("reference", "per_sample"),
    "stage1.update_order": ("d_first", "g_first"),
    "stage1.select": ("best", "latest"),
    "stage1.val_metric": ("fvd", "psnr"),
    "stage2.amsgrad": ("torch", "optax"),
    "data.jitter_style": ("kornia", "torchvision"),
    "eval.protocol": ("reference", "aligned"),
}
_POS = ("> 0", lambda v: v > 0)
_NONNEG = (">= 0", lambda v: v >= 0)
_UNIT = ("in [0, 1)", lambda v: 0 <= v < 1)
_DECAY = ("in (0, 1]", lambda v: 0 < v <= 1)
_AUTO_OR_POS = ("-1 (derived) or > 0", lambda v: v == -1 or v > 0)
_RANGES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "seed": _NONNEG,
    "data.resolution": _POS, "data.clip_length": ("> 1", lambda v: v > 1),
    "data.max_start_frame": (">= -1 (-1: anywhere)", lambda v: v >= -1), "data.brightness": _NONNEG, "data.contrast": _NONNEG,
    "data.saturation": _NONNEG, "data.hue": ("in [0, 0.5]", lambda v: 0 <= v <= 0.5),
    "data.shuffle_buffer": _POS,
    "data.num_parallel_calls": ("-1 (AUTOTUNE) or > 0", lambda v: v == -1 or v > 0),
    "stage1.z_dim": _POS, "stage1.dec_nf": _POS, "stage1.spade_hidden": _POS,
    "stage1.dt_window": _POS, "stage1.ds_num_frames": _POS, "stage1.ds_width": _POS,
    "stage1.w_rec": _NONNEG, "stage1.w_rec_unmixed": _NONNEG, "stage1.w_percep": _NONNEG,
    "stage1.w_kl": _NONNEG,
    "stage1.w_t": _NONNEG, "stage1.w_fm": _NONNEG, "stage1.w_gp": _NONNEG,
    "stage1.lr": _POS, "stage1.b1": _UNIT, "stage1.b2": _UNIT, "stage1.weight_decay": _NONNEG,
    "stage1.lr_decay_per_epoch": _DECAY, "stage1.warmup_steps": ("-1 (one epoch) or >= 0", lambda v: v >= -1),
    "stage1.val_videos": _NONNEG, "stage1.val_every": _AUTO_OR_POS, "stage2.weight_decay": _NONNEG,
    "stage2.num_blocks": _POS, "stage2.hidden": _POS, "stage2.num_hidden_layers": _NONNEG,
    "stage2.leaky_slope": _DECAY, "stage2.cond_dim": _POS, "stage2.eta_dim": _NONNEG,
    "stage2.control_every": _POS, "stage2.eta_dropout": _UNIT, "stage2.lr": _POS, "stage2.b1": _UNIT, "stage2.b2": _UNIT,
    "stage2.decay_every_epochs": _POS, "stage2.decay_factor": _DECAY,
    "eval.num_videos": ("0 (all) or > 0", lambda v: v >= 0),
    "eval.clips_per_video": _POS, "eval.num_clips": _NONNEG, "eval.num_sample_sets": _POS, "eval.div_num_samples": _POS,
    "eval.batch_size": _POS, "eval.temperature": _POS,
    "report.num_videos": _NONNEG, "report.num_sample_sets": _POS,
    "report.num_samples": (">= 2", lambda v: v >= 2),
}
for _stage in ("stage1", "stage2"):
  _RANGES.update({
      f"{_stage}.batch_size": _POS, f"{_stage}.num_epochs": _NONNEG,
      f"{_stage}.steps_per_epoch": _AUTO_OR_POS, f"{_stage}.epoch_clips": _POS,
      f"{_stage}.epoch_clips_per_video": _NONNEG,
      f"{_stage}.num_train_steps": ("-1 (use num_epochs) or > 0", lambda v: v == -1 or v > 0),
      f"{_stage}.log_every": _POS, f"{_stage}.sample_every": _POS,
      f"{_stage}.checkpoint_every": _POS, f"{_stage}.keep_checkpoints": _POS})
# Tuples: (length, rule for every entry).
_TUPLES = {"stage1.enc_widths": 5, "stage1.enc_stride_t": 4, "stage1.enc_stride_s": 4,
           "stage1.dec_up_t": 5, "stage1.dec_up_s": 5, "stage1.dt_widths": 5,
           "stage1.dt_stride_s": 4, "stage2.embedder_widths": 4}


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def _fail(field: str, value: Any, rule: str, fix: str | None = None) -> InvalidInput:
  return InvalidInput(f"config.{field}={value!r} must be {rule}. Fix: "
                      f"{fix or f'--config.{field}=<a value {rule}>'}.")


def _number(field: str, value: Any) -> float:
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
    raise _fail(field, value, "a finite number")
  return value


def _check_fields(config: ml_collections.ConfigDict) -> None:
  for field, (rule, ok) in _RANGES.items():
    if not ok(_number(field, _get(config, field))):
      raise _fail(field, _get(config, field), rule)
  for field, length in _TUPLES.items():
    value = tuple(_get(config, field))
    if len(value) != length or not all(isinstance(v, int) and v > 0 for v in value):
      raise _fail(field, value, f"{length} positive integers")
  clamp = config.stage2.clamp
  if clamp is not None and not _number("stage2.clamp", clamp) > 0:
    raise _fail("stage2.clamp", clamp, "> 0 (or None)")
  for field, choices in CHOICES.items():
    if _get(config, field) not in choices:
      raise _fail(field, _get(config, field), f"one of {list(choices)}")


def _check_shapes(config: ml_collections.ConfigDict) -> None:
  """Resolution and clip length against the strides the networks are built with."""
  r, s1 = int(config.data.resolution), config.stage1
  frames = int(config.data.clip_length) - 1
  if 4 * math.prod(s1.dec_up_s) != r:
    raise InvalidInput(
        f"config.data.resolution={r} does not match the decoder: it starts at 4x4 and "
        f"upsamples by stage1.dec_up_s={tuple(s1.dec_up_s)} (product {math.prod(s1.dec_up_s)}), "
        f"giving {4 * math.prod(s1.dec_up_s)}. Fix: use a dataset config made for this "
        "resolution (e.g. configs/shapes.py:res64), or change dec_up_s, enc_stride_s and "
        "dt_stride_s together.")
  for field, stride in (("stage1.enc_stride_s", 2 * math.prod(s1.enc_stride_s)),
                        ("stage1.dt_stride_s", 4 * math.prod(s1.dt_stride_s))):
    if r % stride:
      raise InvalidInput(
          f"config.data.resolution={r} is not divisible by the total spatial stride {stride} of "
          f"config.{field}={tuple(_get(config, field))}. Fix: use a resolution that is a multiple "
          f"of {stride} or smaller strides.")
  if math.prod(s1.dec_up_t) != frames:
    raise InvalidInput(
        f"config.data.clip_length={frames + 1} needs the decoder to make {frames} frames, but "
        f"stage1.dec_up_t={tuple(s1.dec_up_t)} makes {math.prod(s1.dec_up_t)}. Fix: "
        f"--config.data.clip_length={math.prod(s1.dec_up_t) + 1}.")
  if not 1 <= s1.dt_window <= frames:
    raise _fail("stage1.dt_window", s1.dt_window, f"in [1, {frames}]")


def _check_combinations(config: ml_collections.ConfigDict) -> None:
  s2 = config.stage2
  if s2.control and not config.data.control:
    raise InvalidInput(f"config.stage2.control={s2.control!r} needs eta from the data. Fix: "
                       "--config.data.control=True (or --config.stage2.control='').")
  if s2.control and s2.eta_dim < 1:
    raise _fail("stage2.eta_dim", s2.eta_dim, f"> 0 when stage2.control={s2.control!r}")
  for section in ("eval", "report"):
    metrics = tuple(_get(config, f"{section}.metrics"))
    unknown = sorted(set(metrics) - set(KNOWN_METRICS))
    if unknown:
      raise InvalidInput(f"config.{section}.metrics has unknown metric(s) {unknown}. Fix: use "
                         f"names from {list(KNOWN_METRICS)}.")
    if "shapes" in metrics and config.data.name != "shapes" and (
        section == "eval" or config.report.num_videos > 0):
      raise InvalidInput(f"config.{section}.metrics has 'shapes', which needs "
                         f"data.name='shapes' (not {config.data.name!r}). Fix: drop it.")
  for name in ("fid", "dtfvd"):
    path = config.eval.get(f"{name}_weights")
    if name in config.eval.metrics and path and not os.path.exists(path):
      raise MissingInput(f"config.eval.{name}_weights={path!r} does not exist. Fix: point "
                         f"--config.eval.{name}_weights at the weights file.")


def check_config(config: ml_collections.ConfigDict, device_count: int | None = None) -> None:
  """Raise InvalidInput naming the first bad field and its fix; `device_count` (default: JAX's)
  must divide both training batch sizes."""
  _check_fields(config)
  _check_shapes(config)
  _check_combinations(config)
  if device_count is None:
    import jax
    device_count = jax.device_count()
  for stage in ("stage1", "stage2"):
    bs = int(config[stage].batch_size)
    if bs % device_count:
      raise InvalidInput(
          f"config.{stage}.batch_size={bs} is not divisible by the {device_count} devices. Fix: "
          f"--config.{stage}.batch_size={max(device_count, bs // device_count * device_count)}.")
  micro, bs = int(config.stage1.get("microbatches", 1)), int(config.stage1.batch_size)
  if micro < 1 or bs % (micro * device_count):
    raise InvalidInput(
        f"config.stage1.microbatches={micro} must be >= 1 and split batch_size={bs} into equal "
        f"microbatches that each shard over the {device_count} devices (batch_size divisible by "
        f"microbatches x devices). Fix: --config.stage1.microbatches=1, or a divisor of "
        f"{bs // device_count}.")


def check_mode(mode: str) -> None:
  if mode not in MODES:
    raise InvalidInput(f"Unknown mode {mode!r}. Fix: --mode=one of {', '.join(MODES)}.")


def _has_checkpoint(directory: str) -> bool:
  from i2v_flax import paths
  return any(n.isdigit() for n in paths.listdir(directory))  # Local or gs://.


def check_writable(path: str, flag: str) -> None:
  """`path` (a folder to create or reuse) can be written: no file in its place and the nearest
  existing ancestor is a writable folder. Remote folders (gs://) are not probed: a bucket has no
  folders to create, and its permissions only show on the first write."""
  from i2v_flax import paths
  if paths.is_remote(path):
    return
  if os.path.exists(path) and not os.path.isdir(path):
    raise InvalidInput(f"{flag}={path!r} is a file, not a folder. Fix: pass a folder path.")
  target = os.path.abspath(path)
  created = []  # Try for real (os.access lies for root and odd filesystems), then undo.
  probe = target
  while not os.path.exists(probe):
    created.append(probe)
    probe = os.path.dirname(probe)
  try:
    os.makedirs(target, exist_ok=True)
    # A name of its own: the processes of a pod run this check on one workdir at the same time.
    fd, probe_file = tempfile.mkstemp(prefix=".i2v_write_test_", dir=target)
    os.close(fd)
    os.remove(probe_file)
  except OSError as e:
    raise InvalidInput(f"{flag}={path!r} cannot be written ({e.strerror}). Fix: choose a "
                       "location you can write to.") from None
  finally:
    for folder in created:  # Deepest first: leave no trace of the test.
      try:
        os.rmdir(folder)
      except OSError:  # Gone already, or another process is using it now.
        pass


def check_workdir(config: ml_collections.ConfigDict, workdir: str, mode: str) -> None:
  """What `mode` needs on disk, checked before data is built: see the module docstring."""
  from i2v_flax import paths
  from i2v_flax.train import run_config
  check_writable(workdir, "--workdir")
  if workdir.startswith("gs://"):
    try:
      from google.cloud import storage  # noqa: F401  pylint: disable=g-import-not-at-top
    except ImportError:
      raise errors.MissingDependency(
          f"--workdir={workdir}: orbax needs the google-cloud-storage package for gs:// "
          "checkpoints. Fix: pip install -e '.[gcs]' (or pip install google-cloud-storage)."
      ) from None
  s1_dir = config.stage2.stage1_workdir or workdir
  if mode == "train_stage2" and not _has_checkpoint(paths.join(s1_dir, "checkpoints", "stage1")):
    raise MissingInput(
        f"--mode=train_stage2 needs a trained stage 1, but {s1_dir!r} has no stage-1 checkpoint."
        f" Fix: run --mode=train_stage1 --workdir={s1_dir} first (or --mode=all), or point "
        "--config.stage2.stage1_workdir at a finished stage-1 workdir.")
  if mode == "eval" and not _has_checkpoint(paths.join(workdir, "checkpoints", "stage2")):
    raise MissingInput(
        f"--mode=eval needs a trained model, but {workdir!r} has no stage-2 checkpoint. Fix: "
        f"train one first (--mode=all --workdir={workdir}), or pass the --workdir of a trained "
        "run.")
  if mode in ("all", "train_stage1"):
    from i2v_flax.train import stage1
    run_config.check_compatible(workdir, config, stage1.ARCH_FIELDS)
  if mode in ("all", "train_stage2") and paths.isdir(paths.join(workdir, "checkpoints",
                                                                "stage2")):
    from i2v_flax.train import stage2
    run_config.check_compatible(workdir, config, stage2.ARCH_FIELDS)
  _check_data(config)


def _check_data(config: ml_collections.ConfigDict) -> None:
  """A manual-dir dataset that is not built yet needs its manual_dir (cheap to check now)."""
  from i2v_flax.data import manual, pipeline
  src = pipeline.source(config.data)
  if src.manual and not pipeline._builder(config.data, src).is_prepared():  # pylint: disable=protected-access
    manual.check_manual_dir(src.name, config.data.manual_dir)


def check_sequence(values: Sequence[Any], flag: str) -> list[float]:
  """Numbers from a comma-separated flag (e.g. --eta=0.5,0.5,1,0)."""
  try:
    return [float(v) for v in values]
  except ValueError:
    raise InvalidInput(f"{flag}={','.join(values)} must be comma-separated numbers. Fix: e.g. "
                       f"{flag}=0.5,0.5,1,0.") from None
