"""The ``quasirl`` command. Each subcommand lives in its own module and registers itself.

Every subcommand writes PNG + JSON/netCDF under ``--out`` and prints a short table. Bad
arguments give one clear line (no traceback) and exit status 2.
"""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="quasirl",
    help="Selection on samples is reinforcement learning: simulate, sweep, plot, check on LMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



@app.callback()
def _root() -> None:
    """Selection on samples is reinforcement learning: simulate, sweep, plot, check on LMs."""


from . import bench, boost, converge, demo, eigen, lm, native, paths, phase  # noqa: E402

for _module in (demo, converge, paths, eigen, boost, phase, lm, bench, native):
    _module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 ok, 2 bad arguments)."""
    try:
        app(args=argv, prog_name="quasirl")
    except SystemExit as exc:  # click/typer end every run this way, usage errors with code 2
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except (ValueError, OSError) as exc:  # QuasirlValueError, bad paths (--out under a file)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s status."""
    sys.exit(main())
