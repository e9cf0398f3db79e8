"""What a command-line run shows on the terminal, and where everything else goes.

TensorFlow, XLA, absl and TFDS write hundreds of INFO/WARNING lines, many of them from C++
straight to file descriptor 2, so only an fd-level redirect hides them. `Session` points fds 1
and 2 at a log file for the duration of a run and hands out the saved terminal streams
(`terminal_out()`, `terminal_err()`) for the few things the user should see: progress bars,
the final summary, the one-line error. With `verbose=True` (`--verbosity>=1`) the chatter is
copied to the terminal as well. The log starts in a temporary file (the workdir may not exist
yet, and a run that fails on bad input must leave no output) and `keep_log` moves it into
WORKDIR/logs/ at the end.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from typing import TextIO

_ACTIVE: "Session | None" = None


def terminal_err() -> TextIO:
  """Where bars and errors go: the real stderr during a CLI run, else sys.stderr."""
  return _ACTIVE.err if _ACTIVE is not None else sys.stderr


def terminal_out() -> TextIO:
  """Where the end-of-run summary goes: the real stdout during a CLI run, else sys.stdout."""
  return _ACTIVE.out if _ACTIVE is not None else sys.stdout


def active() -> bool:
  """Whether a CLI run owns the terminal (progress bars are then always drawn)."""
  return _ACTIVE is not None


class Session:
  """Redirect fds 1/2 into a log file while the block runs (see the module docstring)."""

  def __init__(self, verbose: bool = False):
    self.verbose = verbose
    self.log_path = ""
    self._saved: tuple[int, int] | None = None
    self._tee: threading.Thread | None = None

  def __enter__(self) -> "Session":
    global _ACTIVE
    sys.stdout.flush()
    sys.stderr.flush()
    fd, self.log_path = tempfile.mkstemp(prefix="i2v_flax_", suffix=".log")
    self._log_fd = fd
    self._saved = (os.dup(1), os.dup(2))
    self.out = os.fdopen(os.dup(self._saved[0]), "w", buffering=1)
    self.err = os.fdopen(os.dup(self._saved[1]), "w", buffering=1)
    if self.verbose:  # Tee: a pipe whose reader copies to the log and the terminal.
      read_fd, write_fd = os.pipe()
      self._tee = threading.Thread(target=self._copy, args=(read_fd,), daemon=True)
      self._tee.start()
      target = write_fd
    else:
      target = fd
    os.dup2(target, 1)
    os.dup2(target, 2)
    if self.verbose:
      os.close(target)
    _ACTIVE = self
    return self

  def _copy(self, read_fd: int) -> None:
    while chunk := os.read(read_fd, 65536):
      os.write(self._log_fd, chunk)
      os.write(self._saved[1], chunk)
    os.close(read_fd)

  def __exit__(self, *exc) -> None:
    global _ACTIVE
    _ACTIVE = None
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(self._saved[0], 1)  # Closes the pipe's last write ends: the tee thread finishes.
    os.dup2(self._saved[1], 2)
    if self._tee is not None:
      self._tee.join(timeout=5)
    for f in (self.out, self.err):
      f.flush()
      f.close()
    os.close(self._saved[0])
    os.close(self._saved[1])
    os.close(self._log_fd)

  def append_to_log(self, text: str) -> None:
    """Add text (e.g. a traceback) to the log after the redirect ended."""
    with open(self.log_path, "a") as f:
      f.write(text)

  def keep_log(self, directory: str, prefix: str) -> str:
    """Move the log to `directory`/<prefix>-<time>.log (local or gs://); returns the new path."""
    from i2v_flax import paths
    dest = paths.join(directory, f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}.log")
    if paths.is_remote(directory):
      with paths.atomic_local(dest) as tmp:
        shutil.move(self.log_path, tmp)
    else:
      os.makedirs(directory, exist_ok=True)
      shutil.move(self.log_path, dest)
    self.log_path = dest
    return dest

  def discard_log(self) -> None:
    if os.path.exists(self.log_path):
      os.remove(self.log_path)
