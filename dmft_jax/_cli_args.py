"""The validation layer of the command line: typed flag parsers, input archives, memory.

Every flag of every command is parsed by one of the types below (`argparse` `type=`), so a bad
value fails while the command line is parsed, before anything is computed or compiled, with one
line naming the flag. Values computed later from several flags (a grid file, a schedule) are
checked with the same objects through their `check(flag, value)` method. Input `.npz` files are
read by `read_npz`, which inspects each array's header before loading it (no pickles, no
absurd sizes, no truncated members). `check_memory` refuses a run whose estimated memory exceeds
what the machine (and the accelerator) has.
"""

from __future__ import annotations

import argparse
import math
import os
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np


class UsageError(Exception):
    """Bad input: reported as one line naming the flag or file, exit code 2."""


class SolveError(Exception):
    """A computation that failed (diverged, out of memory, unwritable disk): one line, exit 1."""


class Command(NamedTuple):
    """One subcommand: `add_arguments(parser)` declares its flags, `run(args, out)` runs it
    with the shared output helper `out` (`_cli_io.Output`) and returns the exit code."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable


# ------------------------------------------------------------------------------- typed flags
#: Magnitude bound of every real-valued flag. Physics values beyond it lie outside any regime
#: the theory describes, and their squares and products overflow float64 inside a solve.
MAX_VALUE = 1e6
#: Bound of every count (steps, widths, sizes, seeds): loop counters and PRNG seeds are int32.
MAX_COUNT = 2**31 - 1
#: Highest Taylor degree of h and phihat (and --hermite-degree): n! overflows float64 beyond 170.
MAX_DEGREE = 170
#: Most index directions k: each one is unrolled in the compiled program.
MAX_K = 256


def _fmt(x: float) -> str:
    return f"{x:g}"


class Real:
    """A finite real number in [low, high] (open ends with `open_low` / `open_high`)."""

    def __init__(self, low: float = -MAX_VALUE, high: float = MAX_VALUE, *,
                 open_low: bool = False, open_high: bool = False):
        self.low, self.high, self.open_low, self.open_high = low, high, open_low, open_high
        self.__name__ = "number"  # argparse names the type in its own messages

    def describe(self) -> str:
        if self.low == -MAX_VALUE and self.high == MAX_VALUE:
            return f"a finite number with |x| <= {_fmt(MAX_VALUE)}"
        lo = "(" if self.open_low else "["
        hi = ")" if self.open_high else "]"
        return f"a finite number in {lo}{_fmt(self.low)}, {_fmt(self.high)}{hi}"

    def ok(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        above = x > self.low if self.open_low else x >= self.low
        below = x < self.high if self.open_high else x <= self.high
        return above and below

    def __call__(self, text: str) -> float:
        try:
            x = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(
                f"expected {self.describe()}, got {text!r}") from None
        if not self.ok(x):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}")
        return x

    def check(self, flag: str, value) -> float:
        """Validate a value that did not come through the parser (UsageError naming `flag`)."""
        try:
            x = float(value)
        except (TypeError, ValueError, OverflowError):
            raise UsageError(f"{flag} must be {self.describe()}, got {value!r}") from None
        if not self.ok(x):
            raise UsageError(f"{flag} must be {self.describe()}, got {value!r}")
        return x


class Count:
    """An integer in [low, high]; also accepts integral floats such as 1e4."""

    def __init__(self, low: int = 1, high: int = MAX_COUNT):
        self.low, self.high = low, high
        self.__name__ = "integer"

    def describe(self) -> str:
        return f"an integer in [{self.low}, {self.high}]"

    def parse(self, text: str) -> int | None:
        try:
            return int(text)
        except (TypeError, ValueError):
            pass
        try:
            x = float(text)
        except (TypeError, ValueError):
            return None
        return int(x) if math.isfinite(x) and x.is_integer() else None

    def __call__(self, text: str) -> int:
        n = self.parse(text)
        if n is None:
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}")
        if not self.low <= n <= self.high:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}")
        return n

    def check(self, flag: str, value) -> int:
        n = self.parse(str(value))
        if n is None or not self.low <= n <= self.high:
            raise UsageError(f"{flag} must be {self.describe()}, got {value!r}")
        return n


class RealList:
    """Comma-separated reals, each valid for `item`, between `min_len` and `max_len` of them.
    Returns the text unchanged (the flags' values are stored verbatim in output params)."""

    def __init__(self, item: Real = Real(), min_len: int = 1, max_len: int = 10_000):
        self.item, self.min_len, self.max_len = item, min_len, max_len
        self.__name__ = "list"

    def values(self, text: str) -> list[float]:
        """The numbers of an already validated text."""
        return [float(x) for x in text.split(",") if x.strip()]

    def __call__(self, text: str) -> str:
        parts = [x.strip() for x in str(text).split(",")]
        if parts and parts[-1] == "":
            parts = parts[:-1]  # a trailing comma is harmless
        count = (f"{self.min_len}" if self.min_len == self.max_len
                 else f"{self.min_len} or more")
        if any(p == "" for p in parts) or len(parts) < self.min_len:
            raise argparse.ArgumentTypeError(
                f"expected {count} comma-separated numbers, got {text!r}")
        if len(parts) > self.max_len:
            raise argparse.ArgumentTypeError(f"at most {self.max_len} values, got {len(parts)}")
        for p in parts:
            try:
                x = float(p)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{p!r} is not a number (in {text!r})") from None
            if not self.item.ok(x):
                raise argparse.ArgumentTypeError(
                    f"each value must be {self.item.describe()}, got {p!r}")
        return str(text)


class Choice:
    """One of `names`, case-insensitive; returns the lower-case name."""

    def __init__(self, names: Sequence[str]):
        self.names = tuple(names)
        self.__name__ = "name"

    def __call__(self, text: str) -> str:
        name = str(text).strip().lower()
        if name not in self.names:
            raise argparse.ArgumentTypeError(
                f"unknown name {text!r} (choose from {', '.join(self.names)})")
        return name


def non_empty_path(text: str) -> str:
    """A file name (its existence and kind are checked by the preflight)."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("expected a file name, got ''")
    return str(text)


POSITIVE = Real(0.0, open_low=True)
NON_NEGATIVE = Real(0.0)
FINITE = Real()
COUNT = Count()

#: Taylor coefficients of h: >= 0, h(1) > 0 and h'(1) > 0 are checked by `covariance_spec`.
H_COEFFS = RealList(NON_NEGATIVE, max_len=MAX_DEGREE + 1)
PHIHAT_ROW = RealList(FINITE, max_len=MAX_DEGREE + 1)


def covariance_spec(presets: Sequence[str]) -> Callable[[str], str]:
    """Type of --h: a preset name or Taylor coefficients c_0, c_1, ... (>= 0) with h(1) > 0 and
    h'(1) > 0 (with h'(1) = 0, h is constant on [-1, 1] and the weights never move)."""
    def parse(text: str) -> str:
        if str(text).strip().lower() in presets:
            return str(text).strip().lower()
        if not str(text).strip():
            raise argparse.ArgumentTypeError(
                f"expected Taylor coefficients C0,C1,... or a preset ({', '.join(presets)}), "
                "got ''")
        coeffs = H_COEFFS.values(H_COEFFS(text))
        if not sum(coeffs) > 0:
            raise argparse.ArgumentTypeError(f"h(1) = sum of the coefficients must be > 0, got "
                                             f"{text!r}")
        if not sum(p * c for p, c in enumerate(coeffs)) > 0:
            raise argparse.ArgumentTypeError(
                f"h'(1) = 0 for {text!r}: a constant covariance carries no gradient (the "
                "weights never move); give a coefficient of q^1 or higher")
        return str(text)
    parse.__name__ = "covariance"
    return parse


def phihat_spec(text: str) -> str:
    """Type of --phihat: rows of Taylor coefficients separated by ';' (one row per index
    direction, at most MAX_K rows)."""
    rows = str(text).split(";")
    if len(rows) > MAX_K:
        raise argparse.ArgumentTypeError(f"at most {MAX_K} rows (index directions), got "
                                         f"{len(rows)}")
    for row in rows:
        try:
            PHIHAT_ROW(row)
        except argparse.ArgumentTypeError as err:
            raise argparse.ArgumentTypeError(f"row {row!r}: {err}") from None
    return str(text)


def phihat_rows(text: str) -> list[list[float]]:
    """The coefficient rows of a validated --phihat text."""
    return [PHIHAT_ROW.values(r) for r in text.split(";")]


# ------------------------------------------------------------------------------ input files
class ArraySpec(NamedTuple):
    """An array expected in an input archive: `kind` "real" (float or integer, finite unless
    `finite` is False), "bool" or "text"; `ndim` the number of axes (None: any)."""

    kind: str = "real"
    ndim: int | None = None
    finite: bool = True


def _member_header(archive: zipfile.ZipFile, name: str):
    """(shape, dtype) of an archive member from its .npy header, without reading the data."""
    with archive.open(name) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    return shape, dtype


def _dtype_ok(dtype: np.dtype, kind: str) -> bool:
    if kind == "text":
        return dtype.kind == "U"
    if kind == "bool":
        return dtype.kind in "bui"
    return dtype.kind in "fiu"


def read_npz(flag: str, path: str, required: Mapping[str, ArraySpec],
             optional: Mapping[str, ArraySpec] | None = None,
             max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Load and validate the arrays of an input `.npz` file.

    Every named array is checked from its header first (dtype: real, bool or text, never
    objects, complex or pickles; size against the member's stored size and `max_bytes`), then
    loaded with `allow_pickle=False` and, for real arrays, checked to be finite. Any problem is
    a UsageError naming `flag` and the file. Returns {name: array} (optional ones if present).
    """
    optional = optional or {}
    where = f"{flag}: {path!r}" if flag else repr(path)
    if not os.path.exists(path):
        raise UsageError(f"{where}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"{where} is a directory, not an .npz file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{where} is not readable")
    if max_bytes is None:
        max_bytes = available_memory()[0] // 4
    try:
        with zipfile.ZipFile(path) as archive:
            members = {n[:-4]: archive.getinfo(n) for n in archive.namelist()
                       if n.endswith(".npy")}
            missing = [k for k in required if k not in members]
            if missing:
                have = ", ".join(sorted(members)) or "none"
                raise UsageError(f"{where} lacks the array(s) {', '.join(missing)} "
                                 f"(it has: {have})")
            wanted = {**required, **{k: v for k, v in optional.items() if k in members}}
            return {name: _read_member(where, archive, members[name], name, spec, max_bytes)
                    for name, spec in wanted.items()}
    except UsageError:
        raise
    except (zipfile.BadZipFile, EOFError) as err:
        reason = str(err) or "empty or truncated"
        raise UsageError(f"{where} is not a readable .npz archive ({reason})") from None
    except (OSError, ValueError, OverflowError, MemoryError, RuntimeError) as err:
        raise UsageError(f"{where} cannot be read: {type(err).__name__}: {err}") from None


def _read_member(where: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str,
                 spec: ArraySpec, max_bytes: int) -> np.ndarray:
    try:
        shape, dtype = _member_header(archive, info.filename)
    except (ValueError, EOFError) as err:
        raise UsageError(f"{where}: array {name!r} has a bad header ({err})") from None
    if dtype.hasobject or not _dtype_ok(dtype, spec.kind):
        want = {"real": "real numbers", "bool": "booleans", "text": "a string"}[spec.kind]
        raise UsageError(f"{where}: array {name!r} must hold {want}, not dtype {dtype}")
    if spec.ndim is not None and len(shape) != spec.ndim:
        raise UsageError(f"{where}: array {name!r} must have {spec.ndim} axes, has shape "
                         f"{tuple(shape)}")
    size = math.prod(shape) * dtype.itemsize
    if size > max_bytes:
        raise UsageError(f"{where}: array {name!r} of shape {tuple(shape)} needs "
                         f"{human_bytes(size)}, more than this run can hold "
                         f"({human_bytes(max_bytes)})")
    if size > info.file_size:
        raise UsageError(f"{where}: array {name!r} is truncated (shape {tuple(shape)} needs "
                         f"{size} bytes, the archive holds {info.file_size})")
    with archive.open(info.filename) as fh:
        arr = np.lib.format.read_array(fh, allow_pickle=False)
    if spec.kind == "real" and spec.finite and not np.all(np.isfinite(arr)):
        raise UsageError(f"{where}: array {name!r} has non-finite values")
    return arr


# ------------------------------------------------------------------------------------ memory
def human_bytes(n: float) -> str:
    """1.5 GB style (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"


def _host_available() -> int:
    """MemAvailable of /proc/meminfo (Linux), else free physical pages."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: do not refuse


def _device_available() -> int | None:
    """Free memory of the first accelerator (None on CPU or when JAX does not say)."""
    import jax
    try:
        dev = jax.devices()[0]
        if dev.platform == "cpu":
            return None
        stats = dev.memory_stats() or {}
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    except (KeyError, RuntimeError, AttributeError, TypeError, ValueError):
        return None


def available_memory() -> tuple[int, str]:
    """(bytes, where): the memory a run may use, the smaller of the host's available memory and
    the accelerator's free memory."""
    host = _host_available()
    device = _device_available()
    if device is not None and device < host:
        return device, "on the accelerator"
    return host, "on this machine"


def check_memory(need: float, sizes: str) -> None:
    """UsageError if `need` bytes exceed the available memory; `sizes` names the flags that
    set the size (e.g. "--steps 100000, --m 16")."""
    have, where = available_memory()
    if need > have:
        raise UsageError(f"{sizes}: the run needs about {human_bytes(need)} of memory, but "
                         f"{human_bytes(have)} are available {where}; reduce these sizes")


def solve_bytes(steps: int, m: int | None = None, k: int = 1) -> float:
    """Estimated peak bytes of one DMFT solve with its output arrays.

    History buffers: C and R over (neuron pair, t, s), C_A and R_A over (t, s), float64; the
    neuron pair is 2 numbers (D, O) for the symmetric DMFT, m x m in general (`m`). XLA holds
    about twice the buffers (measured 340 MiB at N = 2048, symmetric, benchmarks/README.md),
    and the output arrays copy them once more.
    """
    L = float(steps) + 1
    pair = 2.0 if m is None else float(m) ** 2
    vec = 1.0 if m is None else float(m)
    return 8 * 3 * ((2 * pair + 2) * L * L + 4 * vec * (k + 2) * L)
