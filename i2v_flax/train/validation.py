"""Stage-1 checkpoint selection: a validation hold-out, a periodic metric, the best checkpoint.

The reference scores stage 1 after every epoch by the FVD of posterior-sampled reconstructions
(`best_PFVD_{GEN,ENC}.pth`) and trains stage 2 on that checkpoint, not the last one. We do the
same on a hold-out of the train split (the reference scored its test split): the last
`stage1.val_videos` train videos, which stage 1 then never trains on.

  workdir/checkpoints/stage1_best/   orbax, one step: item 'models' of the best validation
                                     score so far, with the score as orbax metrics
`select_models_dir` tells restore which of this and checkpoints/stage1 to read
(`stage1.select`: 'best', the default, or 'latest'); a workdir without a best checkpoint
(validation off, a converted release) falls back to the latest.

Metrics (`stage1.val_metric`): 'fvd' (the reference's; I3D at 224^2, ~1 s per video on a laptop
CPU, cheap on an accelerator) or 'psnr' of the posterior-mean reconstruction (a cheap stand-in
for CPU runs: it ranks how faithfully stage 1 reconstructs, not how real its videos look).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from i2v_flax import errors, parallel, paths

BEST_DIR = "stage1_best"
MODES = {"fvd": "min", "psnr": "max"}


def splits(config: ml_collections.ConfigDict) -> tuple[str, str | None]:
  """(stage-1 train split, validation split or None): TFDS slices of 'train'. Nothing is held
  out with select='latest' (there is nothing to select)."""
  n = _holdout(config)
  if n <= 0:
    return "train", None
  return f"train[:-{n}]", f"train[-{n}:]"


def _holdout(config: ml_collections.ConfigDict) -> int:
  """Videos held out: stage1.val_videos when stage 1 selects its best checkpoint, else none."""
  return int(config.stage1.get("val_videos", 0)) if config.stage1.select == "best" else 0


def check_holdout(config: ml_collections.ConfigDict, num_train_videos: int) -> None:
  """The hold-out must leave most of the train split to training."""
  n = _holdout(config)
  if n > 0 and n * 4 > num_train_videos:
    raise errors.InvalidInput(
        f"stage1.val_videos={n} would hold out more than a quarter of the {num_train_videos} train "
        "videos. Fix: --config.stage1.val_videos=<fewer> (or 0 to train on all and keep the "
        "latest checkpoint: --config.stage1.select=latest).")


def val_every(config: ml_collections.ConfigDict) -> int:
  """Steps between validations: stage1.val_every, or once per epoch (-1, the reference)."""
  every = int(config.stage1.get("val_every", -1))
  return every if every > 0 else int(config.stage1.steps_per_epoch)


def best_dir(workdir: str) -> str:
  return paths.join(workdir, "checkpoints", BEST_DIR)


def _manager(workdir: str, mode: str = "min") -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=1, best_fn=lambda m: float(m["value"]),
                                         best_mode=mode, create=True)
  return ocp.CheckpointManager(paths.path(best_dir(workdir)), options=options,
                               item_names=("models",))


def best_step(workdir: str) -> int | None:
  """Step of the best stage-1 checkpoint of a workdir, None if it has none."""
  if not paths.isdir(best_dir(workdir)):
    return None
  mngr = ocp.CheckpointManager(paths.path(best_dir(workdir)), item_names=("models",))
  try:
    return mngr.latest_step()  # Only the best is kept.
  finally:
    mngr.close()


def restore_best(workdir: str, abstract_models: Any) -> tuple[int, dict] | None:
  """(step, 'models' item) of the best checkpoint, or None when the workdir has none."""
  step = best_step(workdir)
  if step is None:
    return None
  mngr = ocp.CheckpointManager(paths.path(best_dir(workdir)), item_names=("models",))
  try:
    args = ocp.args.Composite(models=ocp.args.StandardRestore(abstract_models))
    return step, mngr.restore(step, args=args)["models"]
  finally:
    mngr.close()


class Validator:
  """`validator(models) -> score` on fixed validation clips (B, 17, H, W, 3) in [-1, 1].

  `recon_fn(models, video, rng) -> (posterior-sampled reconstruction, per-video mean PSNR)` is
  stage 1's jitted 'val_recon'. The posterior noise is fixed, so scores differ only by the model.
  The real clips' I3D features are computed once.
  """

  def __init__(self, config: ml_collections.ConfigDict, videos: np.ndarray,
               recon_fn: Callable, mesh: jax.sharding.Mesh):
    self.metric = str(config.stage1.val_metric)
    if self.metric not in MODES:
      raise errors.InvalidInput(f"stage1.val_metric={self.metric!r} is not one of {list(MODES)}. "
                                "Fix: --config.stage1.val_metric=fvd")
    self.mode = MODES[self.metric]
    self.videos = np.asarray(videos, np.float32)
    self.batch = int(config.stage1.batch_size)
    self.recon_fn, self.mesh = recon_fn, mesh
    self.rng = jax.random.PRNGKey(int(config.seed) + 4)
    self._real_features = None

  def _reconstruct(self, models: Mapping[str, Any]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(real clips, posterior-sampled reconstructions, per-clip PSNR) of every process's
    validation clips (gathered: every process scores the same global set)."""
    local = self.batch // jax.process_count()
    reals, fakes, psnrs = [], [], []
    for i in range(0, len(self.videos), local):
      chunk = self.videos[i:i + local]
      pad = local - len(chunk)  # Full batches keep one compiled shape and shard evenly.
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)]) if pad else chunk
      video = parallel.shard_batch(chunk, self.mesh)
      fake, psnr = self.recon_fn(models, video, jax.random.fold_in(self.rng, i))
      keep = np.tile(np.arange(local) < local - pad, jax.process_count())
      for out, x in zip((reals, fakes, psnrs), parallel.to_host((video, fake, psnr))):
        out.append(x[keep])
    return np.concatenate(reals), np.concatenate(fakes), np.concatenate(psnrs)

  def __call__(self, models: Mapping[str, Any]) -> float:
    real, fake, psnr = self._reconstruct(models)
    if self.metric == "psnr":
      return float(np.mean(psnr))
    from i2v_flax.evaluation import fvd as fvd_lib  # I3D only when the metric needs it.
    if self._real_features is None:
      self._real_features = fvd_lib.fvd_features(real[:, 1:])
    return float(fvd_lib.fvd_from_features(self._real_features, fvd_lib.fvd_features(fake)))


