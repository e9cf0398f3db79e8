"""Ground-truth ("oracle") metrics for the procedural `shapes` dataset.

Because we know how every clip was generated (i2v_flax/data/shapes.py: saturated palette colours
drawn exactly, smooth low-saturation background translating by `drift`, elastic bouncing with
constant per-frame speed), generated videos can be scored against the physics instead of only
against a feature network:

  found_fraction    fraction of (video, generated frame, object) slots where the object was
                    tracked (frame 0 is the real x_0 and does not count).
  bg_psnr           PSNR (dB, capped at 100) of generated frames 1.. vs the real clip's frames,
                    outside all objects of both clips (colour masks dilated by 1 px): does the
                    background keep drifting like the real one?
  speed_std         std over time of the per-frame displacement magnitude (px/frame), mean over
                    tracked objects and videos: real objects move at constant speed.
  speed_std_real    the same on the real clips: the tracker's pixel-quantisation floor (about
                    0.05 px/frame for discs, 0.25 for squares, whose edges pin the centre only to
                    a +-0.25 px interval per axis); compare speed_std against it.
  mean_speed        mean per-frame displacement (px/frame); ~0 flags a static video.
  final_pos_error   |object 0's tracked position in the last frame - eta's position| in px (the
                    control accuracy; eta defaults to the real clip's final position).
  motion_fd         Fréchet distance between real and generated distributions of object 0's
                    motion feature (mean speed px/frame, cos θ, sin θ), θ = direction of p_2 - p_0
                    (the initial velocity, which x_0 does not show: the stochastic part).
  final_pos_spread  (diversity) per x_0, std over samples of object 0's final position, mean of
                    the x and y stds, in px; mean over x_0s.
  true_final_pos_spread  the same for the *true* futures of each x_0: the generator's physics
                    from object 0's real start position with fresh velocities
                    (`true_final_position_spread`), as many per x_0 as there are samples, so
                    the two spreads are estimated alike. Samples should reach a good fraction of
                    it: a model that sends every sample the same way has spread ~0.

Tracking: an object's pixels are those within `tol` (max over RGB, uint8 units) of its colour;
an object counts as found when enough pixels match and at least half of them fall inside the
shape drawn at the estimated centre (and fill at least half of it), so scattered matching noise
is not an object. The centroid seeds a sub-pixel template fit using the known shape and radius:
candidate centres on a 0.1 px grid within +-0.7 px (after a 1 px grid over +-r when a later
object may occlude) are rendered with the generator's rasterisation rule, and the centre is the
mean of the candidates with the fewest mismatched pixels, ignoring pixels of objects drawn later.
Positions are in the generator's normalised convention
(pixel column j has centre (j + 0.5) / R), errors in pixels at the clip's resolution.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from i2v_flax.evaluation.frechet import frechet_distance
from i2v_flax.evaluation.i3d import to_uint8

COLOR_TOL = 48  # Background channels stay within ~25 of each other; palette colours span >170.
MIN_AREA_FRACTION = 0.2  # Found only if at least this fraction of the object's area matches,
MIN_AGREEMENT = 0.5  # and the mask and the shape drawn at the fitted centre mostly coincide.
PSNR_CAP = 100.0  # dB reported for identical backgrounds.
_OFFSETS = np.round(np.arange(-0.7, 0.7001, 0.1), 6)


def _render(kind: int, r: float, cx: np.ndarray, cy: np.ndarray, xs: np.ndarray,
            ys: np.ndarray) -> np.ndarray:
  """(C,) candidate centres -> (C, h, w) coverage, pixel centres xs/ys (+0.5), generator's rule."""
  dx = xs[None, None, :] - cx[:, None, None]
  dy = ys[None, :, None] - cy[:, None, None]
  if kind == 0:
    return dx * dx + dy * dy <= r * r
  return (np.abs(dx) <= r) & (np.abs(dy) <= r)


