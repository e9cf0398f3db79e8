"""The one place that turns a command-line run into what the user sees.

`run(main, ...)` replaces `absl.app.run` for `python -m i2v_flax.main`, `i2v_flax.sample` and
`i2v_flax.convert`:
  * a `errors.UserError` anywhere (bad flag, config file or override, missing data, workdir or
    checkpoint, unreadable input, unwritable output) prints ONE line `error: ... Fix: ...` on
    stderr and exits with status 2, no traceback; a folder the run created stays absent;
  * any other exception is our bug: its traceback is printed (and kept in the log);
  * while `main` runs, TensorFlow/absl/XLA output goes to a log file (console.Session), kept in
    LOG_DIR (e.g. WORKDIR/logs/) at the end; `--verbosity=1` also shows it on the terminal.
Flag and config-file errors are caught by a custom flags parser, because absl and ml_collections
otherwise report them (or the config module's exception) with a traceback.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Callable, NoReturn, Sequence

from absl import app, flags
from ml_collections.config_flags import config_flags as _config_flags

from i2v_flax import console, errors, paths

FLAGS = flags.FLAGS
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def _root_message(e: BaseException) -> str:
  """The innermost cause's last meaningful line (config loaders wrap the real error)."""
  seen = set()
  while (e.__cause__ or e.__context__) is not None and id(e) not in seen:
    seen.add(id(e))
    e = e.__cause__ or e.__context__
  text = str(e).replace("\\n", " ").replace("\\'", "'").strip("'\" ")
  return " ".join(text.split()) or type(e).__name__


def _config_error(flag_name: str, e: BaseException) -> errors.UserError:
  raw = FLAGS[flag_name].serialize().split("=", 1)[-1] if FLAGS[flag_name].present else ""
  path = raw.partition(":")[0]
  known = sorted(n for n in os.listdir(CONFIG_DIR) if n.endswith(".py")) if os.path.isdir(
      CONFIG_DIR) else []
  if path and not os.path.exists(path) and not os.path.exists(os.path.join(CONFIG_DIR, "..",
                                                                           path)):
    return errors.InvalidInput(
        f"--{flag_name}: config file {path!r} does not exist. Fix: pass one of "
        f"{', '.join('configs/' + n for n in known)} (optionally with ':tiny' or a variant).")
  msg = _root_message(e)
  fix = "" if "Fix:" in msg else " Fix: check the config file and the argument after ':'."
  return errors.InvalidInput(f"--{flag_name}={raw}: {msg}{fix}")