class BestTracker:
  """Validates every `every` steps and keeps the best-scoring models in checkpoints/stage1_best.

  A no-op without a validator. The best score so far is read back from orbax's metrics, so a
  resumed run keeps comparing against the checkpoint it already has.
  """

  def __init__(self, workdir: str, validator: Validator | None, every: int):
    self.validator, self.every = validator, max(int(every), 1)
    self.mngr = _manager(workdir, validator.mode) if validator is not None else None

  def due(self, done: int, total: int) -> bool:
    return self.validator is not None and (done % self.every == 0 or done == total)

  def _best(self) -> float | None:
    step = self.mngr.best_step()
    return None if step is None else float(self.mngr.metrics(step)["value"])

  def __call__(self, done: int, models: Mapping[str, Any], writer: Any) -> float:
    """Score `models` ({'encoder', 'decoder'}) at step `done`; save them if they are the best."""
    value = self.validator(models)
    writer.write_scalars(done, {f"val/{self.validator.metric}": value})
    best = self._best()
    better = best is None or (value < best if self.validator.mode == "min" else value > best)
    if better and done not in self.mngr.all_steps():
      self.mngr.save(done, args=ocp.args.Composite(models=ocp.args.StandardSave(dict(models))),
                     metrics={"value": value}, force=True)
    logging.info("stage 1 step %d: validation %s %.4f (best %s)%s", done, self.validator.metric,
                 value, best, ", saved as the best" if better else "")
    return value

  def close(self) -> None:
    if self.mngr is not None:
      self.mngr.wait_until_finished()
      self.mngr.close()
