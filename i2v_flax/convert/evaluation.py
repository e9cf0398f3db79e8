"""Evaluation networks from the reference's torch checkpoints: the DTFVD I3D.

`dtfvd_variables(state_dict)` maps `I3D_16.pth.tar`'s state_dict (torch names and layouts,
reference/MAPPING.md "DTFVD I3D") onto `evaluation.dtfvd.DTFVDI3D`. The network is built from the
checkpoint's own shapes (every unit's width, the class count), so a checkpoint of other widths
converts as well; the key set is checked first and every shape against the built model after, so
a mismatch names the key and both shapes instead of failing inside Flax.

`PARITY_RUNNERS` lets `python -m i2v_flax.convert.parity DIR` run the reference fixtures of these
classes; `python -m i2v_flax.convert.evaluation IN.pth.tar OUT.npz` converts a checkpoint once so
evaluation never needs torch.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from i2v_flax import errors
from i2v_flax.convert.fixtures import Fixture
from i2v_flax.evaluation import dtfvd
from i2v_flax.evaluation.i3d import default_impl

Variables = Any
# torch branch name in an InceptionModule -> our InceptionBlock's unit name.
BRANCHES = {"b0": "Branch_0/Conv3d_0a_1x1", "b1a": "Branch_1/Conv3d_0a_1x1",
            "b1b": "Branch_1/Conv3d_0b_3x3", "b2a": "Branch_2/Conv3d_0a_1x1",
            "b2b": "Branch_2/Conv3d_0b_3x3", "b3b": "Branch_3/Conv3d_0b_1x1"}
_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}
_IGNORED_SUFFIX = ".num_batches_tracked"  # BatchNorm's step counter: no effect in eval.


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A state_dict as numpy arrays from a torch checkpoint (`['state_dict']` if present) or an .npz.

  torch is only imported for non-.npz files, so converted weights work without it.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"DTFVD weights file {path!r} does not exist. Fix: set config.eval.dtfvd_weights to the "
        "reference's models/DTI3D/length16/I3D_16.pth.tar or to its .npz conversion.")
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as npz:
      return {k: npz[k] for k in npz.files}
  return read_torch_state_dict(path)


def read_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """`torch.load(path)['state_dict']` (or the loaded dict itself) as numpy; tensors only."""
  try:
    import torch
  except ImportError:
    raise errors.MissingDependency(
        f"Reading the torch checkpoint {path} needs torch. Fix: pip install -e '.[convert]' (or "
        "convert it once to .npz on a machine with torch: python -m i2v_flax.convert.evaluation "
        "IN.pth.tar OUT.npz).") from None
  checkpoint = torch.load(path, map_location="cpu", weights_only=True)
  state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
  if not isinstance(state, Mapping):
    raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a state_dict (a dict of "
                     "tensors, possibly under 'state_dict').")
  return {k: v.detach().cpu().numpy() for k, v in state.items()}


def _torch_units() -> dict[str, tuple[str, ...]]:
  """torch unit prefix -> path of the matching Unit3D in DTFVDI3D's variables."""
  units = {name: (name,) for name in dtfvd.STEM_UNITS}
  for block in dtfvd.MIXED_BLOCKS:
    for short, ours in BRANCHES.items():
      units[f"{block}.{short}"] = (block, ours)
  return units


def expected_keys() -> set[str]:
  """Every state_dict key the reference InceptionI3D has (num_batches_tracked aside)."""
  keys = {"logits.conv3d.weight", "logits.conv3d.bias"}
  for prefix in _torch_units():
    keys.add(f"{prefix}.conv3d.weight")
    keys.update(f"{prefix}.bn.{p}" for p in _BN)
  return keys


