"""Which real frames each generated frame is scored against, per dataset and protocol (SPEC §6).

The reference lines its sequences up differently per dataset (eval_synthesis_quality.py), and
feeds the same pair of sequences to FVD, DTFVD, LPIPS and FID:
  bair (and shapes)  [x_0, g_1..g_15] vs real x_0..x_15   (Unterthiner et al.'s 16 frames)
  iper               [x_0, g_1..g_16] vs real x_0..x_16   (17 frames)
  landscape, dtdb    [g_1..g_16]      vs real x_0..x_15   (one frame off: g_i meets x_{i-1})
`protocol='reference'` reproduces that, so the numbers compare with the paper's tables.
`protocol='aligned'` scores every generated frame against its own time step: the video metrics
keep bair's and iper's sequences (already aligned) and compare textures' g_1..g_16 with x_1..x_16;
the frame metrics (LPIPS, FID) see only generated frames, g_1..g_16 vs x_1..x_16, since a copied
real x_0 scored against itself says nothing about the model.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from i2v_flax import errors

PROTOCOLS = ("reference", "aligned")
KIND = {"bair": "bair", "shapes": "bair", "iper": "iper", "landscape": "offset", "dtdb": "offset"}
USES = ("video", "frames")  # video: FVD, DTFVD; frames: LPIPS, FID.


@dataclasses.dataclass(frozen=True)
class Alignment:
  """real = real[:, real_start:real_stop]; fake = [x_0 if with_x0] + generated[:, :gen_stop]."""
  real_start: int
  real_stop: int
  with_x0: bool
  gen_stop: int

  def describe(self) -> str:
    gen = f"g_1..g_{self.gen_stop}"
    fake = f"[x_0, {gen}]" if self.with_x0 else gen
    return f"{fake} vs real x_{self.real_start}..x_{self.real_stop - 1}"


_REFERENCE = {"bair": Alignment(0, 16, True, 15), "iper": Alignment(0, 17, True, 16),
              "offset": Alignment(0, 16, False, 16)}
_ALIGNED_VIDEO = {"bair": _REFERENCE["bair"], "iper": _REFERENCE["iper"],
                  "offset": Alignment(1, 17, False, 16)}
_GENERATED_ONLY = Alignment(1, 17, False, 16)


def alignment(dataset: str, protocol: str, use: str) -> Alignment:
  """The frame alignment of `use` ('video' or 'frames') for a dataset under a protocol."""
  if protocol not in PROTOCOLS:
    raise errors.InvalidInput(f"Unknown eval.protocol {protocol!r}. Fix: --config.eval.protocol=one of "
                     f"{PROTOCOLS}.")
  if use not in USES:
    raise ValueError(f"Unknown alignment use {use!r}; one of {USES}.")
  kind = KIND.get(dataset, "bair")
  if protocol == "reference":
    return _REFERENCE[kind]
  return _ALIGNED_VIDEO[kind] if use == "video" else _GENERATED_ONLY


def real_part(real: np.ndarray, a: Alignment) -> np.ndarray:
  """The real sequences of an alignment from (N, 17, ...) clips x_0..x_16 (a view, no copy)."""
  if real.shape[1] < a.real_stop:
    raise ValueError(f"The protocol needs {a.real_stop} real frames per clip, got "
                     f"{real.shape[1]}. Fix: --config.data.clip_length=17.")
  return real[:, a.real_start:a.real_stop]


def fake_part(real: np.ndarray, generated: np.ndarray, a: Alignment) -> np.ndarray:
  """The generated sequences of an alignment from (N, >=16, ...) frames g_1..g_16."""
  gen = generated[:, :a.gen_stop]
  return np.concatenate([real[:, :1], gen], axis=1) if a.with_x0 else gen


def describe(dataset: str, protocol: str) -> dict[str, str]:
  """What the eval JSON records about the alignment it used."""
  return {"protocol": protocol,
          "fvd_dtfvd": alignment(dataset, protocol, "video").describe(),
          "lpips_fid": alignment(dataset, protocol, "frames").describe()}
