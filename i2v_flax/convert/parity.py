"""Check i2v_flax against the authors' PyTorch modules on the reference fixtures.

    python -m i2v_flax.convert.parity DIR [FIXTURE ...]

For every fixture in DIR (shared/reference/README.md explains them) the runner registered for its
reference class rebuilds the torch weights, converts them, runs our module and returns each output
in torch layout; this script compares them with the stored torch outputs and prints one JSON line
per fixture: {"fixture", "class", "outputs": {name: {"max_abs_err", "tol", "ok"}}, "ok"}.
The exit code is 1 if any fixture fails (a wrong value, a missing output, an unknown class or a
runner error), so CI can gate on it.

Runners live next to the converters: `PARITY_RUNNERS` (class string -> runner) and optionally
`SKIPPED_OUTPUTS` (class -> {output name: why it is not compared}) in each module of
RUNNER_MODULES. They are imported only when the check runs, and a module that does not exist yet
just serves no class.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback
from typing import Any, Callable, Sequence

import numpy as np

from i2v_flax.convert.fixtures import Fixture, list_fixtures, load_fixture

RUNNER_MODULES = ("i2v_flax.convert.stage1", "i2v_flax.convert.stage2",
                  "i2v_flax.convert.evaluation")
Runner = Callable[[Fixture], dict[str, np.ndarray]]


def load_runners(modules: Sequence[str] = RUNNER_MODULES
                 ) -> tuple[dict[str, Runner], dict[str, dict[str, str]], dict[str, str]]:
  """(runners by class, skipped outputs by class, {module: why it serves nothing})."""
  runners: dict[str, Runner] = {}
  skipped: dict[str, dict[str, str]] = {}
  unavailable: dict[str, str] = {}
  for name in modules:
    try:
      module = importlib.import_module(name)
    except ModuleNotFoundError as e:
      if e.name != name:
        unavailable[name] = f"import failed: {type(e).__name__}: {e}"
      else:
        unavailable[name] = "module does not exist yet"
      continue
    except Exception as e:  # A broken runner module must not hide the other modules' results.
      unavailable[name] = f"import failed: {type(e).__name__}: {e}"
      continue
    runners.update(getattr(module, "PARITY_RUNNERS", {}))
    skipped.update(getattr(module, "SKIPPED_OUTPUTS", {}))
  return runners, skipped, unavailable


def tolerance(fx: Fixture, name: str) -> float:
  """`fx.tolerance(name)` (max(1e-5, 10 x the output's float64 gap)) when the JSON gives the
  output its own float64 gap or tolerance; otherwise the fixture's noise level (the largest
  gap of its outputs), because outputs derived from noisy ones (encoder z = mu + sigma eps,
  intermediates) carry that noise too and 1e-5 would be below it."""
  outputs = fx.meta.get("outputs", [])
  spec = next((o for o in outputs if o["name"] == name), {})
  if "tolerance" in spec or "float64_reference_max_abs_diff" in spec:
    return fx.tolerance(name)
  gaps = [float(o["float64_reference_max_abs_diff"]) for o in outputs
          if "float64_reference_max_abs_diff" in o]
  return max(1e-5, 10.0 * max(gaps)) if gaps else fx.tolerance(name)


def compare(fx: Fixture, produced: dict[str, Any], skipped: dict[str, str]) -> dict[str, dict]:
  """Per JSON output: max |ours - torch|, tolerance, ok. Intermediates are compared when the
  runner returns them (they locate a mismatch); every other output must be returned."""
  report: dict[str, dict] = {}
  for spec in fx.meta.get("outputs", []):
    name = spec["name"]
    if name in skipped:
      report[name] = {"skipped": skipped[name], "ok": True}
      continue
    if name not in produced:
      if not name.startswith("intermediate/"):
        report[name] = {"ok": False, "error": "not produced by the runner"}
      continue
    ref = np.asarray(fx.arrays[name], np.float64)
    got = np.asarray(produced[name], np.float64)
    tol = tolerance(fx, name)
    if got.shape != ref.shape:
      report[name] = {"ok": False, "tol": tol,
                      "error": f"shape {tuple(got.shape)}, fixture {tuple(ref.shape)}"}
      continue
    err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    ok = bool(np.isfinite(err) and err <= tol)
    report[name] = {"max_abs_err": err, "tol": tol, "ok": ok}
  return report


def check_fixture(fx: Fixture, runners: dict[str, Runner],
                  skipped: dict[str, dict[str, str]] | None = None,
                  unavailable: dict[str, str] | None = None) -> dict[str, Any]:
  """The report line of one loaded fixture (never raises: a runner error is a failed line)."""
  cls = fx.meta.get("reference", {}).get("class", "<no reference.class in the JSON>")
  line: dict[str, Any] = {"fixture": fx.name, "class": cls}
  runner = runners.get(cls)
  if runner is None:
    why = "; ".join(f"{m}: {r}" for m, r in (unavailable or {}).items())
    line.update(ok=False, outputs={}, error=f"no parity runner for class {cls!r}" +
                (f" (runner modules not loaded: {why})" if why else ""))
    return line
  try:
    produced = runner(fx)
  except Exception as e:
    line.update(ok=False, outputs={}, error=f"runner raised {type(e).__name__}: {e}",
                traceback=traceback.format_exc(limit=-3))
    return line
  outputs = compare(fx, produced, (skipped or {}).get(cls, {}))
  line.update(outputs=outputs, ok=bool(outputs) and all(o["ok"] for o in outputs.values()))
  return line


def check_directory(directory: str, names: Sequence[str] | None = None,
                    modules: Sequence[str] = RUNNER_MODULES) -> list[dict[str, Any]]:
  """Report lines for the named fixtures of `directory` (all by default)."""
  runners, skipped, unavailable = load_runners(modules)
  lines = []
  for name in (names or list_fixtures(directory)):
    try:
      fx = load_fixture(directory, name)
    except Exception as e:
      lines.append({"fixture": name, "ok": False, "outputs": {},
                    "error": f"cannot load the fixture: {type(e).__name__}: {e}"})
      continue
    lines.append(check_fixture(fx, runners, skipped, unavailable))
  return lines


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m i2v_flax.convert.parity",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("directory", help="folder of <fixture>.json + <fixture>.npz pairs")
  parser.add_argument("fixtures", nargs="*", help="only these fixtures (default: all)")
  args = parser.parse_args(argv)
  lines = check_directory(args.directory, args.fixtures or None)
  for line in lines:
    print(json.dumps(line, sort_keys=False), flush=True)
  failed = [line["fixture"] for line in lines if not line["ok"]]
  print(f"parity: {len(lines) - len(failed)} of {len(lines)} fixtures pass"
        + (f"; failing: {', '.join(failed)}" if failed else ""), file=sys.stderr)
  return 1 if failed or not lines else 0


if __name__ == "__main__":
  sys.exit(main())