def check_keys(state_dict: Mapping[str, np.ndarray]) -> None:
  """Missing or unknown keys -> one ValueError listing them."""
  given = {k for k in state_dict if not k.endswith(_IGNORED_SUFFIX)}
  missing, unknown = sorted(expected_keys() - given), sorted(given - expected_keys())
  if missing or unknown:
    raise ValueError(
        f"Not a DTFVD InceptionI3D state_dict: {len(missing)} missing keys {missing[:8]}"
        f"{' ...' if len(missing) > 8 else ''}, {len(unknown)} unknown keys {unknown[:8]}"
        f"{' ...' if len(unknown) > 8 else ''}. Fix: pass the reference's I3D_16.pth.tar "
        "(metrics/DTFVD/ID3.py) state_dict, with keys such as 'Mixed_3b.b1b.bn.running_var'.")


def dtfvd_module(state_dict: Mapping[str, np.ndarray], temporal_pool: int = 2,
                 impl: str = "native") -> dtfvd.DTFVDI3D:
  """The DTFVDI3D whose widths and class count are those of `state_dict` (checked keys)."""
  check_keys(state_dict)
  width = lambda prefix: int(np.shape(state_dict[f"{prefix}.conv3d.weight"])[0])
  return dtfvd.DTFVDI3D(
      num_classes=width("logits"),
      stem_widths=tuple(width(u) for u in dtfvd.STEM_UNITS),
      mixed_widths=tuple(tuple(width(f"{b}.{s}") for s in BRANCHES) for b in dtfvd.MIXED_BLOCKS),
      temporal_pool=temporal_pool, impl=impl)


def _conv_kernel(w: np.ndarray) -> np.ndarray:
  return np.transpose(w, (2, 3, 4, 1, 0))  # (O, I, kT, kH, kW) -> DHWIO.


def _torch_shape(flax_shape: tuple[int, ...], is_kernel: bool) -> tuple[int, ...]:
  if not is_kernel:
    return tuple(flax_shape)
  kt, kh, kw, i, o = flax_shape
  return (o, i, kt, kh, kw)


def dtfvd_variables(state_dict: Mapping[str, np.ndarray],
                    module: dtfvd.DTFVDI3D | None = None) -> Variables:
  """Flax variables of `module` (default: `dtfvd_module(state_dict)`) from the torch state_dict.

  Raises ValueError on missing/unknown keys, and on a shape the built model does not accept,
  naming the key and both shapes in torch layout.
  """
  check_keys(state_dict)
  module = dtfvd_module(state_dict) if module is None else module
  # The input's size only has to survive the pools; shapes of the variables do not depend on it.
  clip = jax.ShapeDtypeStruct((1, dtfvd.frames_kept(module.temporal_pool), dtfvd.DTFVD_SIZE,
                               dtfvd.DTFVD_SIZE, 3), jnp.float32)
  expected = jax.eval_shape(module.init, jax.random.key(0), clip)
  out: dict[str, dict] = {"params": {}, "batch_stats": {}}

  def put(key: str, collection: str, path: tuple[str, ...], value: np.ndarray,
          is_kernel: bool) -> None:
    want = expected[collection]
    for p in path:
      want = want[p]
    value = _conv_kernel(np.asarray(value)) if is_kernel else np.asarray(value)
    if value.shape != want.shape:
      raise ValueError(
          f"state_dict[{key!r}] has shape {tuple(np.shape(state_dict[key]))}, but the model "
          f"built from this checkpoint expects {_torch_shape(want.shape, is_kernel)} (torch "
          "layout). Fix: the checkpoint is inconsistent (e.g. a unit's input width does not "
          "match the previous layer's output) or is not an InceptionI3D.")
    node = out[collection]
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = jnp.asarray(value, jnp.float32)

  for prefix, unit in _torch_units().items():
    key = f"{prefix}.conv3d.weight"
    put(key, "params", unit + ("Conv_0", "kernel"), state_dict[key], True)
    for name, (collection, leaf) in _BN.items():
      key = f"{prefix}.bn.{name}"
      put(key, collection, unit + ("BatchNorm_0", leaf), state_dict[key], False)
  put("logits.conv3d.weight", "params", ("logits", "kernel"),
      state_dict["logits.conv3d.weight"], True)
  put("logits.conv3d.bias", "params", ("logits", "bias"), state_dict["logits.conv3d.bias"],
      False)
  return out


