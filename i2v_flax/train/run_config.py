"""workdir/config.json: written once per run, compared on resume.

A checkpoint only restores into the shapes it was written with, and sampling/evaluation rebuild
the models from the saved config, so the config travels with the workdir.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Mapping, Sequence

import jax
import ml_collections

from i2v_flax import errors

CONFIG_FILE = "config.json"


def _plain(config: ml_collections.ConfigDict | Mapping) -> dict:
  if isinstance(config, ml_collections.ConfigDict):
    return json.loads(config.to_json())
  return json.loads(json.dumps(config))


def write_config(workdir: str, config: ml_collections.ConfigDict) -> str:
  """Write workdir/config.json atomically (process 0 only); returns its path."""
  path = os.path.join(workdir, CONFIG_FILE)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".json", dir=workdir)
    with os.fdopen(fd, "w") as f:
      json.dump(_plain(config), f, indent=2, sort_keys=True)
    os.replace(tmp, path)
  return path


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config saved in workdir/config.json (lists where the file had tuples)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise errors.MissingInput(f"{path} does not exist: {workdir!r} is not a training workdir.")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def _get(tree: Mapping, dotted: str) -> Any:
  for part in dotted.split("."):
    tree = tree[part]
  return tree


def check_compatible(workdir: str, config: ml_collections.ConfigDict,
                     fields: Sequence[str]) -> None:
  """Refuse to resume a workdir whose saved config differs in architecture-defining fields.

  A checkpoint only restores into the shapes it was written with; failing here with the list of
  differences beats an opaque orbax shape error later. Nothing is checked if no config.json exists.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return
  with open(path) as f:
    saved = json.load(f)
  new = _plain(config)
  diffs = []
  for field in fields:
    try:
      old_v = _get(saved, field)
    except KeyError:
      continue
    if old_v != _get(new, field):
      diffs.append(f"{field}: saved {old_v!r}, now {_get(new, field)!r}")
  if diffs:
    raise errors.InvalidInput(
        f"Workdir {workdir} holds a run with a different architecture ({'; '.join(diffs)}). "
        "Fix: use a new --workdir, or restore these settings to resume.")
