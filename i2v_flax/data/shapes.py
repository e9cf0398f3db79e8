"""The procedural `shapes` dataset: bouncing objects on a drifting texture, built offline.

Why it exists: a dataset with *known* ground truth (object trajectories, background drift) that
builds in seconds without a download, so demos, tests and CPU benchmarks can run anywhere and the
evaluation can score samples against the true physics (oracle metrics).

Generative process of one example (`generate_example`; every random number is drawn from the
given `np.random.Generator` in a fixed order that does not depend on `resolution`, so the same
seed gives the same scene, in normalised units, at every resolution):

Coordinates. Positions are normalised to [0, 1] as (x, y) = (column, row). Pixel (row i,
column j) of an R x R frame has its centre at normalised ((j + 0.5) / R, (i + 0.5) / R); i.e. a
normalised coordinate `pos` lies at pixel-centre coordinate `pos * R - 0.5` (pixel index
`floor(pos * R)`). Sizes (`radius`) are normalised too: `radius * R` pixels.

Background. A smooth periodic colour texture: mean grey 128 plus 4 luminance plane waves
(amplitudes 6..15, integer spatial frequencies |k| <= 3 per axis, so the texture is exactly
periodic over the frame) plus 2 low-amplitude (2..6) waves per colour channel for a little
chroma. Values stay in [52, 204] (no clipping) and channels differ by at most ~25, so the
background is never close to an object colour. Frame t shows the texture translated by
`t * drift` pixels with wrap-around: it is evaluated analytically at the shifted pixel centres
(exact sub-pixel shift, no interpolation), then rounded to uint8. `drift` is in px/frame at the
example's resolution: speed uniform in [0.15, 0.6] * R / 32 px/frame (never zero), uniform
direction.

Objects. 1-3 (uniform) objects, each a disc (`shape_kind` 0: pixels whose centre lies within
`radius * R` of the object centre) or an axis-aligned square (1: pixel centres within
`radius * R` in both axes, so `radius` is the half side). Radius uniform in [0.08, 0.14]
(2.6-4.5 px at 32^2, 5.1-9.0 px at 64^2). Colours: distinct entries of the fixed saturated
`PALETTE`, drawn exactly (no anti-aliasing), so every object can be tracked by colour. Start
positions uniform with the object fully inside the frame (radius <= pos <= 1 - radius). Speed
uniform in [0.6, 1.6] / 32 normalised units per frame (0.6-1.6 px/frame at 32^2, 1.2-3.2 at
64^2, 2.4-6.4 at 128^2), uniform direction: the velocity is not visible in frame 0, so the
future is genuinely stochastic. Bouncing is elastic and discrete in time: before each step, a
velocity component flips sign if the step would put the object past a wall; then the object
moves by its velocity. Hence |dx| and |dy| per frame are constant over the whole trajectory and
the object always stays fully inside. Objects are drawn in index order (later ones occlude
earlier ones). Unused object slots have zero positions, colors, radius and shape_kind.
"""

from __future__ import annotations

import dataclasses

import numpy as np

NUM_FRAMES = 24
MAX_OBJECTS = 3
PALETTE = np.array([
    [230, 25, 25],    # red
    [25, 200, 25],    # green
    [30, 60, 235],    # blue
    [240, 220, 20],   # yellow
    [220, 30, 220],   # magenta
    [20, 210, 220],   # cyan
], dtype=np.uint8)
RADIUS_RANGE = (0.08, 0.14)  # Normalised units.
SPEED_RANGE = (0.6 / 32, 1.6 / 32)  # Normalised units per frame.
DRIFT_RANGE = (0.15 / 32, 0.6 / 32)  # Normalised units per frame (x R = px/frame).


@dataclasses.dataclass(frozen=True)
class Scene:
  """What a scene may contain: the ranges the generator draws from (normalised units).

  The default is the original, harder scene (1-3 small objects on a drifting texture). `SINGLE`
  (one large object, 0.4-1 px/frame at 32^2, on a static texture) is what the CPU demo trains
  on: there the oracle-z decoder gains several dB over z = 0 within a few hundred steps, against
  ~0.2 dB on the default scene, and the slower speed keeps the object sharp to the last frame
  (README, "Results on shapes").
  """

  min_objects: int = 1
  max_objects: int = MAX_OBJECTS
  radius_range: tuple[float, float] = RADIUS_RANGE
  speed_range: tuple[float, float] = SPEED_RANGE
  drift_range: tuple[float, float] = DRIFT_RANGE

  def __post_init__(self):
    if not 1 <= self.min_objects <= self.max_objects <= MAX_OBJECTS:
      raise ValueError(f"Scene needs 1 <= min_objects <= max_objects <= {MAX_OBJECTS}, got "
                       f"{self.min_objects}..{self.max_objects}.")
    for name in ("radius_range", "speed_range", "drift_range"):
      lo, hi = getattr(self, name)
      if not 0 <= lo <= hi:
        raise ValueError(f"Scene.{name}={getattr(self, name)} must satisfy 0 <= lo <= hi.")
    if self.radius_range[1] >= 0.5:
      raise ValueError(f"Scene.radius_range={self.radius_range}: a radius >= 0.5 does not fit "
                       "in the frame.")


