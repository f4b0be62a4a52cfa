"""Progress of the long Dask computations, labelled with the step, on stderr (in the workflow: the console where the
user typed ``snakemake`` and the rule's log, see ``workflow/scripts/common.py``).

- :func:`shown`: Dask's text progress bar for the threaded / synchronous schedulers, prefixed with a label
  (``predict ssp585: [#####     ] | 50% Completed | 12.0s``), drawn only for steps that last ``minimum`` seconds.
- :func:`compute_on`: the same for a Dask distributed client, whose futures the local callbacks do not see:
  distributed's own text bar, written to stderr instead of stdout.
"""

from __future__ import annotations

import contextlib
import sys
import time

from dask.diagnostics import ProgressBar
from dask.utils import format_time

# how often the bar is redrawn (s); also how long the end of a computation may wait for the bar's thread
REDRAW_S = 1.0
# steps shorter than this (s) draw no bar
MINIMUM_S = 2.0


class StepProgressBar(ProgressBar):
    """Dask's ProgressBar with the step's name in front of the bar."""

    def __init__(self, label: str, minimum: float | None = None, dt: float | None = None, out=None):
        super().__init__(minimum=MINIMUM_S if minimum is None else minimum, dt=REDRAW_S if dt is None else dt,
                         out=out if out is not None else sys.stderr)
        self.label = label

    def _draw_bar(self, frac, elapsed):
        bar = "#" * int(self._width * frac)
        message = f"\r{self.label}: [{bar:<{self._width}}] | {int(100 * frac)}% Completed | {format_time(elapsed)}"
        with contextlib.suppress(ValueError):  # the stream was closed under us
            self._file.write(message)
            self._file.flush()


@contextlib.contextmanager
def shown(label: str, enabled: bool = True, minimum: float | None = None):
    """Show the progress of every Dask computation run inside (local schedulers) as a bar named ``label`` on
    stderr, for computations that last at least ``minimum`` seconds (default :data:`MINIMUM_S`); nothing when not
    ``enabled``."""
    if not enabled:
        yield
        return
    with StepProgressBar(label, minimum=minimum):
        yield


@contextlib.contextmanager
def batches_shown(label: str, enabled: bool = True):
    """One bar named ``label`` for a step made of several Dask computations (a grid reduced a batch of blocks at a
    time): yields a function to call with the fraction done after each; drawn like :func:`shown`'s bar, once the
    step has lasted :data:`MINIMUM_S`."""
    bar, start, drawn = StepProgressBar(label), time.perf_counter(), []

    def done(fraction: float) -> None:
        elapsed = time.perf_counter() - start
        if enabled and (drawn or elapsed >= MINIMUM_S):
            bar._draw_bar(fraction, elapsed)
            drawn.append(True)

    yield done
    if drawn:
        with contextlib.suppress(ValueError):
            bar._file.write("\n")
            bar._file.flush()


def compute_on(client, collection, label: str, enabled: bool = True):
    """Compute a Dask ``collection`` (one delayed / array / ``to_zarr(compute=False)``) on a distributed
    ``client``, showing distributed's text progress bar for its futures on stderr after the line ``label:``;
    returns the result."""
    from distributed import progress

    future = client.compute(collection)
    if enabled:
        sys.stderr.write(f"{label}:\n")
        with contextlib.redirect_stdout(sys.stderr):  # distributed's TextProgressBar writes to stdout
            progress(future, notebook=False, interval=f"{REDRAW_S}s")
        sys.stderr.write("\n")
    return future.result()
