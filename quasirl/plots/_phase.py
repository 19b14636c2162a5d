"""Figures for the phase analyses."""

__all__: list[str] = []
