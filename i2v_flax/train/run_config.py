"""workdir/config.json: written once per run, compared on resume.

A checkpoint only restores into the shapes it was written with, and sampling/evaluation rebuild
the models from the saved config, so the config travels with the workdir.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import ml_collections
from absl import logging

from i2v_flax import errors, paths

CONFIG_FILE = "config.json"


def _plain(config: ml_collections.ConfigDict | Mapping) -> dict:
  if isinstance(config, ml_collections.ConfigDict):
    return json.loads(config.to_json())
  return json.loads(json.dumps(config))


def write_config(workdir: str, config: ml_collections.ConfigDict) -> str:
  """Write workdir/config.json atomically (process 0 only; local or gs://); returns its path."""
  path = paths.join(workdir, CONFIG_FILE)
  if paths.is_primary():
    paths.write_json(path, _plain(config))
  return path


def _fill_missing(saved: dict, defaults: Mapping, prefix: str = "") -> list[str]:
  """Add `defaults`' fields that `saved` lacks, in place; returns their dotted names."""
  added = []
  for key, value in defaults.items():
    if key not in saved:
      saved[key] = value
      added.append(prefix + key)
    elif isinstance(value, Mapping) and isinstance(saved[key], dict):
      added += _fill_missing(saved[key], value, prefix + key + ".")
  return added


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config saved in workdir/config.json (lists where the file had tuples).

  A workdir trained by an older i2v_flax lacks the fields added since; they take the library
  defaults (logged), so sampling and evaluation of old runs keep working.
  """
  from i2v_flax import config_lib
  path = paths.join(workdir, CONFIG_FILE)
  if not paths.exists(path):
    raise errors.MissingInput(f"{path} does not exist: {workdir!r} is not a training workdir.")
  saved = json.loads(paths.read_text(path))
  added = _fill_missing(saved, _plain(config_lib.base_config()))
  if added:
    logging.warning("%s predates config fields %s; using their defaults.", path, added)
  return ml_collections.ConfigDict(saved)


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
  path = paths.join(workdir, CONFIG_FILE)
  if not paths.exists(path):
    return
  saved = json.loads(paths.read_text(path))
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