def _grid_search(own: np.ndarray, care: np.ndarray, centre: np.ndarray, offsets: np.ndarray,
                 kind: int, r: float, margin: float) -> np.ndarray:
  """Mean of the candidate centres (centre + offsets^2 grid) with the fewest mismatched pixels."""
  h, w = own.shape
  lo = np.floor(centre - r - margin).astype(int).clip(0)
  hi = np.minimum(np.ceil(centre + r + margin).astype(int), (w, h))
  win, care = own[lo[1]:hi[1], lo[0]:hi[0]], care[lo[1]:hi[1], lo[0]:hi[0]]
  xs, ys = np.arange(lo[0], hi[0]) + 0.5, np.arange(lo[1], hi[1]) + 0.5
  gx, gy = np.meshgrid(offsets + centre[0], offsets + centre[1])
  cx, cy = gx.ravel(), gy.ravel()
  mismatch = np.sum((_render(kind, r, cx, cy, xs, ys) != win[None]) & care[None], axis=(1, 2))
  best = mismatch == mismatch.min()
  return np.array([cx[best].mean(), cy[best].mean()])


def _fit_centre(own: np.ndarray, ignore: np.ndarray, centroid: np.ndarray, kind: int,
                r: float) -> np.ndarray:
  """Sub-pixel centre (pixel-centre units) that best reproduces the object's mask.

  When a later object hides part of this one, the visible centroid can be off by up to r, so a
  coarse 1 px search over +-r precedes the fine 0.1 px one (which spans +-0.7 px).
  """
  care = ~ignore
  centre = centroid
  if ignore.any():
    coarse = np.arange(-np.ceil(r), np.ceil(r) + 0.01, 1.0)
    centre = _grid_search(own, care, centre, coarse, kind, r, r + 2)
  return _grid_search(own, care, centre, _OFFSETS, kind, r, 2)


def _agreement(own: np.ndarray, ignore: np.ndarray, centre: np.ndarray, kind: int,
               r: float) -> float:
  """min(recall, precision) of the colour mask vs the object rendered at `centre`.

  Scattered matching pixels (noise, colour casts) have a centroid but fill little of the shape
  there, so they do not count as a found object.
  """
  h, w = own.shape
  template = _render(kind, r, centre[:1], centre[1:], np.arange(w) + 0.5,
                     np.arange(h) + 0.5)[0] & ~ignore
  hit = np.sum(template & own)
  return min(hit / max(template.sum(), 1), hit / max(own.sum(), 1))


