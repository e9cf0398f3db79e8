"""Inference with a trained model: sample, explain, transfer motion, control, extend (SPEC §5).

    model = sampling.load("/tmp/shapes")
    videos = model.sample(x0, num_samples=4, temperature=1.0, seed=0)      # (B, 4, 16, H, W, 3)
    nu = model.encode(video)                                               # explain a video
    moved = model.transfer(video_a, x0_b)                                  # A's motion on B
    long = model.extend(x0, length=48)                                     # longer than 16 frames

Directions: stage 2 learns `z = T(nu; c)`. Sampling draws nu ~ N(0, T^2 I) and runs T forward;
explaining runs the encoder (its mean: the most likely z) and T^-1. All arrays are float32 in
[-1, 1], channels-last; batches are padded to the device count and sharded over the data mesh.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from i2v_flax import errors, parallel
from i2v_flax.train import stage1, stage2

NUM_GENERATED_FRAMES = 16  # The decoder always produces x_1..x_16.


@dataclasses.dataclass
class VideoModel:
  """A trained stage 1 + stage 2 with jitted, mesh-batched inference methods."""

  config: ml_collections.ConfigDict
  step: int
  variables: dict[str, Any]
  stage1_models: Any
  flow: Any
  embedder: Any
  mesh: jax.sharding.Mesh

  # ------------------------------------------------------------------ jitted pure pieces
  @functools.cached_property
  def _generate(self):
    def fn(variables, x0, nu, eta):
      cond = stage2.condition(self.embedder, variables["embedder"], x0, eta)
      z = stage2.flow_forward(self.flow, variables["flow"], nu, cond)
      return stage1.decode(self.stage1_models.decoder, variables["decoder"], x0, z), z
    return jax.jit(fn)

  @functools.cached_property
  def _decode(self):
    return jax.jit(lambda variables, x0, z: stage1.decode(
        self.stage1_models.decoder, variables["decoder"], x0, z))

  @functools.cached_property
  def _explain(self):
    def fn(variables, video, eta):
      _, mu, _ = stage1.encode(self.stage1_models.encoder, variables["encoder"], video[:, 1:], None,
                             video[:, 0])
      cond = stage2.condition(self.embedder, variables["embedder"], video[:, 0], eta)
      nu, _ = stage2.flow_inverse(self.flow, variables["flow"], mu, cond)
      return nu
    return jax.jit(fn)

  # ------------------------------------------------------------------ helpers
  @property
  def resolution(self) -> int:
    return int(self.config.data.resolution)

  @property
  def z_dim(self) -> int:
    return int(self.config.stage1.z_dim)

  @property
  def has_control(self) -> bool:
    return bool(self.config.stage2.control)

  @property
  def control_is_optional(self) -> bool:
    """Trained with `stage2.eta_dropout > 0`: without eta it samples unconditionally."""
    return self.has_control and float(self.config.stage2.get("eta_dropout", 0.0)) > 0

  def _batched(self, fn, *arrays):
    """Run fn over arrays whose leading axis is the batch, in chunks of at most
    `config.eval.batch_size` (rounded up to the device count), each padded, sharded and unpadded.

    Chunking bounds memory: one bair-sized call on 64 videos needs more than 24 GB of host RAM.
    Every chunk of one call has the same shape, so a single compile serves any batch size.
    """
    n = arrays[0].shape[0]
    n_dev = self.mesh.devices.size
    chunk = -(-min(n, max(1, int(self.config.eval.batch_size))) // n_dev) * n_dev
    pad = (-n) % chunk  # Repeat the last row so every chunk has the same (compiled) shape.
    padded = [None if a is None else np.pad(np.asarray(a, np.float32),
                                            [(0, pad)] + [(0, 0)] * (np.ndim(a) - 1), mode="edge")
              for a in arrays]
    outs = []
    for start in range(0, n + pad, chunk):
      # Every process holds the whole batch (multi-host report): each device takes its rows.
      parts = [None if a is None else parallel.global_from_host(a[start:start + chunk],
                                                                self.mesh) for a in padded]
      with self.mesh:
        outs.append(parallel.to_host(fn(self.variables, *parts)))
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs)[:n], *outs)

  def _check_x0(self, x0: np.ndarray) -> np.ndarray:
    x0 = np.asarray(x0, np.float32)
    if x0.ndim == 3:
      x0 = x0[None]
    r = self.resolution
    if x0.ndim != 4 or x0.shape[1:] != (r, r, 3):
      raise errors.InvalidInput(f"x0 must be (B, {r}, {r}, 3) in [-1, 1], got {x0.shape}. Fix: read "
                       "images with i2v_flax.video_io.read_image(path, model.resolution).")
    return x0

  def _check_eta(self, eta, batch: int, rng: np.random.Generator) -> np.ndarray | None:
    if not self.has_control:
      if eta is not None:
        raise errors.InvalidInput("This model was trained without control (config.stage2.control is "
                         "empty); drop eta or train with a control config.")
      return None
    dim = int(self.config.stage2.eta_dim)
    optional = self.control_is_optional
    if eta is None:
      if optional:  # Trained with eta dropout: sample without control.
        return np.zeros((batch, dim + 1), np.float32)
      logging.info("No eta given for a control model: drawing eta from its prior.")
      return random_eta(self.config, batch, rng)
    eta = np.asarray(eta, np.float32)
    eta = np.broadcast_to(eta, (batch, dim)) if eta.ndim == 1 else eta
    if eta.shape != (batch, dim):
      raise errors.InvalidInput(f"eta must be ({batch}, {dim}) or ({dim},), got {eta.shape}. Fix: build it "
                       "with i2v_flax.sampling.eta_from_values(config, values).")
    if optional:  # [eta, given = 1], as stage2_steps.optional_eta.
      return np.concatenate([eta, np.ones((batch, 1), np.float32)], axis=-1)
    return eta

  def _draw_nu(self, shape, temperature: float, rng: np.random.Generator) -> np.ndarray:
    return (temperature * rng.standard_normal(shape)).astype(np.float32)

  # ------------------------------------------------------------------ public API
  def sample(self, x0: np.ndarray, num_samples: int = 1, temperature: float = 1.0,
             seed: int = 0, eta: np.ndarray | None = None, prior: str = "cinn") -> np.ndarray:
    """(B, num_samples, 16, H, W, 3) videos continuing each x_0.

    prior='cinn' draws nu and maps it through the flow; prior='gaussian' feeds z ~ N(0, T^2 I)
    straight into the decoder (the paper's "w/o cINN" ablation).
    """
    frames, _ = self._sample_with_z(x0, num_samples, temperature, seed, eta, prior)
    return frames

  def _sample_with_z(self, x0, num_samples, temperature, seed, eta, prior):
    if prior not in ("cinn", "gaussian"):
      raise errors.InvalidInput(f"prior must be 'cinn' or 'gaussian', got {prior!r}.")
    x0 = self._check_x0(x0)
    b = x0.shape[0]
    rng = np.random.default_rng(seed)
    x0_rep = np.repeat(x0, num_samples, axis=0)
    nu = self._draw_nu((b * num_samples, self.z_dim), temperature, rng)
    if prior == "gaussian":
      frames = self._batched(self._decode, x0_rep, nu)
      z = nu
    else:
      eta = self._check_eta(eta, b, rng)
      eta_rep = None if eta is None else np.repeat(eta, num_samples, axis=0)
      frames, z = self._batched(self._generate, x0_rep, nu, eta_rep)
    return (frames.reshape(b, num_samples, *frames.shape[1:]),
            z.reshape(b, num_samples, self.z_dim))

  def encode(self, video: np.ndarray, eta: np.ndarray | None = None) -> np.ndarray:
    """nu (B, z_dim) that explains each video (B, 17, H, W, 3): T^-1(mean of q(z|x_1..16); x_0)."""
    video = np.asarray(video, np.float32)
    r = self.resolution
    if video.ndim != 5 or video.shape[1:] != (NUM_GENERATED_FRAMES + 1, r, r, 3):
      raise errors.InvalidInput(f"video must be (B, 17, {r}, {r}, 3) in [-1, 1], got {video.shape}.")
    eta = self._check_eta(eta, video.shape[0], np.random.default_rng(0))
    return self._batched(self._explain, video, eta)

  def transfer(self, video_a: np.ndarray, x0_b: np.ndarray, eta_a: np.ndarray | None = None,
               eta_b: np.ndarray | None = None) -> np.ndarray:
    """The motion of each video A applied to each start frame B: (B, 16, H, W, 3)."""
    nu = self.encode(video_a, eta_a)
    x0_b = self._check_x0(x0_b)
    if x0_b.shape[0] != nu.shape[0]:
      raise errors.InvalidInput(f"transfer needs as many x0_b ({x0_b.shape[0]}) as videos ({nu.shape[0]}).")
    eta_b = self._check_eta(eta_b if eta_b is not None else eta_a, x0_b.shape[0],
                            np.random.default_rng(0))
    frames, _ = self._batched(self._generate, x0_b, nu, eta_b)
    return frames

  def extend(self, x0: np.ndarray, length: int = 32, num_samples: int = 1,
             temperature: float = 1.0, seed: int = 0, eta: np.ndarray | None = None,
             mode: str = "nu") -> np.ndarray:
    """(B, num_samples, length, H, W, 3): videos longer than 16 frames, chunk by chunk.

    Each chunk starts from the last generated frame. mode='nu' (the paper's description) keeps
    the sampled nu and re-runs the flow on the new start frame, so the motion "style" persists
    while adapting to where objects now are; mode='z' reuses the first chunk's z and skips the
    cINN (what the reference release does).
    """
    if mode not in ("nu", "z"):
      raise errors.InvalidInput(f"mode must be 'nu' or 'z', got {mode!r}.")
    if length < 1:
      raise errors.InvalidInput(f"length must be >= 1, got {length}.")
    x0 = self._check_x0(x0)
    b = x0.shape[0]
    rng = np.random.default_rng(seed)
    nu = self._draw_nu((b * num_samples, self.z_dim), temperature, rng)  # Same draw as sample().
    eta = self._check_eta(eta, b, rng)
    current = np.repeat(x0, num_samples, axis=0)
    eta_rep = None if eta is None else np.repeat(eta, num_samples, axis=0)
    chunks, z = [], None
    while sum(c.shape[1] for c in chunks) < length:
      if mode == "z" and z is not None:
        frames = self._batched(self._decode, current, z)
      else:
        frames, z = self._batched(self._generate, current, nu, eta_rep)
      chunks.append(frames)
      current = frames[:, -1]
    video = np.concatenate(chunks, axis=1)[:, :length]
    return video.reshape(b, num_samples, *video.shape[1:])


def random_eta(config: ml_collections.ConfigDict, batch: int,
               rng: np.random.Generator) -> np.ndarray:
  """Draw eta from a broad prior when a control model is sampled without one."""
  from i2v_flax import data
  kind, dim = config.stage2.control, int(config.stage2.eta_dim)
  if kind == "bins":
    from i2v_flax.data.control import bair_eta_from_unit
    return bair_eta_from_unit(rng.uniform(0, 1, (batch, 3)))
  angle = rng.uniform(0, 2 * np.pi, batch)
  direction = np.stack([np.cos(angle), np.sin(angle)], -1)
  if dim == 2:
    return direction.astype(np.float32)
  if dim == 4:
    return np.stack([data.shapes_eta(p, d) for p, d in
                     zip(rng.uniform(0.15, 0.85, (batch, 2)), direction)]).astype(np.float32)
  raise errors.InvalidInput(f"No eta prior for control={kind!r} with eta_dim={dim}; pass eta explicitly.")


def eta_from_values(config: ml_collections.ConfigDict, values: list[float]) -> np.ndarray:
  """User-facing eta: bair takes xyz (3 floats, metres); shapes x,y,dx,dy; textures dx,dy."""
  from i2v_flax import data
  kind, dim = config.stage2.control, int(config.stage2.eta_dim)
  values = np.asarray(values, np.float32)
  if not kind:
    raise errors.InvalidInput("This model has no control input; drop --eta.")
  if kind == "bins":
    if values.shape != (3,):
      raise errors.InvalidInput(f"bair eta is the end-effector x,y,z (3 numbers), got {values.tolist()}.")
    return data.bair_eta(values)
  if dim == 4:
    if values.shape != (4,):
      raise errors.InvalidInput("shapes eta is x,y (object 0's final position in [0,1]) and dx,dy (drift "
                       f"direction), 4 numbers; got {values.tolist()}.")
    return data.shapes_eta(values[:2], values[2:])
  if values.shape != (dim,):
    raise errors.InvalidInput(f"eta needs {dim} numbers, got {values.tolist()}.")
  norm = np.linalg.norm(values)
  return values / norm if dim == 2 and norm > 0 else values


def load(workdir: str, config: ml_collections.ConfigDict | None = None,
         mesh: jax.sharding.Mesh | None = None) -> VideoModel:
  """The latest stage-1 and stage-2 checkpoints of a workdir as a ready-to-use VideoModel."""
  config2, flow_vars = stage2.restore_stage2(workdir, config)
  stage1_dir = config2.stage2.stage1_workdir or workdir
  config1, s1_vars = stage1.restore_stage1(stage1_dir, select=config2.stage1.get("select"))
  models = stage1.build_models(config1)
  flow, embedder = stage2.build_flow(config2)
  mesh = mesh or parallel.make_mesh()
  variables = parallel.replicate({**s1_vars, **{k: v for k, v in flow_vars.items()
                                                if k in ("flow", "embedder")}}, mesh)
  step = int(flow_vars.get("step", -1)) if isinstance(flow_vars, dict) else -1
  return VideoModel(config=config2, step=step, variables=variables, stage1_models=models,
                    flow=flow, embedder=embedder, mesh=mesh)
