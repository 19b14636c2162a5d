"""`quasirl build-native`: build the native CPU kernels ahead of time, or report them."""

from __future__ import annotations

import typer

EXAMPLE = ("Example: quasirl build-native   (or --march x86-64-v3+clzero; --status to report "
           "what quasirl.kernel_status() says)")


def register(app: typer.Typer) -> None:
    @app.command("build-native", epilog=EXAMPLE)
    def build_native(
        march: str = typer.Option("", help="instruction set: a -march value with optional "
                                           "+feature suffixes (default $QUASIRL_NATIVE_MARCH, "
                                           "else native)"),
        werror: bool = typer.Option(False, help="compiler warnings are errors"),
        status: bool = typer.Option(False, help="print quasirl.kernel_status() as JSON and "
                                                "build nothing"),
    ) -> None:
        """Compile quasirl's native CPU kernels into the cache (once per machine and
        instruction set; importing quasirl does the same for the default), so that no later
        call waits for the compiler. Where no compiler works or the build fails, one line says
        why (exit status 2) and every function takes the XLA path."""
        from .._native import cli

        code = cli.status() if status else cli.build(march or None, werror)
        if code:
            raise typer.Exit(code)

