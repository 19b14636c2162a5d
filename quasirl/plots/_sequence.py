"""Figures for the sequence analyses."""

__all__: list[str] = []
