"""Workdir I/O for local folders and remote ones (gs://, s3://) alike, through `etils.epath`.

On a TPU VM the workdir is a bucket (small local disk, checkpoints that outlive the VM), and
`os.makedirs("gs://b/run")` would quietly create a local folder named `gs:`. So every read and
write of a workdir path goes through `etils.epath` (orbax does too). Writes are atomic: locally a
temporary file in the destination folder is renamed onto the target; remotely the file is
written to a local temporary file and copied in one request (an object store never shows a
half-written object). On multi-host runs only the primary process writes shared files
(`is_primary`); each process still reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any, Iterator

import jax
from etils import epath


def is_remote(path: str | os.PathLike) -> bool:
  """True for URIs (gs://, s3://, ...): no local file system call may touch them."""
  return "://" in os.fspath(path)


def path(p: str | os.PathLike) -> epath.Path:
  """An epath.Path; local paths are made absolute (orbax requires it)."""
  p = os.fspath(p)
  return epath.Path(p if is_remote(p) else os.path.abspath(p))


def join(base: str | os.PathLike, *parts: str) -> str:
  """`os.path.join` that keeps `gs://` intact (the string form callers pass around)."""
  return os.fspath(epath.Path(os.fspath(base)).joinpath(*parts)) if is_remote(base) else \
      os.path.join(os.fspath(base), *parts)


def exists(p: str | os.PathLike) -> bool:
  return path(p).exists()


def isdir(p: str | os.PathLike) -> bool:
  return path(p).is_dir()


def isfile(p: str | os.PathLike) -> bool:
  q = path(p)
  return q.exists() and not q.is_dir()


def listdir(p: str | os.PathLike) -> list[str]:
  """Names in a folder ([] when it does not exist)."""
  q = path(p)
  return sorted(c.name for c in q.iterdir()) if q.is_dir() else []


def glob(folder: str | os.PathLike, pattern: str) -> list[str]:
  """Sorted matches of `pattern` under `folder`, as path strings (no `**`: epath refuses it on
  local and GCS paths alike)."""
  q = path(folder)
  return sorted(os.fspath(m) for m in q.glob(pattern)) if q.is_dir() else []


def makedirs(p: str | os.PathLike) -> None:
  path(p).mkdir(parents=True, exist_ok=True)


def read_text(p: str | os.PathLike) -> str:
  return path(p).read_text()


def is_primary() -> bool:
  """The process that writes files every process would otherwise write (process 0)."""
  return jax.process_index() == 0


@contextlib.contextmanager
def atomic_local(target: str | os.PathLike) -> Iterator[str]:
  """Yield a local temporary path; when the block succeeds it becomes `target` in one step.

  Local targets: the temporary file sits beside the target and is renamed onto it. Remote
  targets: it lives in the system temp folder and is copied to the target (one object write).
  A failing block leaves neither the target nor a temporary file behind.
  """
  target = os.fspath(target)
  suffix = os.path.splitext(target)[1]
  if is_remote(target):
    folder = None
    makedirs(os.fspath(path(target).parent))
  else:
    folder = os.path.dirname(os.path.abspath(target)) or "."
    os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=suffix, dir=folder)
  os.close(fd)
  try:
    yield tmp
    if folder is None:
      epath.Path(tmp).copy(path(target), overwrite=True)
    else:
      os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(target: str | os.PathLike, text: str) -> str:
  """Write a text file atomically (see `atomic_local`); returns the target."""
  with atomic_local(target) as tmp:
    with open(tmp, "w") as f:
      f.write(text)
  return os.fspath(target)


def write_json(target: str | os.PathLike, payload: Any, **kwargs: Any) -> str:
  """`json.dump` atomically (indent 2, sorted keys unless overridden)."""
  kwargs = {"indent": 2, "sort_keys": True, **kwargs}
  return write_text(target, json.dumps(payload, **kwargs))