def temporal_pool_of(reference_class: str) -> int:
  """4 for the reference's 32-frame model (ID3_32.py / I3D_32), else 2 (I3D_16)."""
  return 4 if re.search(r"(ID3|I3D)_32", reference_class) else 2


def run_dtfvd_fixture(fixture: Fixture) -> dict[str, np.ndarray]:
  """Our DTFVD on a fixture's `clip` (B, T, C, H, W): its outputs in torch layout.

  features (B, 1024) and logits (B, num_classes), as the reference's get_representation /
  forward after their squeezes (with a time axis last only if one were left, T' > 1).
  """
  if "clip" not in fixture.inputs and len(fixture.inputs) != 1:
    raise ValueError(f"Fixture {fixture.name} has inputs {sorted(fixture.inputs)}; the DTFVD "
                     "runner needs 'clip' (B, T, C, H, W) in [-1, 1].")
  clip = fixture.inputs.get("clip", next(iter(fixture.inputs.values())))
  pool = temporal_pool_of(fixture.meta.get("reference", {}).get("class", ""))
  module = dtfvd_module(fixture.state_dict, temporal_pool=pool, impl=default_impl())
  variables = dtfvd_variables(fixture.state_dict, module)
  clip = np.transpose(clip, (0, 1, 3, 4, 2))  # -> (B, T, H, W, C).
  features, logits = dtfvd.apply_dtfvd(module, variables, clip)
  # (B, T', C) -> torch (B, C, T'), T' squeezed when 1 as in the reference's outputs.
  torch_layout = lambda a: np.squeeze(np.transpose(a, (0, 2, 1)), axis=2) if a.shape[1] == 1 \
      else np.transpose(a, (0, 2, 1))
  return {"output/features": torch_layout(features), "output/logits": torch_layout(logits)}


def _class_path(reference_class: str) -> str:
  """'metrics/DTFVD/ID3.py:InceptionI3D(18, 1) (I3D_16.pth.tar)' -> '...ID3.py:InceptionI3D'."""
  return reference_class.split("(")[0].strip()


class _RunnerTable(dict):
  """A dict of runners keyed by the fixtures' `reference.class`, which also resolves the same
  class built with other constructor arguments (e.g. `InceptionI3D(7, 1)`): the runner reads the
  sizes from the fixture itself, so only the 'file.py:Class' part has to match."""

  def __missing__(self, key: str) -> Callable[[Fixture], dict[str, np.ndarray]]:
    for known, runner in self.items():
      if _class_path(known) == _class_path(key):
        return runner
    raise KeyError(key)

  def __contains__(self, key: object) -> bool:
    return isinstance(key, str) and any(_class_path(k) == _class_path(key) for k in self.keys())

  def get(self, key: str, default: Any = None) -> Any:
    return self[key] if key in self else default


PARITY_RUNNERS: dict[str, Callable[[Fixture], dict[str, np.ndarray]]] = _RunnerTable({
    "metrics/DTFVD/ID3.py:InceptionI3D": run_dtfvd_fixture,
    "metrics/DTFVD/ID3.py:InceptionI3D(18, 1) (I3D_16.pth.tar)": run_dtfvd_fixture,
    "metrics/DTFVD/ID3_32.py:InceptionI3D(18, 1) (I3D_32.pth.tar)": run_dtfvd_fixture,
})


def main(argv: list[str]) -> int:
  """`python -m i2v_flax.convert.evaluation IN.pth.tar OUT.npz`: the state_dict as an npz."""
  if len(argv) != 3:
    print(__doc__.split("\n\n")[0] + "\nUsage: python -m i2v_flax.convert.evaluation "
          "I3D_16.pth.tar I3D_16.npz", file=sys.stderr)
    return 2
  state_dict = read_state_dict(argv[1])
  dtfvd_variables(state_dict)  # Validate before writing.
  np.savez(argv[2], **state_dict)
  print(f"Wrote {argv[2]} ({len(state_dict)} arrays); set config.eval.dtfvd_weights to it.")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
