"""`quasirl bench` subcommand (to be filled in by its issue)."""

import typer


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the main app."""
