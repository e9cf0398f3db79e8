"""Reading the reference parity fixtures (format: `shared/reference/README.md`), with numpy only.

A fixture is `<name>.json` (metadata, a rule per state_dict entry and input) plus `<name>.npz`
(outputs, stored entries and small inputs). Weights are *rebuilt* from their rules rather than
stored, so a fixture of a large model stays small; every rebuilt array is checked against the
checksums in the JSON, so a changed random stream fails loudly instead of giving wrong parity.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import numpy as np

from i2v_flax import errors

INPUT_INDEX_OFFSET = 1_000_000  # Input k is drawn with index 1_000_000 + k (fixtures README).


class FixtureError(errors.InvalidInput):
  """A fixture file is missing, malformed or does not match its own checksums."""


@dataclasses.dataclass
class Fixture:
  """One parity fixture: its metadata, the rebuilt state_dict, the inputs and stored arrays."""

  name: str
  meta: dict[str, Any]
  arrays: Mapping[str, np.ndarray]  # Everything in the npz, keyed as stored ('output/nu', ...).
  state_dict: dict[str, np.ndarray]  # Torch state_dict order and layout.
  inputs: dict[str, np.ndarray]  # Torch layout.

  @property
  def config(self) -> dict[str, Any]:
    return self.meta.get("config", {})

  def output(self, name: str) -> np.ndarray:
    return np.asarray(self.arrays[name])

  def tolerance(self, output_name: str) -> float:
    """`max(1e-5, 10 x float64_reference_max_abs_diff)` unless the JSON states a tolerance."""
    for out in self.meta.get("outputs", []):
      if out["name"] == output_name:
        if "tolerance" in out:
          return float(out["tolerance"])
        return max(1e-5, 10.0 * float(out.get("float64_reference_max_abs_diff", 0.0)))
    return 1e-5


def draw(seed: int, index: int, shape, rule: Mapping[str, Any]) -> np.ndarray:
  """The fixtures' numpy weight rule (README: 'The weight rule')."""
  rng = np.random.default_rng([int(seed), int(index)])
  shape = tuple(int(s) for s in shape)
  if rule["kind"] == "normal":
    return (rule["mean"] + rule["std"] * rng.standard_normal(shape)).astype(np.float32)
  if rule["kind"] == "uniform":
    return rng.uniform(rule["lo"], rule["hi"], shape).astype(np.float32)
  raise FixtureError(f"Unknown rule kind {rule['kind']!r}; expected 'normal', 'uniform' or "
                     "'stored'.")


def _check_sums(what: str, a: np.ndarray, spec: Mapping[str, Any]) -> None:
  if "sum" not in spec:
    return
  a64 = np.asarray(a, np.float64)
  for key, value in (("sum", a64.sum()), ("sumsq", (a64 * a64).sum())):
    if key in spec and not np.isclose(value, spec[key], rtol=1e-9, atol=1e-9):
      raise FixtureError(
          f"{what}: rebuilt {key} {value!r} != {spec[key]!r} in the JSON. numpy's random "
          "stream or the fixture file has changed; regenerate the fixture.")


def load_fixture(directory: str, name: str) -> Fixture:
  """Loads `<directory>/<name>.json` + `.npz` and rebuilds weights and inputs (checksummed)."""
  json_path = os.path.join(directory, name + ".json")
  npz_path = os.path.join(directory, name + ".npz")
  for path in (json_path, npz_path):
    if not os.path.exists(path):
      raise FixtureError(f"Fixture file {path} is missing. Fix: a fixture is a pair "
                         f"<name>.json + <name>.npz in the same folder.")
  with open(json_path) as f:
    meta = json.load(f)
  with np.load(npz_path, allow_pickle=False) as npz:
    arrays = {k: npz[k] for k in npz.files}
  seed = meta["seed"]
  state_dict = {}
  for entry in meta.get("entries", []):
    key = entry["name"]
    if entry["rule"]["kind"] == "stored":
      if "param/" + key not in arrays:
        raise FixtureError(f"{name}: entry {key} is 'stored' but param/{key} is not in the npz.")
      a = arrays["param/" + key]
    else:
      a = draw(seed, entry["index"], entry["shape"], entry["rule"])
    if list(a.shape) != list(entry["shape"]):
      raise FixtureError(f"{name}: entry {key} has shape {a.shape}, JSON says {entry['shape']}.")
    _check_sums(f"{name}: {key}", a, entry)
    state_dict[key] = a
  inputs = {}
  for spec in meta.get("inputs", []):
    key = spec["name"]
    if "input/" + key in arrays:
      a = arrays["input/" + key]
    elif spec.get("rule", {}).get("kind") in ("normal", "uniform"):
      a = draw(seed, spec["index"], spec["shape"], spec["rule"])
    else:
      raise FixtureError(f"{name}: input {key} is neither stored nor drawable.")
    _check_sums(f"{name}: input {key}", a, spec)
    inputs[key] = a
  return Fixture(name=name, meta=meta, arrays=arrays, state_dict=state_dict, inputs=inputs)


def list_fixtures(directory: str) -> list[str]:
  """Fixture names (JSON files with an npz beside them) in `directory`, sorted."""
  if not os.path.isdir(directory):
    raise FixtureError(f"{directory} is not a folder of fixtures (<name>.json + <name>.npz).")
  return sorted(f[:-5] for f in os.listdir(directory)
                if f.endswith(".json") and os.path.exists(os.path.join(directory, f[:-5] + ".npz")))
