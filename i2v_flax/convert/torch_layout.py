"""torch state_dict <-> Flax variables: layouts, and a template-driven converter with clear errors.

Why template-driven: the Flax module built from the config says exactly which variables it
needs and their shapes (`jax.eval_shape(module.init, ...)`, no compute). Walking that template
and asking a per-model `name_fn` for the torch key of each leaf gives, in one pass, the three
errors a user can hit: a key the model needs but the file lacks, a key the file has but no
variable takes (wrong file, wrong config), and a shape that differs (wrong widths) -- each named
with both shapes in torch layout, so it can be compared with the file directly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np
from flax import traverse_util

from i2v_flax import errors

Path = tuple[str, ...]


class ConversionError(errors.InvalidInput):
  """A state_dict does not fit the model built from the config (message names key and fix)."""


# ---------------------------------------------------------------------------- layouts
def conv_to_flax(w: np.ndarray) -> np.ndarray:
  """(O, I, *k) -> (*k, I, O): torch Conv{2,3}d weight to Flax HWIO / DHWIO."""
  nd = w.ndim - 2
  return np.ascontiguousarray(w.transpose(*range(2, nd + 2), 1, 0))


def conv_shape_to_torch(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
  return (flax_shape[-1], flax_shape[-2], *flax_shape[:-2])


def sn_v_to_flax(v: np.ndarray, kernel_shape: tuple[int, ...]) -> np.ndarray:
  """torch `weight_v`, flattened in (I, k...) order -> the row order of `kernel.reshape(-1, O)`
  of our (k..., I, O) kernel, i.e. (k..., I)."""
  k, i = tuple(kernel_shape[:-2]), kernel_shape[-2]
  nd = len(k)
  return np.ascontiguousarray(v.reshape(i, *k).transpose(*range(1, nd + 1), 0).reshape(-1))


def sn_v_to_torch(v: np.ndarray, kernel_shape: tuple[int, ...]) -> np.ndarray:
  """Inverse of `sn_v_to_flax`."""
  k, i = tuple(kernel_shape[:-2]), kernel_shape[-2]
  nd = len(k)
  return np.ascontiguousarray(np.asarray(v).reshape(*k, i).transpose(nd, *range(nd)).reshape(-1))


def strip_module_prefix(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Drop a 'module.' prefix on every key (files saved from torch.nn.DataParallel)."""
  keys = list(state_dict)
  if keys and all(k.startswith("module.") for k in keys):
    return {k[len("module."):]: v for k, v in state_dict.items()}
  return dict(state_dict)


# ---------------------------------------------------------------------------- rules
@dataclasses.dataclass(frozen=True)
class Rule:
  """Where one Flax leaf comes from: torch key, expected torch shape, layout transform."""

  key: str
  torch_shape: tuple[int, ...]
  to_flax: Callable[[np.ndarray], np.ndarray]


def standard_rule(key: str, path: Path, shape: tuple[int, ...],
                  template: Mapping[Path, tuple[int, ...]]) -> Rule:
  """The rule for a leaf by its kind: conv/dense kernel, vector, ActNorm loc/scale, SN u/v.

  `path` starts with the collection ('params' or 'spectral'); `template` maps every path of the
  model to its shape (needed for v, whose reorder depends on the kernel's shape).
  """
  collection, leaf = path[0], path[-1]
  if collection == "spectral" and leaf == "v":
    kshape = template[("params",) + path[1:-1] + ("kernel",)]
    return Rule(key, shape, lambda a: sn_v_to_flax(a, kshape))
  if collection == "params" and leaf == "kernel" and len(shape) >= 3:
    return Rule(key, conv_shape_to_torch(shape), conv_to_flax)
  if collection == "params" and leaf == "kernel" and len(shape) == 2:
    return Rule(key, shape[::-1], lambda a: np.ascontiguousarray(a.T))
  if collection == "params" and leaf in ("loc", "scale") and "actnorm" in path[-2]:
    return Rule(key, (1, shape[0], 1, 1), lambda a: a.reshape(-1))
  return Rule(key, shape, lambda a: a)


