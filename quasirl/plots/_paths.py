"""Figures for the paths analyses."""

__all__: list[str] = []