def _parse(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, with every failure (and a config file that does not load) as a
  UserError; config flags are loaded here so their errors are reported before `main`."""
  if FLAGS.is_parsed():  # A second run in one process (tests): start from the defaults,
    FLAGS.unparse_flags()  # without the config.* override flags the last parse registered.
    configs = [n for n in FLAGS if _config_flags.is_config_flag(FLAGS[n])]
    for name in [n for n in FLAGS if any(n.startswith(c + ".") for c in configs)]:
      delattr(FLAGS, name)
  saved_argv, sys.argv = sys.argv, list(argv)  # config_flags reads overrides from sys.argv.
  try:
    rest = FLAGS(list(argv))
  except flags.Error as e:
    msg = str(e)
    if "Traceback (most recent call last)" in msg:  # A config file's get_config() raised.
      flag = msg.split(": ", 1)[0].replace("flag ", "")
      last = [ln for ln in msg.splitlines() if ln.strip()][-1].strip()
      raise errors.InvalidInput(
          f"{flag}: {last.split(': ', 1)[-1]} Fix: correct the config argument after ':' (the "
          "config file's docstring lists its variants).") from None
    if e.__cause__ is not None or e.__context__ is not None:
      inner = _root_message(e)
      if inner not in msg:
        msg = f"{msg.splitlines()[0]} ({inner})"
    raise errors.InvalidInput(f"{errors.one_line(msg)}") from None
  except Exception as e:  # Overrides of unknown fields raise AttributeError etc. while parsing.
    bad = [a for a in argv[1:] if a.startswith("--config.")]
    raise errors.InvalidInput(
        f"{' '.join(bad) or 'a --config override'}: {_root_message(e)} Fix: correct the field "
        "name (see the config file for the fields) or its value.") from None
  finally:
    sys.argv = saved_argv
  for name in FLAGS:
    if _config_flags.is_config_flag(FLAGS[name]) and FLAGS[name].present:
      try:
        value = FLAGS[name].value  # Loads the file now.
        if isinstance(value, _config_flags._ErrorConfig):  # pylint: disable=protected-access
          value._ReportError()  # pylint: disable=protected-access  (raises the load error)
      except Exception as e:  # The config module's own error: bad argument, typo, ...
        raise _config_error(name, e) from None
  return rest


def _print_error(e: BaseException) -> None:
  print(f"error: {errors.one_line(e)}", file=sys.stderr, flush=True)


def execute(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None, *,
            log_dir: Callable[[], str | None] = lambda: None,
            log_prefix: str | Callable[[], str] = "run",
            created_dir: Callable[[], str | None] = lambda: None) -> int:
  """Run `main(argv)` under the conventions above; returns the exit status (tests call this).

  log_dir: where to keep the log after the run (None: keep it only after a crash, in /tmp).
  created_dir: a folder the run may create (the workdir): removed again if a user error leaves
  it empty, so a failed run writes nothing.
  """
  argv = list(sys.argv if argv is None else argv)
  state: dict[str, Any] = {}

  def wrapped(args: list[str]) -> int:
    folder = created_dir()
    state["pre_existing"] = folder is not None and paths.exists(folder)
    state["folder"] = folder
    session = state["session"] = console.Session(verbose=FLAGS.verbosity >= 1)
    target = log_dir()
    with session:
      try:
        if len(args) > 1:
          raise errors.InvalidInput(f"unexpected arguments {args[1:]}. Fix: pass every setting "
                                    "as --name=value (see --helpfull).")
        main(args)
      except app.UsageError as e:
        raise errors.InvalidInput(str(e)) from None
      except errors.UserError:
        raise
      except OSError as e:
        mapped = errors.from_os_error(e)
        if mapped is None:
          raise
        raise mapped from None
      except BaseException:
        print(traceback.format_exc(), file=sys.stderr, flush=True)  # Into the log too.
        raise
    _keep_log(session, target, log_prefix, failed=False)
    return 0

  try:
    app.run(wrapped, argv=argv, flags_parser=_parse)
  except SystemExit as e:
    return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  except errors.UserError as e:
    session = state.get("session")
    if session is not None:
      target = log_dir()  # WORKDIR/logs: kept when WORKDIR already held a run (checkpoints).
      has_run = target and paths.isdir(paths.join(os.path.dirname(target), "checkpoints"))
      if has_run and state.get("pre_existing"):
        _keep_log(session, target, log_prefix, failed=True)
      else:
        session.discard_log()
      folder = state.get("folder")
      if folder and not state.get("pre_existing") and paths.isdir(folder) and not paths.listdir(
          folder):
        paths.path(folder).rmdir()
    _print_error(e)
    return errors.EXIT_CODE
  except BaseException:
    session = state.get("session")
    if session is not None:
      target = log_dir()
      try:
        kept = _keep_log(session, target, log_prefix, failed=True) if target else session.log_path
      except OSError:
        kept = session.log_path
      print(f"Full log: {kept}", file=sys.stderr)
    raise
  return 0


def _keep_log(session: console.Session, target: str | None, prefix: str | Callable[[], str],
              failed: bool) -> str:
  prefix = prefix if isinstance(prefix, str) else prefix()
  if target:
    return session.keep_log(target, prefix)
  if not failed:
    session.discard_log()
  return session.log_path


def run(main: Callable[[list[str]], Any], **kwargs: Any) -> NoReturn:
  """`absl.app.run` replacement for the entry points (see the module docstring)."""
  sys.exit(execute(main, sys.argv, **kwargs))
