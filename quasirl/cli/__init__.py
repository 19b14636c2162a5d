"""The ``quasirl`` command. Each subcommand lives in its own module and registers itself.

Every subcommand writes PNG + JSON/netCDF under ``--out`` and prints a short table. Bad
arguments give one clear line (no traceback) and exit status 2.
"""

from __future__ import annotations

import sys

import typer

from .._validate import QuasirlValueError

app = typer.Typer(
    name="quasirl",
    help="Selection on samples is reinforcement learning: simulate, sweep, plot, check on LMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

from . import bench, boost, converge, demo, eigen, lm, paths, phase  # noqa: E402

for _module in (demo, converge, paths, eigen, boost, phase, lm, bench):
    _module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    try:
        app(args=argv, standalone_mode=False)
    except QuasirlValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:  # click's own usage errors
        return int(exc.code or 0)
    except Exception as exc:  # click.UsageError and friends carry a clear message
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s status."""
    sys.exit(main())
