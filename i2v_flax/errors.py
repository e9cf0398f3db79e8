"""Exception types for problems the *user* can fix (bad flags, configs, inputs, workdirs).

The command-line entry points (`i2v_flax.cli`) print these as one `error: ... Fix: ...` line and
exit with status 2; any other exception is a bug in our code and keeps its traceback. Raising
the right type at the validation site is therefore all a new check needs. The subclasses also
derive from the builtin a library caller would expect (ValueError, FileNotFoundError), so code
and tests that catch those keep working.
"""

from __future__ import annotations

import errno

EXIT_CODE = 2  # Status of a user error (absl's flag errors use 1; a traceback exits 1 too).


class UserError(Exception):
  """An error caused by the user's input; its message names the problem and the fix."""


class InvalidInput(UserError, ValueError):
  """A flag, config field or input file has a value we cannot use."""


class MissingInput(UserError, FileNotFoundError):
  """A file, folder, dataset or checkpoint the command needs does not exist (yet)."""


class OutputExists(UserError, FileExistsError):
  """The output location holds something we must not overwrite without being told to."""


class MissingDependency(UserError, ImportError):
  """An optional package the requested feature needs is not installed (the fix: pip install)."""


# OS errors that are never our bug: the environment refuses to let us read or write.
_ENVIRONMENT_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


def from_os_error(e: BaseException) -> UserError | None:
  """A UserError for permission/read-only/disk-full OSErrors (e.g. an unwritable --workdir or
  --out), None for anything else: those surface deep inside writers we do not wrap."""
  if not isinstance(e, OSError) or e.errno not in _ENVIRONMENT_ERRNOS:
    return None
  where = f" {e.filename!r}" if e.filename else ""
  fix = ("free some disk space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else
         "choose a location you can write to (e.g. under your home directory) or fix its "
         "permissions")
  return UserError(f"cannot write{where}: {e.strerror}. Fix: {fix}.")


def one_line(e: BaseException) -> str:
  """The message printed for a user error: one line, always carrying a `Fix:`."""
  text = " ".join(str(e).split()) or type(e).__name__
  if "Fix:" not in text:
    text += " Fix: see --helpfull for the flags and their allowed values."
  return text