def track_objects(videos: np.ndarray, metadata: Mapping[str, np.ndarray],
                  tol: int = COLOR_TOL, refine: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Track every object of (N, T, H, W, 3) clips by colour.

  metadata: colors (N, K, 3) uint8, radius (N, K) normalised, num_objects (N,), and optionally
  shape_kind (N, K) (without it, or with refine=False, the plain colour centroid is used).
  Returns positions (N, T, K, 2) normalised (x, y), NaN where not found, and found (N, T, K).
  """
  videos = to_uint8(videos).astype(np.int16)
  n, t, h, w, _ = videos.shape
  colors = np.asarray(metadata["colors"]).astype(np.int16)
  radius = np.asarray(metadata["radius"], np.float64) * w
  num_objects = np.asarray(metadata["num_objects"]).reshape(n)
  kinds = metadata.get("shape_kind")
  k_max = colors.shape[1]
  pos = np.full((n, t, k_max, 2), np.nan)
  jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
  for v in range(n):
    nk = int(num_objects[v])
    matches = np.stack([np.max(np.abs(videos[v] - colors[v, k]), axis=-1) <= tol
                        for k in range(nk)], axis=1)  # (T, nk, H, W)
    for k in range(nk):
      area = (np.pi if kinds is None or int(kinds[v][k]) == 0 else 4.0) * radius[v, k] ** 2
      min_pixels = max(1.0, MIN_AREA_FRACTION * area)
      later = matches[:, k + 1:].any(axis=1)
      for f in range(t):
        own = matches[f, k]
        count = own.sum()
        if count < min_pixels:
          continue
        c = np.array([(own * jj).sum(), (own * ii).sum()]) / count
        kind = 0 if kinds is None else int(kinds[v][k])
        if refine and kinds is not None:
          c = _fit_centre(own, later[f], c, kind, radius[v, k])
        if _agreement(own, later[f], c, kind, radius[v, k]) >= MIN_AGREEMENT:
          pos[v, f, k] = c / np.array([w, h])
  return pos, ~np.isnan(pos[..., 0])


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
  mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
  return PSNR_CAP if mse <= 255.0**2 * 10 ** (-PSNR_CAP / 10) else 10 * np.log10(255.0**2 / mse)


def _dilate(mask: np.ndarray) -> np.ndarray:
  """3x3 binary dilation over the last two axes."""
  out = mask.copy()
  out[..., 1:, :] |= mask[..., :-1, :]
  out[..., :-1, :] |= mask[..., 1:, :]
  grown = out.copy()
  grown[..., :, 1:] |= out[..., :, :-1]
  grown[..., :, :-1] |= out[..., :, 1:]
  return grown


def background_psnr(real: np.ndarray, fake: np.ndarray, metadata: Mapping[str, np.ndarray],
                    tol: int = COLOR_TOL) -> np.ndarray:
  """(N,) PSNR of frames 1.. outside every object (of either clip, dilated by 1 px)."""
  real, fake = to_uint8(real), to_uint8(fake)
  colors = np.asarray(metadata["colors"]).astype(np.int16)
  num_objects = np.asarray(metadata["num_objects"]).reshape(-1)
  out = []
  for v in range(real.shape[0]):
    r, f = real[v, 1:].astype(np.int16), fake[v, 1:].astype(np.int16)
    objects = np.zeros(r.shape[:-1], bool)
    for k in range(int(num_objects[v])):
      for clip in (r, f):
        objects |= np.max(np.abs(clip - colors[v, k]), axis=-1) <= tol
    keep = ~_dilate(objects)
    out.append(_psnr(r[keep], f[keep]) if keep.any() else np.nan)
  return np.asarray(out)


def _speeds(pos_px: np.ndarray, found: np.ndarray) -> np.ndarray:
  """(T, 2), (T,) -> per-frame displacement magnitudes where both frames were tracked."""
  ok = found[1:] & found[:-1]
  return np.linalg.norm(np.diff(pos_px, axis=0), axis=-1)[ok]


def speed_stats(pos: np.ndarray, found: np.ndarray, res: int) -> tuple[float, float]:
  """Mean over (video, object) of the std and the mean of per-frame speed (>= 3 displacements)."""
  stds, means = [], []
  for v in range(pos.shape[0]):
    for k in range(pos.shape[2]):
      s = _speeds(pos[v, :, k] * res, found[v, :, k])
      if s.size >= 3:
        stds.append(s.std())
        means.append(s.mean())
  return (float(np.mean(stds)) if stds else np.nan, float(np.mean(means)) if means else np.nan)


def motion_features(pos: np.ndarray, found: np.ndarray, res: int) -> np.ndarray:
  """(M, 3) object-0 features (mean speed px/frame, cos θ, sin θ) of videos where defined."""
  feats = []
  for v in range(pos.shape[0]):
    p, ok = pos[v, :, 0] * res, found[v, :, 0]
    s = _speeds(p, ok)
    if s.size and ok[0] and ok[2]:
      d = p[2] - p[0]
      norm = np.linalg.norm(d)
      # No motion has no direction: (0, 0) keeps static videos in the distribution (far away).
      feats.append([s.mean(), *(d / norm if norm > 1e-6 else (0.0, 0.0))])
  return np.asarray(feats, np.float64).reshape(-1, 3)


def _final_target(metadata: Mapping[str, np.ndarray], eta: np.ndarray | None) -> np.ndarray:
  if eta is not None:
    return np.asarray(eta, np.float64)[:, :2]
  return np.asarray(metadata["positions"], np.float64)[:, -1, 0]


def shapes_metrics(real: np.ndarray, fake: np.ndarray, metadata: Mapping[str, np.ndarray],
                   eta: np.ndarray | None = None, tol: int = COLOR_TOL,
                   real_tracks: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
  """Oracle metrics of fake clips against real ones; both (N, T, H, W, 3), frame 0 = x_0.

  eta (N, >= 2): the requested object-0 final position (normalised); default: the real one.
  real_tracks: `track_objects(real, metadata)` if already computed (the protocol scores several
  sample sets and baselines against the same real clips).
  """
  res = np.shape(real)[3]
  real_pos, real_found = real_tracks if real_tracks is not None else track_objects(
      real, metadata, tol)
  fake_pos, fake_found = track_objects(fake, metadata, tol)
  slots = np.arange(real_pos.shape[2])[None] < np.asarray(metadata["num_objects"]).reshape(-1, 1)
  speed_std, mean_speed = speed_stats(fake_pos, fake_found, res)
  speed_std_real, _ = speed_stats(real_pos, real_found, res)
  target = _final_target(metadata, eta)
  final_ok = fake_found[:, -1, 0]
  err = np.linalg.norm(fake_pos[:, -1, 0] - target, axis=-1)[final_ok] * res
  real_feats, fake_feats = (motion_features(real_pos, real_found, res),
                            motion_features(fake_pos, fake_found, res))
  enough = len(real_feats) >= 2 and len(fake_feats) >= 2
  return {
      "found_fraction": float(fake_found[:, 1:][np.broadcast_to(
          slots[:, None], fake_found[:, 1:].shape)].mean()),
      "bg_psnr": float(np.nanmean(background_psnr(real, fake, metadata, tol))),
      "speed_std": speed_std,
      "speed_std_real": speed_std_real,
      "mean_speed": mean_speed,
      "final_pos_error": float(err.mean()) if err.size else np.nan,
      "final_found_fraction": float(final_ok.mean()),
      "motion_fd": frechet_distance(real_feats, fake_feats) if enough else np.nan,
  }


def final_position_spread(samples: np.ndarray, metadata: Mapping[str, np.ndarray],
                          tol: int = COLOR_TOL) -> float:
  """(N, S, T, H, W, 3) S samples per x_0 -> mean over x_0 of object 0's final-position std (px)."""
  samples = np.asarray(samples)[:, :, -1:]  # Only the final frame matters.
  n, s = samples.shape[:2]
  rep = {k: np.repeat(np.asarray(v), s, axis=0) for k, v in metadata.items()
         if k in ("colors", "radius", "num_objects", "shape_kind")}
  pos, found = track_objects(np.reshape(samples, (n * s,) + samples.shape[2:]), rep, tol)
  final = pos[:, -1, 0].reshape(n, s, 2) * samples.shape[4]
  ok = found[:, -1, 0].reshape(n, s)
  spreads = [final[v][ok[v]].std(axis=0).mean() for v in range(n) if ok[v].sum() >= 2]
  return float(np.mean(spreads)) if spreads else np.nan


def true_final_position_spread(metadata: Mapping[str, np.ndarray], num_samples: int,
                               num_frames: int, resolution: int, scene: Any,
                               seed: int = 0) -> float:
  """The final-position spread (px) of the true futures of each x_0 (see module docstring).

  metadata: positions (N, T, K, 2) of the real clips (frame 0 = x_0) and radius (N, K);
  scene: the `shapes.Scene` the data was generated with (its speed range); num_frames: frames
  including x_0. Uses std with ddof=0 over `num_samples` futures, like `final_position_spread`.
  """
  from i2v_flax.data import shapes
  if num_samples < 2:
    raise ValueError(f"A spread needs at least 2 samples per x_0, got {num_samples}.")
  rng = np.random.default_rng(seed)
  starts = np.asarray(metadata["positions"], np.float64)[:, 0, 0]
  radius = np.asarray(metadata["radius"], np.float64)[:, 0]
  spreads = [shapes.true_futures(start, r, rng, num_samples, num_frames, scene)[:, -1].std(
      axis=0).mean() * resolution for start, r in zip(starts, radius)]
  return float(np.mean(spreads))


def report_metrics(clips: Mapping[str, np.ndarray], samples: np.ndarray,
                   resolution: int) -> dict[str, float | None]:
  """The oracle metrics for `i2v_flax.report`: sample 0 of each x_0 vs its real clip, plus spread.

  clips: a `create_iterator(..., with_metadata=True)` batch (video (B, 17, R, R, 3), metadata,
  optional eta); samples: (b <= B, S, 16, R, R, 3) generated frames for the first b clips. eta is
  not used as a target (the report samples control models with random eta): the final-position
  error is against the real clip's final position. Undefined values (nothing tracked) are None,
  so the dict is valid JSON.
  """
  b = samples.shape[0]
  real = np.asarray(clips["video"])[:b]
  if real.shape[2] != resolution or samples.shape[3] != resolution:
    raise ValueError(f"Clips {real.shape} / samples {samples.shape} are not at {resolution}^2.")
  meta = {k: np.asarray(v)[:b] for k, v in clips.items() if k != "video" and k != "eta"}
  fake = np.concatenate([real[:, :1], np.asarray(samples)[:, 0]], axis=1)
  out = shapes_metrics(real, fake, meta)
  if samples.shape[1] >= 2:
    out["final_pos_spread"] = final_position_spread(samples, meta)
  return {k: None if v is None or not np.isfinite(v) else float(v) for k, v in out.items()}
