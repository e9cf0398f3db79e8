"""One progress bar per phase of a run (data, stage 1, stage 2, report, eval), from tqdm.

    with progress.phase("stage 1", total=1200, initial=start) as bar:
      for step in ...:
        bar.update(1, l1=0.12, psnr=18.3)

A bar shows step/total, rate, ETA and the phase's key metrics. During a CLI run
(`console.active()`) bars are drawn on the real terminal stream, whatever that is (a pipe
too, so tests and log collectors see them); in library use (notebooks, tests) tqdm draws them
only on a TTY, so calling the trainers from Python stays quiet.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from tqdm.std import tqdm as _tqdm

from i2v_flax import console

_FORMAT = ("{desc}: {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} "
           "[{elapsed}<{remaining}, {rate_fmt}]{postfix}")


class Bar:
  """A thin wrapper so callers never care whether a bar is shown."""

  def __init__(self, bar):
    self._bar = bar
    self._metrics: dict[str, str] = {}
    self._closed = False

  def update(self, n: int = 1, **metrics: float | str) -> None:
    """Advance by n steps and (optionally) refresh the shown metrics."""
    if metrics:
      self.set_metrics(**metrics)
    self._bar.update(n)

  def set_metrics(self, **metrics: float | str) -> None:
    """Replace the named metrics in the postfix (others stay as last shown)."""
    for k, v in metrics.items():
      self._metrics[k] = f"{v:.4g}" if isinstance(v, float) else str(v)
    self._bar.set_postfix(self._metrics, refresh=False)

  def close(self) -> None:
    if not self._closed:
      self._closed = True
      _OPEN[0] -= 1
      self._bar.close()


_OPEN = [0]  # Bars currently open: a phase inside a phase (eval inside the report) gets none.


def start(name: str, total: int, initial: int = 0, unit: str = "step",
          enabled: bool = True) -> Bar:
  """A bar for one phase; call `.close()` when the phase ends (or use `phase`). A phase that
  runs inside another keeps the outer bar alone on screen (one bar per phase)."""
  enabled = enabled and not _OPEN[0]
  _OPEN[0] += 1
  return Bar(_tqdm(total=total, initial=initial, desc=name, unit=unit,
                   file=console.terminal_err(), bar_format=_FORMAT, ncols=110,
                   mininterval=0.5, smoothing=0.1,
                   disable=(False if console.active() else None) if enabled else True))


@contextlib.contextmanager
def phase(name: str, total: int, initial: int = 0, unit: str = "step",
          enabled: bool = True) -> Iterator[Bar]:
  """`start` as a context manager: the bar is closed (and left on screen) when the block ends."""
  bar = start(name, total, initial, unit, enabled)
  try:
    yield bar
  finally:
    bar.close()
