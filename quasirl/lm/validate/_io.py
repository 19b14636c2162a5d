"""The files of a validation folder: record files (JSONL, resumable) and result JSON.

Names are fixed, so that a rerun on the same folder resumes every experiment from its records
and rewrites the same JSON files. Result JSON holds ``lm`` and ``task`` (and for Exp 2 the
context ``bank``) next to the result's ``to_dict()``.
"""

from __future__ import annotations

from pathlib import Path

from ..._jsonio import write_json

EXP1_RECORDS = "exp1_calibration.jsonl"
EXP1_JSON = "exp1_calibration.json"
EXP2_RECORDS = "exp2_transfer.jsonl"
EXP2_JSON = "exp2_transfer.json"
EXP3_PREDICTION_JSON = "exp3_prediction.json"
EXP3_JSON = "exp3_trajectory.json"
EXP2_CONTEXT_RECORDS = "exp2_context.jsonl"
EXP2_CONTEXT_JSON = "exp2_context.json"
T_AXIS_RECORDS = "t_axis.jsonl"
T_AXIS_JSON = "t_axis.json"


def arm_records(folder, arm: str) -> Path:
    """The record file of one Exp 3 arm."""
    return Path(folder) / f"exp3_{arm}.jsonl"


def write_result(path, result, **header) -> None:
    """Write ``header`` and ``result.to_dict()`` as strict, sorted JSON (folders created)."""
    write_json(Path(path), {**header, **result.to_dict()}, indent=1, sort_keys=True)
