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


def _close_bars() -> None:
    """Close the progress bars a failed command left open, so that the error starts a line."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ()) or ()):
        bar.close()


def _one_line(exc: BaseException) -> str:
    """An exception as the one line the CLI prints: a QuasirlValueError raised inside a JAX
    callback (checks under jit) reaches us wrapped in JAX's runtime error; show its message."""
    _close_bars()
    text = str(exc)
    marker = "QuasirlValueError: "
    if marker in text:
        text = text[text.rindex(marker) + len(marker):]
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status: 0 ok, 2 bad arguments (one ``error:``
    line, no traceback), 1 a run that failed (a language-model server, memory)."""
    from quasirl.lm._types import LMError

    try:
        app(args=argv, prog_name="quasirl")
    except SystemExit as exc:  # click/typer end every run this way, usage errors with code 2
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except (ValueError, OSError) as exc:  # QuasirlValueError, bad paths (--out under a file)
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except TypeError as exc:  # a value of the wrong kind that reached the library
        print(f"error: bad argument: {_one_line(exc)}", file=sys.stderr)
        return 2
    except LMError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except MemoryError:
        _close_bars()
        print("error: out of memory (choose a smaller problem; the limits are in "
              "docs/reliability.md)", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # JAX's runtime error around a check that ran under jit
        if "QuasirlValueError: " not in str(exc):
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s status."""
    sys.exit(main())
