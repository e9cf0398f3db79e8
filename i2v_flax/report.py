"""The main job: prepare data, train both stages, then show what the model does in `DIR/report/`.

`train_and_report(config, workdir)` is what `python -m i2v_flax.main --config=... --workdir=DIR`
runs. Every phase resumes: a finished stage is restored rather than retrained, so re-running
after an interruption only does the missing work. The report holds sample grids (several x_0,
several samples each), a motion-transfer example, a control example (same x_0, different eta),
a long video, and `summary.json` (final losses, timings, and on `shapes` the ground-truth motion
metrics of the samples).
"""

from __future__ import annotations

import os
import struct
import time
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np
from absl import logging

from i2v_flax import paths, video_io

NUM_X0 = 4  # Start frames in the sample grid.
NUM_SAMPLES = 4  # Samples per start frame.


def _records(data: bytes) -> Iterator[bytes]:
  """The payloads of a TFRecord file (length, length CRC, payload, payload CRC)."""
  i = 0
  while i + 12 <= len(data):
    (n,) = struct.unpack("<Q", data[i:i + 8])
    yield data[i + 12:i + 12 + n]
    i += 16 + n


def _last_scalars(logdir: str) -> dict[str, float]:
  """The last value of every scalar in a TensorBoard folder (what clu's writer logged).

  Read through epath (local or gs://), parsed here rather than by tf.data."""
  import tensorflow as tf
  last: dict[str, tuple[int, float]] = {}
  for path in paths.glob(logdir, "events.out.tfevents.*"):  # clu writes into logdir itself.
    for record in _records(paths.path(path).read_bytes()):
      event = tf.compat.v1.Event.FromString(record)
      for value in event.summary.value:
        if value.HasField("simple_value"):
          scalar = value.simple_value
        elif value.HasField("tensor") and not value.tensor.tensor_shape.dim:
          scalar = float(tf.make_ndarray(value.tensor))
        else:
          continue
        if value.tag not in last or event.step >= last[value.tag][0]:
          last[value.tag] = (event.step, float(scalar))
  return {tag: v for tag, (_, v) in sorted(last.items())}


def _write_json(path: str, payload: dict[str, Any]) -> None:
  """Atomic, by process 0 only (every process computes the report; one writes it)."""
  if paths.is_primary():
    paths.write_json(path, payload)


def _write_video(path: str, frames: np.ndarray, scale: int) -> str:
  if paths.is_primary():
    video_io.write_video(path, frames, scale=scale)
  return path


def _test_clips(config: ml_collections.ConfigDict, count: int) -> dict[str, np.ndarray]:
  """The first `count` test clips (start 0, no augmentation), with metadata where available.

  The same clips on every process (not each process's slice of the split): the report's
  inference runs on all devices with identical inputs everywhere.
  """
  from i2v_flax.data import pipeline
  ds = pipeline.build_dataset(config.data, "test", count, seed=0, shuffle=False, repeat=False,
                              with_metadata=config.data.name == "shapes")
  return next(ds.as_numpy_iterator())


def control_etas(config: ml_collections.ConfigDict, clip_eta: np.ndarray,
                 clip_meta: dict[str, np.ndarray] | None = None) -> np.ndarray:
  """NUM_SAMPLES contrasting eta values for one x_0.

  On `shapes`: object 0 sent towards each of the four corners, to targets the data's physics
  can reach (the scene's mean speed for 16 frames along each diagonal, kept inside the walls).
  Literal corners would ask for up to 1.7x the fastest training motion from a central start, a
  test of extrapolation rather than of control.
  """
  from i2v_flax import sampling
  if config.stage2.control == "continuous" and int(config.stage2.eta_dim) == 4:
    directions = np.array([(-1, -1), (1, -1), (-1, 1), (1, 1)], np.float64) / np.sqrt(2)
    if clip_meta is not None and "positions" in clip_meta:
      from i2v_flax.data import shapes_builder
      scene = shapes_builder.scene_of(config.data.builder_config)
      reach = float(np.mean(scene.speed_range)) * (config.data.clip_length - 1)
      start = np.asarray(clip_meta["positions"], np.float64)[0, 0]
      r = float(np.asarray(clip_meta["radius"]).reshape(-1)[0])
      targets = np.clip(start + reach * directions, r, 1 - r)
    else:  # No start position known: the corners themselves.
      targets = 0.5 + 0.3 * np.sign(directions)
    return np.stack([sampling.eta_from_values(config, [x, y, *clip_eta[2:]])
                     for x, y in targets[:NUM_SAMPLES]]).astype(np.float32)
  return sampling.random_eta(config, NUM_SAMPLES, np.random.default_rng(1))


def write_report(config: ml_collections.ConfigDict, workdir: str,
                 extra_summary: dict[str, Any] | None = None) -> dict[str, Any]:
  """Sample grids, transfer, control and a long video from a trained workdir into DIR/report/."""
  from i2v_flax import progress
  with progress.phase("report", total=5 + (config.data.name == "shapes"), unit="part") as bar:
    return _write_report(config, workdir, extra_summary, bar)


