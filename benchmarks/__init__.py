"""quasirl benchmarks: speed against fair numpy references and the measured hardware floor.

Run ``python -m benchmarks`` (or ``quasirl bench``) from the repository root; results per
machine are in benchmarks/README.md, the optimisation log in benchmarks/NOTES.md.
"""
