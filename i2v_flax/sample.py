"""Sample videos from your own start image with a trained workdir.

  python -m i2v_flax.sample --workdir=DIR --image=x0.png --num_samples=8 --out=out.gif
  python -m i2v_flax.sample --workdir=DIR --image=x0.png --transfer_from=clip.mp4 --out=t.gif
  python -m i2v_flax.sample --workdir=DIR --image=x0.png --eta=0.8,0.2,1,0 --length=32 --out=c.mp4

Writes a grid ([x_0 | sample 1 | ... ], one row per image) as GIF or MP4 and the raw frames
(x_0 followed by the generated frames, uint8) as `<out>.npy`. Inputs are validated before the
model is loaded and outputs are written atomically, so a bad input writes nothing.
"""

from __future__ import annotations

import os

import numpy as np
from absl import flags, logging

from i2v_flax import cli, config_check, console, errors, paths, video_io

# allow_override: i2v_flax.main defines --workdir too (both may be imported in one process).
_WORKDIR = flags.DEFINE_string("workdir", None, "Trained workdir (stage 1 + stage 2).",
                               allow_override=True)
_IMAGE = flags.DEFINE_list("image", None, "Start frame(s) x_0: PNG/JPEG/... any size or mode.")
_OUT = flags.DEFINE_string("out", "samples.gif", "Output grid: .gif or .mp4.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 4, "Samples per start frame.")
_TRANSFER = flags.DEFINE_string("transfer_from", None,
                                "Video (GIF, MP4 or folder of frames) whose motion to transfer.")
_ETA = flags.DEFINE_list("eta", None, "Control values (bair: x,y,z; shapes: x,y,dx,dy).")
_LENGTH = flags.DEFINE_integer("length", 16, "Generated frames (>16 chains chunks).")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Scale of nu ~ N(0, T^2 I).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_PRIOR = flags.DEFINE_enum("prior", "cinn", ["cinn", "gaussian"],
                           "'gaussian' skips the cINN (the w/o-cINN ablation).")
_EXTEND_MODE = flags.DEFINE_enum("extend_mode", "nu", ["nu", "z"],
                                 "Long videos: keep nu (paper) or keep z (reference).")
_FPS = flags.DEFINE_float("fps", 8.0, "Frames per second of the output.")
_SCALE = flags.DEFINE_integer("scale", 4, "Pixel upscaling of the output grid.")


def sample_to_files(workdir: str, images: list[str], out: str, num_samples: int = 4,
                    transfer_from: str | None = None, eta: list[float] | None = None,
                    length: int = 16, temperature: float = 1.0, seed: int = 0,
                    prior: str = "cinn", extend_mode: str = "nu", fps: float = 8.0,
                    scale: int = 4) -> dict[str, str]:
  """Library form of the CLI; returns {'grid': path, 'frames': path}.

  Every argument is checked before the model loads; problems raise errors.UserError subclasses
  (video_io.MediaError for inputs and outputs) naming the flag and the fix.
  """
  ext = os.path.splitext(out)[1].lower()
  if ext not in (".gif", ".mp4"):
    raise video_io.MediaError(f"--out must end in .gif or .mp4, got {out!r}. Fix: "
                              f"--out={os.path.splitext(out)[0]}.gif (or .mp4).")
  _check_numbers(num_samples=num_samples, length=length, temperature=temperature, fps=fps,
                 scale=scale)
  if not images:
    raise errors.InvalidInput("No start image given. Fix: --image=x0.png (comma-separate "
                              "several).")
  if not paths.isdir(workdir):
    raise errors.MissingInput(
        f"Workdir {workdir!r} does not exist. Fix: train one with `python -m i2v_flax.main "
        f"--config=configs/shapes.py --workdir={workdir}`, or pass the --workdir of a trained run.")
  if not config_check._has_checkpoint(paths.join(workdir, "checkpoints", "stage2")):  # pylint: disable=protected-access
    raise errors.MissingInput(
        f"{workdir!r} holds no trained stage-2 model (no checkpoints/stage2). Fix: finish "
        f"training (`python -m i2v_flax.main --config=... --workdir={workdir}`), or pass the "
        "--workdir of a trained run.")
  if not paths.is_remote(out):
    config_check.check_writable(os.path.dirname(os.path.abspath(out)), "--out's folder")
  eta_values = config_check.check_sequence(eta, "--eta") if eta else None
  # Read every input before any heavy work, so a bad file fails fast and writes nothing.
  raw_images = [video_io.read_image(p, None) for p in images]
  video_a = None
  if transfer_from:
    video_a = video_io.read_video(transfer_from, None, max_frames=17)
    if video_a.shape[0] < 17:
      raise video_io.MediaError(f"{transfer_from!r} has {video_a.shape[0]} frames; motion "
                                "transfer needs at least 17 (x_0 + 16).")
  from i2v_flax import sampling  # Heavy imports only after the cheap checks.
  model = sampling.load(workdir)
  r = model.resolution
  x0 = np.stack([video_io.resize_frames(im[None], r, p)[0] for im, p in zip(raw_images, images)])
  if video_a is not None:
    video_a = video_io.to_model_range(video_io.resize_frames(video_a, r, transfer_from))[None]
  eta_arr = sampling.eta_from_values(model.config, eta_values) if eta_values else None
  x0_f = video_io.to_model_range(x0)
  if video_a is not None:
    frames = model.transfer(np.repeat(video_a, len(x0), 0), x0_f, eta_a=eta_arr, eta_b=eta_arr)
    frames = frames[:, None]
    logging.info("Transferred the motion of %s onto %d image(s).", transfer_from, len(x0))
  elif length > 16:  # Chained chunks; up to 16 frames both extend modes equal one sample.
    frames = model.extend(x0_f, length, num_samples, temperature, seed, eta_arr, extend_mode)
  else:
    frames = model.sample(x0_f, num_samples, temperature, seed, eta_arr, prior)[:, :, :length]
  frames_u8 = video_io.to_uint8(frames)
  x0_u8 = np.repeat(x0[:, None, None], frames_u8.shape[1], axis=1)
  clips = np.concatenate([x0_u8, frames_u8], axis=2)  # (B, N, 1 + length, H, W, 3)
  rows = [video_io.frames_row(x0[i], list(clips[i])) for i in range(len(x0))]
  grid = video_io.grid(np.concatenate(rows))
  written = {"grid": video_io.write_video(out, grid, fps=fps, scale=scale),
             "frames": video_io.save_npy(os.path.splitext(out)[0] + ".npy", clips)}
  logging.info("Wrote %s and %s", written["grid"], written["frames"])
  return written


_LIMITS = {"num_samples": ("an integer >= 1", lambda v: v >= 1),
           "length": ("an integer >= 1", lambda v: v >= 1),
           "temperature": ("> 0", lambda v: v > 0), "fps": ("> 0", lambda v: v > 0),
           "scale": ("an integer >= 1", lambda v: v >= 1)}


def _check_numbers(**values: float) -> None:
  for name, value in values.items():
    rule, ok = _LIMITS[name]
    if not (value == value and ok(value)):  # value == value: NaN fails too.
      raise errors.InvalidInput(f"--{name}={value} must be {rule}. Fix: e.g. --{name}="
                                f"{_FLAG_DEFAULTS[name]}.")


_FLAG_DEFAULTS = {"num_samples": 4, "length": 16, "temperature": 1.0, "fps": 8.0, "scale": 4}


def main(argv: list[str]) -> None:
  """Sample, then print the grid's path (stdout; everything else goes to the log)."""
  del argv
  if not _WORKDIR.value or not _IMAGE.value:
    raise errors.InvalidInput("--workdir and --image are required. Fix: e.g. "
                              "--workdir=/tmp/shapes --image=x0.png.")
  written = sample_to_files(_WORKDIR.value, _IMAGE.value, _OUT.value, _NUM_SAMPLES.value,
                            _TRANSFER.value, _ETA.value, _LENGTH.value, _TEMPERATURE.value,
                            _SEED.value, _PRIOR.value, _EXTEND_MODE.value, _FPS.value, _SCALE.value)
  print(written["grid"], file=console.terminal_out(), flush=True)


def run(argv: list[str] | None = None) -> int:
  """The CLI as a function returning the exit status (tests call it in-process)."""
  return cli.execute(main, argv, log_prefix="sample")


if __name__ == "__main__":
  raise SystemExit(run())
