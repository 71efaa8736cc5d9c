"""The output layer of the command line: output flags, their preflight, atomic writes, the
summary line / JSON, divergence reports, and interrupt handling.

- `add_output_arguments` declares `--out`, `--plot`, `--json` with one meaning everywhere and
  records which flags name files; `Output.preflight` checks those paths before any work.
- `Output.write_npz` / `Output.write_figure` write every file to a hidden temporary name in
  the same directory and rename it into place when complete (`os.replace` is atomic): an
  interrupted run, a full disk or two runs writing the same file never leave a partial file.
- `run_interruptible` runs a command in a worker thread. The main thread only waits, so it
  handles SIGINT / SIGTERM at once (during compilation, a solve or a write): it removes the
  temporary files, prints one line saying what was not written and leaves with `os._exit`
  (130 for SIGINT, 143 for SIGTERM) without running finalizers, which is what used to crash
  (exit 139) when XLA was interrupted mid-compilation.
- `diverged` is the command line's one reading of a result's divergence flag, and
  `divergence_line` its one wording.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import signal
import sys
import threading
from collections.abc import Callable, Mapping

import numpy as np

from ._cli_args import SolveError, UsageError, non_empty_path

#: Which files each kind of output flag may name.
DATA, FIGURE = "data", "figure"
_DATA_SUFFIX = ".npz"


# ----------------------------------------------------------------------------- output flags
def add_output_arguments(p: argparse.ArgumentParser, *, out: str | None = DATA,
                         out_default: str | None = None, out_help: str | None = None,
                         plot: bool = False, json_summary: bool = True) -> None:
    """The output flags of a command: `--out` (a DATA `.npz` or a FIGURE), `--plot` (a
    figure), `--json` (a one-line JSON summary on stdout instead of the text line)."""
    g = p.add_argument_group("output")
    files = {}
    if out is not None:
        meta = "FILE.npz" if out == DATA else "FILE.png"
        g.add_argument("--out", type=non_empty_path, default=out_default, metavar=meta,
                       help=out_help or ("write the arrays (.npz)" if out == DATA else
                                         "figure to write (png, pdf, svg, ...)"))
        files["out"] = out
    if plot:
        g.add_argument("--plot", type=non_empty_path, metavar="FILE.png",
                       help="write a figure (png, pdf, svg, ...)")
        files["plot"] = FIGURE
    if json_summary:
        g.add_argument("--json", action="store_true", help="print a one-line JSON summary")
    p.set_defaults(_output_files=files)


def figure_formats() -> set[str]:
    """File extensions matplotlib can write here (without importing pyplot). PGF needs a TeX
    installation, so it counts only when its TeX program is on the PATH."""
    import shutil

    import matplotlib
    from matplotlib.figure import Figure
    formats = set(Figure().canvas.get_supported_filetypes())
    if "pgf" in formats and not shutil.which(matplotlib.rcParams["pgf.texsystem"]):
        formats.discard("pgf")
    return formats


def check_output_path(flag: str, path: str, kind: str) -> str:
    """UsageError unless `path` can be written by `flag` (a `kind` file): a file name (not a
    directory) with a supported extension, in an existing writable directory."""
    if not path or not path.strip():
        raise UsageError(f"{flag}: expected a file name, got ''")
    if path.endswith(os.sep) or os.path.isdir(path) or os.path.basename(path) in (".", ".."):
        raise UsageError(f"{flag}: {path!r} is a directory; give a file name")
    ext = os.path.splitext(path)[1].lower()
    if kind == DATA and ext != _DATA_SUFFIX:
        raise UsageError(f"{flag}: {path!r} must end in .npz (the archive the loaders read)")
    if kind == FIGURE:
        formats = figure_formats()
        if ext[1:] not in formats:
            what = ext or "a file without an extension"
            raise UsageError(f"{flag}: cannot write a figure as {what} ({path!r}); use one of "
                             f".{', .'.join(sorted(formats))}")
    parent = os.path.dirname(path) or "."
    if not os.path.exists(parent):
        raise UsageError(f"{flag}: directory {parent!r} of {path!r} does not exist")
    if not os.path.isdir(parent):
        raise UsageError(f"{flag}: {parent!r} (in {path!r}) is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag}: directory {parent!r} is not writable")
    if os.path.exists(path) and not (os.path.isfile(path) and os.access(path, os.W_OK)):
        raise UsageError(f"{flag}: {path!r} exists and is not a writable file")
    return path


# ------------------------------------------------------------------------------ atomic files
_LOCK = threading.Lock()
_STATE = {"pending": {}, "planned": [], "written": [], "exiting": False}


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _temporary(final: str) -> tuple[int, str]:
    """Create a hidden temporary file next to `final` (mode 0666 minus the umask, like the
    final file would get)."""
    directory, base = os.path.split(final)
    for _ in range(100):
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise OSError(f"cannot create a temporary file next to {final!r}")


def write_atomic(flag: str, final: str, write: Callable) -> None:
    """Write `final` through `write(binary file)` into a temporary file, then rename it into
    place. On any failure the temporary file is removed and nothing is left at `final`."""
    try:
        fd, tmp = _temporary(final)
    except OSError as err:
        raise SolveError(f"{flag}: cannot write {final!r}: {err.strerror or err}") from None
    with _LOCK:
        _STATE["pending"][tmp] = final
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        with _LOCK:
            if _STATE["exiting"]:  # an interrupt is being handled: do not publish the file
                raise SolveError("interrupted")
            os.replace(tmp, final)
            del _STATE["pending"][tmp]
            _STATE["written"].append(final)
    except OSError as err:
        raise SolveError(f"{flag}: cannot write {final!r}: {err.strerror or err}") from None
    finally:
        with _LOCK:
            if _STATE["pending"].pop(tmp, None) is not None:
                _remove(tmp)


# ------------------------------------------------------------------------------- the helper
class Output:
    """The output files, the summary line and the JSON of one command run.

    Built by the runner from the declared output flags; `preflight()` checks every path before
    the command computes anything.
    """

    def __init__(self, command: str, args: argparse.Namespace):
        self.command, self.args = command, args
        self.files = {flag: kind for flag, kind in getattr(args, "_output_files", {}).items()
                      if getattr(args, flag, None) is not None}
        self.json = bool(getattr(args, "json", False))

    def path(self, flag: str) -> str | None:
        return getattr(self.args, flag, None)

    def preflight(self) -> None:
        for flag, kind in self.files.items():
            check_output_path(f"--{flag}", self.path(flag), kind)
        with _LOCK:
            _STATE["planned"] = [self.path(flag) for flag in self.files]
            _STATE["written"] = []

    def params(self, **extra) -> str:
        """The command's flags as JSON (stored as `params` in its files)."""
        skip = {"func", "command", "out", "plot", "json"}
        params = {k: v for k, v in vars(self.args).items()
                  if k not in skip and not k.startswith("_")}
        params.update(extra)
        return json.dumps(params, default=str)

    def write(self, flag: str, write: Callable) -> None:
        """Write the file of `--flag` (if given) through `write(binary file)`, atomically."""
        path = self.path(flag)
        if path is not None:
            write_atomic(f"--{flag}", path, write)

    def write_npz(self, arrays: Mapping[str, np.ndarray], flag: str = "out") -> None:
        """Write `arrays` to the `.npz` of `--flag` (if given), atomically."""
        self.write(flag, lambda fh: np.savez(fh, **arrays))

    def write_figure(self, fig, flag: str, dpi: int = 120) -> None:
        """Save a matplotlib `Figure` to the path of `--flag` (format from its extension)."""
        path = self.path(flag)
        if path is not None:
            fmt = os.path.splitext(path)[1][1:].lower()
            self.write(flag, lambda fh: fig.savefig(fh, format=fmt, dpi=dpi))

    def written(self) -> str:
        paths = [self.path(flag) for flag in self.files]
        return f"; wrote {', '.join(paths)}" if paths else ""

    def report(self, summary: Mapping, line: str) -> None:
        """Print the JSON summary (strict JSON: NaN and inf become null) or the text line
        followed by the files written."""
        if self.json:
            print(json.dumps(strict_json(summary)), flush=True)
        else:
            print(line + self.written(), flush=True)

    def error_json(self, summary: Mapping) -> None:
        """A failed run's JSON record (stdout) for --json, next to its one-line error."""
        if self.json:
            print(json.dumps(strict_json(summary)), flush=True)