DEFAULT_SCENE = Scene()
SINGLE = Scene(min_objects=1, max_objects=1, radius_range=(0.15, 0.22),
               speed_range=(0.4 / 32, 1.0 / 32), drift_range=(0.0, 0.0))
SCENES = {"default": DEFAULT_SCENE, "single": SINGLE}
NUM_LUMA_WAVES = 4
NUM_CHROMA_WAVES = 2  # Per channel.
MAX_FREQUENCY = 3


def _texture_waves(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Background plane waves: integer frequencies (W, 2), complex amplitudes (W,), channel
  weights (3, W)."""
  num_waves = NUM_LUMA_WAVES + 3 * NUM_CHROMA_WAVES
  freqs = rng.integers(-MAX_FREQUENCY, MAX_FREQUENCY + 1, size=(num_waves, 2))
  freqs[np.all(freqs == 0, axis=1)] = (1, 0)  # A zero frequency would be a constant offset.
  amps = np.concatenate([rng.uniform(6, 15, NUM_LUMA_WAVES),
                         rng.uniform(2, 6, 3 * NUM_CHROMA_WAVES)])
  phases = rng.uniform(0, 2 * np.pi, num_waves)
  weights = np.zeros((3, num_waves))
  weights[:, :NUM_LUMA_WAVES] = 1.0
  for c in range(3):
    start = NUM_LUMA_WAVES + c * NUM_CHROMA_WAVES
    weights[c, start:start + NUM_CHROMA_WAVES] = 1.0
  return freqs, amps * np.exp(1j * phases), weights


def render_background(freqs: np.ndarray, coeffs: np.ndarray, weights: np.ndarray,
                      resolution: int, offsets: np.ndarray) -> np.ndarray:
  """The texture translated by each (x, y) pixel offset in `offsets` (T, 2): float64 (T, R, R, 3).

  Evaluated as a product of per-axis complex exponentials, so a frame costs one small matmul.
  """
  centres = (np.arange(resolution) + 0.5) / resolution
  two_pi = 2 * np.pi
  ex = np.exp(1j * two_pi * freqs[:, 0:1] * centres[None])  # (W, R) over columns.
  ey = np.exp(1j * two_pi * freqs[:, 1:2] * centres[None])  # (W, R) over rows.
  grid = (ey[:, :, None] * ex[:, None, :]).reshape(len(freqs), -1)  # (W, R*R)
  shift = np.exp(-1j * two_pi * (offsets / resolution) @ freqs.T)  # (T, W)
  per_wave = shift * coeffs[None]  # (T, W)
  # Real matmuls: numpy's complex matmul is ~50x slower at these shapes.
  out = np.stack([(per_wave.real * weights[c]) @ grid.real
                  - (per_wave.imag * weights[c]) @ grid.imag for c in range(3)], axis=-1)
  return 128.0 + out.reshape(len(offsets), resolution, resolution, 3)


def trajectories(start: np.ndarray, velocity: np.ndarray, radius: np.ndarray,
                 num_frames: int) -> np.ndarray:
  """Discrete-time elastic bouncing: (num_frames, K, 2) float64 positions."""
  pos = start.copy()
  vel = velocity.copy()
  lo, hi = radius[:, None], 1.0 - radius[:, None]
  out = [pos.copy()]
  for _ in range(num_frames - 1):
    nxt = pos + vel
    vel = np.where((nxt < lo) | (nxt > hi), -vel, vel)
    pos = pos + vel
    out.append(pos.copy())
  return np.stack(out)


def object_masks(positions: np.ndarray, radius: np.ndarray, shape_kind: np.ndarray,
                 num_objects: int, resolution: int) -> np.ndarray:
  """Boolean (T, K, R, R) coverage of each object per frame (before occlusion)."""
  centres = np.arange(resolution) + 0.5
  num_frames = positions.shape[0]
  masks = np.zeros((num_frames, MAX_OBJECTS, resolution, resolution), dtype=bool)
  for k in range(int(num_objects)):
    cx = positions[:, k, 0, None, None].astype(np.float64) * resolution
    cy = positions[:, k, 1, None, None].astype(np.float64) * resolution
    dx = centres[None, None, :] - cx
    dy = centres[None, :, None] - cy
    r = float(radius[k]) * resolution
    if shape_kind[k] == 0:
      masks[:, k] = dx * dx + dy * dy <= r * r
    else:
      masks[:, k] = (np.abs(dx) <= r) & (np.abs(dy) <= r)
  return masks


def random_velocities(rng: np.random.Generator, count: int,
                      scene: Scene = DEFAULT_SCENE) -> np.ndarray:
  """(count, 2) velocities: uniform speed in `scene.speed_range`, uniform direction."""
  speed = rng.uniform(*scene.speed_range, size=count)
  angle = rng.uniform(0, 2 * np.pi, size=count)
  return speed[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=-1)


def true_futures(start: np.ndarray, radius: float, rng: np.random.Generator, count: int,
                 num_frames: int, scene: Scene = DEFAULT_SCENE) -> np.ndarray:
  """(count, num_frames, 2) trajectories of one object from `start` with fresh velocities.

  What the data says may happen after x_0 (which shows no velocity): the distribution that the
  samples of one x_0 should cover (the evaluation compares their spread with these).
  """
  velocity = random_velocities(rng, count, scene)
  starts = np.broadcast_to(np.asarray(start, np.float64), (count, 2))
  return trajectories(starts, velocity, np.full(count, radius), num_frames).transpose(1, 0, 2)


def generate_example(rng: np.random.Generator, resolution: int,
                     num_frames: int = NUM_FRAMES,
                     scene: Scene = DEFAULT_SCENE) -> dict[str, np.ndarray]:
  """One video plus its ground truth, following the process in the module docstring.

  `scene` sets the ranges drawn from (the docstring describes `DEFAULT_SCENE`).

  Returns a dict: video (T, R, R, 3) uint8; positions (T, 3, 2) float32 normalised (x, y);
  num_objects int32; colors (3, 3) uint8; radius (3,) float32 normalised; drift (2,) float32
  px/frame; shape_kind (3,) int32 (0 disc, 1 square). Unused object slots are zero.
  """
  if resolution < 8 or num_frames < 1:
    raise ValueError(f"generate_example needs resolution >= 8 and num_frames >= 1, got "
                     f"resolution={resolution}, num_frames={num_frames}.")
  k = MAX_OBJECTS
  num_objects = int(rng.integers(scene.min_objects, scene.max_objects + 1))
  shape_kind = rng.integers(0, 2, size=k).astype(np.int32)
  color_idx = rng.choice(len(PALETTE), size=k, replace=False)
  radius = rng.uniform(*scene.radius_range, size=k)
  start = rng.uniform(radius[:, None], 1.0 - radius[:, None], size=(k, 2))
  velocity = random_velocities(rng, k, scene)
  drift_speed = rng.uniform(*scene.drift_range)
  drift_angle = rng.uniform(0, 2 * np.pi)
  drift = drift_speed * resolution * np.array([np.cos(drift_angle), np.sin(drift_angle)])
  freqs, coeffs, weights = _texture_waves(rng)

  used = np.arange(k) < num_objects
  positions = trajectories(start, velocity, radius, num_frames)
  positions = np.where(used[None, :, None], positions, 0.0).astype(np.float32)
  radius = np.where(used, radius, 0.0).astype(np.float32)
  shape_kind = np.where(used, shape_kind, 0).astype(np.int32)
  colors = np.where(used[:, None], PALETTE[color_idx], 0).astype(np.uint8)

  offsets = np.arange(num_frames)[:, None] * drift[None].astype(np.float32)
  background = render_background(freqs, coeffs, weights, resolution, offsets.astype(np.float64))
  video = np.round(background).astype(np.uint8)
  masks = object_masks(positions, radius, shape_kind, num_objects, resolution)
  for i in range(num_objects):
    video[masks[:, i]] = colors[i]
  return {
      "video": video,
      "positions": positions,
      "num_objects": np.int32(num_objects),
      "colors": colors,
      "radius": radius,
      "drift": drift.astype(np.float32),
      "shape_kind": shape_kind,
  }
