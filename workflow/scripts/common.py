"""Shared by the workflow scripts: send stderr (progress bars, warnings) and logging to the rule's log file, and
put a failed job's reason on the console in one line."""

import atexit
import logging
import sys
import traceback
from pathlib import Path

# the sdm package, also in an environment that has only its dependencies (snakemake --use-conda)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def one_line(error: BaseException) -> str:
    """The error as the user should read it first: the library's message (its first line), with the exception's
    type only where the message alone would not say what went wrong."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, (ValueError, FileNotFoundError, KeyError, TypeError)) and message:
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


class _Both:
    """A text stream that writes to the rule's log and to the console: progress bars (tqdm, Dask) and warnings
    are seen where the command was typed and kept in the log."""

    def __init__(self, log, console):
        self.log, self.console = log, console

    def write(self, text):
        self.log.write(text)
        try:
            self.console.write(text)
        except (OSError, ValueError):  # the console went away (closed terminal): the log still gets it
            pass
        return len(text)

    def flush(self):
        self.log.flush()
        try:
            self.console.flush()
        except (OSError, ValueError):
            pass

    def isatty(self):
        return False


def log_to(path):
    """Send stderr (progress bars, warnings) to ``path`` and to the console, and logging to ``path``; an uncaught
    error prints its one-line reason on the console (the job's first line there, before Snakemake's own report)
    and the full traceback in the log."""
    console = sys.stderr
    handle = open(path, "w", buffering=1)
    sys.stderr = _Both(handle, console)
    logging.basicConfig(stream=handle, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        force=True)

    def report(kind, error, trace):
        console.write(f"ERROR: {one_line(error)}\n")
        console.flush()
        handle.write(f"ERROR: {one_line(error)}\n")
        traceback.print_exception(kind, error, trace, file=handle)
        handle.flush()

    sys.excepthook = report
    atexit.register(_log_peak_memory, handle)
    return logging.getLogger("sdm")


PEAK_MEMORY = "peak memory (kernel high-water mark of the job's process): {mb:.0f} MB"
"""The last line of every job's log. Snakemake's benchmark files sample memory every 30 s after a job's first 15
s and miss short peaks; the kernel's high-water mark (``getrusage``: the job's process, its threads included)
misses none. ``benchmarks/scale_global.py`` reads it."""


def _log_peak_memory(handle):
    import resource

    try:
        handle.write(PEAK_MEMORY.format(mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024) + "\n")
        handle.flush()
    except (OSError, ValueError):  # the log is closed already
        pass
