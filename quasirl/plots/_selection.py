"""Figures for the selection analyses."""

__all__: list[str] = []
