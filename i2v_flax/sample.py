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
from absl import app, flags, logging

from i2v_flax import video_io

_WORKDIR = flags.DEFINE_string("workdir", None, "Trained workdir (stage 1 + stage 2).")
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
  """Library form of the CLI; returns {'grid': path, 'frames': path}."""
  ext = os.path.splitext(out)[1].lower()
  if ext not in (".gif", ".mp4"):
    raise video_io.MediaError(f"--out must end in .gif or .mp4, got {out!r}.")
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"Workdir {workdir!r} does not exist. Fix: train one with "
                            f"`python -m i2v_flax.main --config=configs/shapes.py --workdir={workdir}`.")
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
  eta_arr = sampling.eta_from_values(model.config, [float(v) for v in eta]) if eta else None
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
  paths = {"grid": video_io.write_video(out, grid, fps=fps, scale=scale),
           "frames": video_io.save_npy(os.path.splitext(out)[0] + ".npy", clips)}
  logging.info("Wrote %s and %s", paths["grid"], paths["frames"])
  return paths


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value or not _IMAGE.value:
    raise app.UsageError("--workdir and --image are required.")
  try:
    paths = sample_to_files(_WORKDIR.value, _IMAGE.value, _OUT.value, _NUM_SAMPLES.value,
                            _TRANSFER.value, _ETA.value, _LENGTH.value, _TEMPERATURE.value,
                            _SEED.value, _PRIOR.value, _EXTEND_MODE.value, _FPS.value, _SCALE.value)
  except (video_io.MediaError, FileNotFoundError, ValueError) as e:
    raise SystemExit(f"error: {e}") from None
  print(paths["grid"])


if __name__ == "__main__":
  app.run(main)
