"""Figures for the mdp analyses."""

__all__: list[str] = []