def strict_json(x):
    """x with non-finite floats replaced by None (JSON has no NaN)."""
    if isinstance(x, Mapping):
        return {k: strict_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [strict_json(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


# ------------------------------------------------------------------------------- divergence
def diverged(result) -> np.ndarray:
    """The command line's single reading of "diverged" for any result: a `Solution`, a network
    `Trajectory`, a `Simulation`, or a mapping of arrays with a `diverged` entry (experiment
    and sweep arrays). Each core result applies the library's rule (non-finite values, |C| > 1
    for the DMFT, a loss blowing up for networks). When the core reports result codes, this is
    the one place to read them."""
    if isinstance(result, Mapping):
        return np.asarray(result["diverged"], dtype=bool)
    code = getattr(result, "result", None)
    if code is not None:                      # a DMFT solution: its RESULTS item
        from ._results import RESULTS
        return np.asarray((code == RESULTS.diverged) | result.diverged, dtype=bool)
    return np.asarray(result.diverged, dtype=bool)


def divergence_line(what: str, count: int, total: int, detail: str = "") -> str:
    """The one wording of divergence: "<what> diverged <detail>" for a single computation,
    "<count> of <total> <what> diverged <detail>" for several (`what`: "the solve",
    "networks", "realizations", ...)."""
    head = f"{what} diverged" if total == 1 else f"{count} of {total} {what} diverged"
    return f"{head} {detail}".rstrip()


# ------------------------------------------------------------------------------- interrupts
def _interrupted(prefix: str, signum: int) -> None:
    """Signal handler (main thread): drop temporary files, say what was not written, exit."""
    got = _LOCK.acquire(timeout=5)  # a rename in progress completes first
    try:
        _STATE["exiting"] = True
        for tmp in list(_STATE["pending"]):
            _remove(tmp)
        missing = [p for p in _STATE["planned"] if p not in _STATE["written"]]
    finally:
        if got:
            _LOCK.release()
    name = signal.Signals(signum).name
    what = f"not written: {', '.join(missing)}" if missing else (
        "all files were written" if _STATE["planned"] else "no file was written")
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    print(f"{prefix}: interrupted by {name}; {what}", file=sys.stderr, flush=True)
    os._exit(128 + signum)


def run_interruptible(fn: Callable[[], int], prefix: str) -> int:
    """Run `fn()` in a worker thread while the main thread waits and handles SIGINT/SIGTERM.
    Off the main thread (signals cannot be caught there) `fn` runs directly."""
    if threading.current_thread() is not threading.main_thread():
        return fn()
    box: dict = {}

    def work():
        try:
            box["rc"] = fn()
        except BaseException as err:  # re-raised in the main thread
            box["err"] = err

    def handler(signum, frame):
        _interrupted(prefix, signum)

    worker = threading.Thread(target=work, name="dmft-jax-command", daemon=True)
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.1)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        with _LOCK:
            _STATE["planned"], _STATE["written"] = [], []
    if "err" in box:
        raise box["err"]
    return box["rc"]