def _write_report(config: ml_collections.ConfigDict, workdir: str,
                  extra_summary: dict[str, Any] | None, bar: Any) -> dict[str, Any]:
  from i2v_flax import sampling
  out = paths.join(workdir, "report")
  model = sampling.load(workdir)
  clips = _test_clips(config, max(NUM_X0, 2))
  videos = clips["video"]
  x0 = videos[:NUM_X0, 0]
  eta = clips.get("eta")
  eta_x0 = None if eta is None else eta[:NUM_X0]
  files: dict[str, str] = {}

  # 1. Several samples for several start frames: rows = x_0, columns = [x_0 | real | samples].
  samples = model.sample(x0, NUM_SAMPLES, temperature=1.0, seed=0, eta=None)
  real = video_io.to_uint8(videos[:NUM_X0, 1:])[:, None]
  x0_still = np.repeat(video_io.to_uint8(x0)[:, None, None], 16, axis=2)
  files["samples"] = _write_video(
      paths.join(out, "samples.gif"),
      video_io.grid(np.concatenate([x0_still, real, video_io.to_uint8(samples)], 1)), scale=4)
  bar.update(1)

  # 2. Motion transfer: the motion of test video 0 onto the start frames of videos 1..
  # Without eta when control is optional (the motion then comes from nu alone); otherwise A's
  # eta goes with its nu (giving B its own eta would make B follow B's own motion).
  a = videos[:1].repeat(NUM_X0 - 1, 0)
  eta_a = (None if eta is None or model.control_is_optional
           else eta[:1].repeat(NUM_X0 - 1, 0))
  transferred = model.transfer(a, x0[1:], eta_a=eta_a)
  src = video_io.to_uint8(a[:, 1:])[:, None]
  files["transfer"] = _write_video(
      paths.join(out, "transfer.gif"),
      video_io.grid(np.concatenate([src, x0_still[1:], video_io.to_uint8(transferred)[:, None]],
                                   1)), scale=4)
  bar.update(1)

  # 3. Control: the same x_0 with different eta (on shapes: object 0 sent towards each corner).
  control_error = None
  if model.has_control:
    etas = control_etas(config, eta[0], {k: v[0] for k, v in clips.items()
                                         if k not in ("video", "eta")})
    controlled = model.sample(np.repeat(x0[:1], len(etas), 0), 1, seed=2, eta=etas)[:, 0]
    files["control"] = _write_video(
        paths.join(out, "control.gif"), video_io.grid(video_io.to_uint8(controlled)[None]),
        scale=4)
    if config.data.name == "shapes" and config.stage2.control == "continuous":
      from i2v_flax import demo_eval
      control_error = {"targets": etas[:, :2].tolist(), "final_pos_error_px":
                       demo_eval.control_errors(controlled, etas, {
                           k: v[0] for k, v in clips.items() if k not in ("video", "eta")})}
  bar.update(1)

  # 4. A 32-frame video (two chained chunks, same nu).
  long = model.extend(x0[:2], length=32, num_samples=2, seed=3, eta=eta_x0[:2]
                      if eta_x0 is not None else None)
  files["long"] = _write_video(paths.join(out, "long_32_frames.gif"),
                                       video_io.grid(video_io.to_uint8(long)), scale=4)
  bar.update(1)

  summary: dict[str, Any] = {"files": {k: f"report/{os.path.basename(v)}" for k, v in files.items()},
                             "stage2_step": model.step, **(extra_summary or {})}
  summary["final_losses"] = {
      stage: _last_scalars(paths.join(workdir, "tensorboard", stage))
      for stage in ("stage1", "stage2")}
  if config.data.name == "shapes":
    summary["shapes_metrics"] = _shapes_metrics(model, clips, samples)
    if control_error is not None:
      summary["control"] = control_error
    bar.update(1)
    if int(config.report.num_videos) > 0 and jax.process_count() > 1:
      summary["evaluation"] = {"skipped": "the ground-truth evaluation runs on one host: "
                               "python -m i2v_flax.main --mode=eval without --distributed"}
    elif int(config.report.num_videos) > 0:
      from i2v_flax import demo_eval
      summary["evaluation"] = demo_eval.evaluate_demo(config, workdir, model)
  bar.update(1)
  _write_json(paths.join(out, "summary.json"), summary)
  logging.info("Report written to %s: %s", out, ", ".join(sorted(files)))
  return summary





def _shapes_metrics(model, clips: dict[str, np.ndarray], samples: np.ndarray) -> dict[str, float]:
  """Ground-truth motion metrics of the report's samples (how far objects move, how diversely)."""
  try:
    from i2v_flax.evaluation import shapes_metrics
  except ImportError as e:  # The evaluation package is optional for the demo.
    return {"error": f"shapes metrics unavailable: {e}"}
  return shapes_metrics.report_metrics(clips, samples, model.resolution)


def train_and_report(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Build the data, train stage 1 and stage 2 (resuming), then write the report."""
  from i2v_flax import data
  from i2v_flax.train import checkpoints, stage1, stage2
  timings: dict[str, float] = {}
  for name, fn in (("prepare_data", lambda: data.prepare(config.data)),
                   ("train_stage1", lambda: stage1.train_and_evaluate(config, workdir)),
                   ("train_stage2", lambda: stage2.train_and_evaluate(config, workdir))):
    logging.info("=== %s ===", name)
    start = time.time()
    fn()
    timings[name] = round(time.time() - start, 1)
    logging.info("=== %s done in %.1f s ===", name, timings[name])
    if checkpoints.preempted():  # Saved and stopped on SIGTERM: rerun the command to resume.
      logging.warning("Preempted during %s: checkpoint saved; rerun to resume.", name)
      return {"preempted": name, "seconds": timings}
  start = time.time()
  summary = write_report(config, workdir, {"seconds": timings})
  timings["report"] = round(time.time() - start, 1)
  summary["seconds"] = timings
  _write_json(paths.join(workdir, "report", "summary.json"), summary)
  return summary
