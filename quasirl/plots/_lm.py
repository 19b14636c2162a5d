"""Figures for the lm analyses."""

__all__: list[str] = []