def abstract_template(abstract_variables: Mapping[str, Any]) -> dict[Path, tuple[int, ...]]:
  """{(collection, *module path, leaf): shape} of an eval_shape'd `init` output."""
  flat = traverse_util.flatten_dict(dict(abstract_variables))
  return {k: tuple(v.shape) for k, v in flat.items()}


def convert(state_dict: Mapping[str, np.ndarray], template: Mapping[Path, tuple[int, ...]],
            name_fn: Callable[[Path], str], what: str, hint: str = "",
            ignore: Callable[[str, np.ndarray], bool] | None = None,
            rule_fn: Callable[..., Rule] = standard_rule) -> dict[str, Any]:
  """Flax variables {collection: nested dict} for `template` from a torch `state_dict`.

  `name_fn(path)` gives the torch key of a Flax leaf; `ignore(key, value)` marks file entries
  that carry no variable (integer buffers). Raises ConversionError listing every missing key,
  unknown key and shape mismatch at once (a partial report would need one run per fix).
  """
  state_dict = strip_module_prefix(state_dict)
  ignore = ignore or (lambda k, v: False)
  out: dict[Path, np.ndarray] = {}
  used, missing, shapes = set(), [], []
  for path, shape in template.items():
    rule = rule_fn(name_fn(path), path, shape, template)
    used.add(rule.key)
    if rule.key not in state_dict:
      missing.append(f"{rule.key} (expected shape {rule.torch_shape})")
      continue
    value = np.asarray(state_dict[rule.key])
    if tuple(value.shape) != tuple(rule.torch_shape):
      shapes.append(f"{rule.key}: the file has shape {tuple(value.shape)}, the model built from "
                    f"the config expects {tuple(rule.torch_shape)}")
      continue
    out[path] = np.asarray(rule.to_flax(value.astype(np.float32)), np.float32)
  unknown = [k for k, v in state_dict.items() if k not in used and not ignore(k, np.asarray(v))]
  problems = []
  for title, items in (("missing keys", missing), ("unknown keys", unknown),
                       ("shape mismatches", shapes)):
    if items:
      shown = "; ".join(items[:12]) + (f"; ... ({len(items) - 12} more)" if len(items) > 12 else "")
      problems.append(f"{len(items)} {title}: {shown}")
  if problems:
    raise ConversionError(
        f"Cannot load this state_dict into the {what}: " + ". ".join(problems) + ". "
        + (hint or "Fix: check that the file is the right model and that the config's widths "
           "and strides match the checkpoint."))
  return traverse_util.unflatten_dict(out)


def ignore_integer_buffers(key: str, value: np.ndarray) -> bool:
  """BatchNorm `num_batches_tracked` never affects eval; ActNorm `initialized` must be 1."""
  if key.endswith(".num_batches_tracked"):
    return True
  if key.endswith(".initialized"):
    if int(np.asarray(value).reshape(-1)[0]) != 1:
      raise ConversionError(
          f"{key} is {int(np.asarray(value).reshape(-1)[0])}: this ActNorm was never "
          "initialised, so its loc/scale are placeholders. Fix: use a checkpoint saved after at "
          "least one training step.")
    return True
  return False


def leaf_name(path: Path, spectral_paths: set[Path]) -> str:
  """torch's leaf name for a Flax leaf: kernel -> weight (weight_orig under spectral norm),
  GroupNorm scale -> weight, SN u/v -> weight_u/weight_v, ActNorm loc/scale as is."""
  collection, module, leaf = path[0], path[1:-1], path[-1]
  if collection == "spectral":
    return {"u": "weight_u", "v": "weight_v"}[leaf]
  if leaf == "kernel":
    return "weight_orig" if module in spectral_paths else "weight"
  if leaf == "scale" and not (module and "actnorm" in module[-1]):
    return "weight"
  return leaf


def spectral_modules(template: Mapping[Path, Any]) -> set[Path]:
  """Module paths that carry spectral-norm vectors."""
  return {p[1:-1] for p in template if p[0] == "spectral"}
