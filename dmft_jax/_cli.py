"""The `dmft-jax` command line (also `python -m dmft_jax`).

This module holds the parser, the explicit list of commands and `main`. The pieces live in
private modules: `_cli_args` (typed flag parsers, input files, memory preflight),
`_cli_io` (output flags, atomic writes, summaries, divergence reports, interrupts),
`_cli_physics` (physics and grid flags, the model they describe) and one module per group
of commands (`_cli_solve`, `_cli_experiment`, `_cli_simulate`, `_cli_threshold`, `_cli_grad`).

Every error a user can cause ends in one line `dmft-jax <command>: error: ...` on stderr and
exit code 2 (bad input, found before any computation) or 1 (a computation that diverged or
failed); an interrupt exits 130 (SIGINT) or 143 (SIGTERM) with one line saying what was not
written. Never a traceback (set DMFT_JAX_TRACEBACK=1 to see one for an internal error).
"""

from __future__ import annotations

import argparse
import os
import sys

from ._cli_args import Command, SolveError, UsageError
from ._cli_experiment import COMPARE, EXPERIMENT, SWEEP
from ._cli_grad import GRAD
from ._cli_io import Output, run_interruptible
from ._cli_simulate import SIMULATE
from ._cli_solve import DEMO, SOLVE
from ._cli_threshold import THRESHOLD

__all__ = ["COMMANDS", "SolveError", "UsageError", "build_parser", "main"]

#: The commands, in the order `dmft-jax --help` lists them.
COMMANDS: tuple[Command, ...] = (SOLVE, DEMO, EXPERIMENT, SWEEP, COMPARE, SIMULATE, THRESHOLD,
                                 GRAD)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump)."""

    def error(self, message):
        raise UsageError(message)


#: jaxlib releases on which XLA's older CPU loop-fusion code generator was measured (below).
#: XLA aborts the process on a flag it does not know, so other releases are left as they are.
_CODEGEN_RELEASES = ("0.10.",)


def _cpu_codegen():
    """Compile with XLA's older loop-fusion code generator on CPU
    (`--xla_cpu_use_fusion_emitters=false`) when `dmft-jax` is the process's entry point.
    Measured on the 2-core CPU (jaxlib 0.10.2): the lazy m = 1024 adaptive solve to t = 100
    compiles in 9.7 s instead of 12.0 s and runs in 10.8 s instead of 13.4 s; `demo --quick`
    14 s instead of 22 s; results agree to rounding (e_ts 4e-16 relative). Left out when
    XLA_FLAGS already names the flag, when DMFT_JAX_XLA_DEFAULTS=1, and on other jaxlib
    releases. Set before jax starts its backend (it reads XLA_FLAGS once)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_use_fusion_emitters" in flags or os.environ.get("DMFT_JAX_XLA_DEFAULTS") == "1":
        return
    from importlib.metadata import PackageNotFoundError, version
    try:
        release = version("jaxlib")
    except PackageNotFoundError:
        return
    if release.startswith(_CODEGEN_RELEASES):
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_use_fusion_emitters=false").strip()


def _enable_x64():
    # float64 is the default for theory; the CLI (not the library) turns it on.
    os.environ.setdefault("JAX_ENABLE_X64", "1")
    import jax
    jax.config.update("jax_enable_x64", True)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dmft-jax",
                     description="Dynamical mean field theory of two-layer networks (Montanari & "
                                 "Urbani, arXiv:2502.21269; equations in docs/equations.md).")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"dmft-jax {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(func=cmd.run)
    return parser


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _internal(prefix: str, err: Exception) -> int:
    """An unexpected exception: one line (or the traceback with DMFT_JAX_TRACEBACK=1)."""
    text = _one_line(err)
    if isinstance(err, MemoryError) or "RESOURCE_EXHAUSTED" in text or "bad_alloc" in text:
        print(f"{prefix}: error: out of memory ({text[:300]}); reduce the sizes of the run",
              file=sys.stderr)
        return 1
    if os.environ.get("DMFT_JAX_TRACEBACK"):
        raise err
    print(f"{prefix}: error: internal error {type(err).__name__}: {text[:500]} (please report "
          "it; DMFT_JAX_TRACEBACK=1 shows the traceback)", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the process's entry point (not a call from Python): its backend flags
        _cpu_codegen()
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), "")
    prefix = f"dmft-jax {command}".strip()
    try:
        _enable_x64()  # before any array exists
        args = build_parser().parse_args(argv)
    except UsageError as err:
        print(f"{prefix}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted by SIGINT; no file was written", file=sys.stderr)
        return 130
    prefix = f"dmft-jax {args.command}"
    out = Output(args.command, args)

    def work() -> int:
        out.preflight()  # output paths, before the command reads or computes anything
        return args.func(args, out)

    try:
        return run_interruptible(work, prefix)
    except UsageError as err:
        print(f"{prefix}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except SolveError as err:
        print(f"{prefix}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # only off the main thread, where no handler is installed
        print(f"{prefix}: interrupted by SIGINT", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 (one line instead of a traceback)
        return _internal(prefix, err)


if __name__ == "__main__":
    sys.exit(main())
