"""Strict JSON for the summaries quasirl writes: NaN and infinities become null.

``json.dumps`` writes NaN and Infinity by default, which is not JSON (jq, JavaScript and most
strict parsers refuse the file). A summary value that is not a finite number (an acceptance
rate of a round that accepted nothing, a threshold of "accept nothing") is written as null;
numpy scalars and arrays become plain numbers and lists.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def strict(obj):
    """``obj`` with non-finite floats as None and numpy values as Python ones."""
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path, obj, indent: int = 1, sort_keys: bool = False) -> None:
    """Write ``obj`` as strict JSON (see the module docstring), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(strict(obj), indent=indent, sort_keys=sort_keys,
                               allow_nan=False) + "\n")
