"""The design of a validation run: disjoint query pools, the run manifest, the pre-registration.

**Pools.** The task's items are cut, by ``split_seed``, into gold demonstrations and five
disjoint query pools: Exp 1's threshold half (where each signal's operating threshold is
chosen), Exp 1's rate half (TPR, FPR and the Bayes check), Exp 2, and Exp 3 (cut in order into
one block per round; every arm answers the same block in a round, so arms are paired). A new
``split_seed`` resamples every pool. A task with too few items for the requested sizes is
refused, saying how many are needed. Overlap is computed from the item ids and must be zero.

**Manifest** (``manifest.json``): model, task, seeds, sizes, each pool's ids with their SHA-256,
the pairwise overlaps (all zero), the software version and git commit, and the time each stage
started and ended. A rerun into the same folder must draw the same pools (else it is refused).

**Pre-registration** (``prediction.json``): the prediction's ``to_dict()`` (the criteria are
inside it), written once, before any Exp 3 sample is drawn, with the SHA-256 of its canonical
JSON (keys sorted, no spaces) and the time it was registered. A rerun whose prediction differs
is refused; an identical one keeps the file (and its time) and resumes. Every Exp 3 record file
carries the hash in its configuration line and every Exp 3 record in a field
(``prediction_sha256``), and the manifest's ``exp3_sampling_started`` time, written after the
registration and before the first Exp 3 record file is opened, is checked to follow it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path

import numpy as np

from ..._jsonio import strict, write_json
from ..._validate import QuasirlValueError, check_int
from .._tasks import Task
from .._types import sample_seed

MANIFEST = "manifest.json"
PREDICTION = "prediction.json"
POOL_NAMES = ("demos", "exp1_threshold", "exp1_rate", "exp2", "exp3")


def now() -> str:
    """The current time, ISO 8601 in UTC with microseconds (sortable as text)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def sha256_json(obj) -> str:
    """SHA-256 (hex) of the canonical JSON of ``obj``: keys sorted, no spaces, ASCII, strict."""
    body = json.dumps(strict(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return hashlib.sha256(body.encode("ascii")).hexdigest()


# ----------------------------------------------------------------------------------------------
# Pools
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pools:
    """Item ids of the demonstrations and of each experiment's queries (disjoint)."""

    split_seed: int
    demos: tuple[str, ...]
    exp1_threshold: tuple[str, ...]
    exp1_rate: tuple[str, ...]
    exp2: tuple[str, ...]
    exp3: tuple[str, ...]  # round r answers exp3[r * q : (r + 1) * q]

    @property
    def exp1(self) -> tuple[str, ...]:
        return self.exp1_threshold + self.exp1_rate

    def overlap(self) -> dict[str, int]:
        """Number of shared item ids for every pair of pools (and repeats within each)."""
        out = {}
        for name in POOL_NAMES:
            ids = getattr(self, name)
            out[f"{name} repeats"] = len(ids) - len(set(ids))
        for a, b in combinations(POOL_NAMES, 2):
            out[f"{a} & {b}"] = len(set(getattr(self, a)) & set(getattr(self, b)))
        return out

    def to_dict(self) -> dict:
        ov = self.overlap()
        return {"split_seed": self.split_seed,
                "pools": {n: {"n": len(getattr(self, n)), "sha256": sha256_json(getattr(self, n)),
                              "ids": list(getattr(self, n))} for n in POOL_NAMES},
                "overlap": ov, "disjoint": not any(ov.values())}


def draw_pools(task: Task, *, n_demos: int, exp1_queries: int, exp2_queries: int,
               exp3_queries: int, split_seed: int) -> Pools:
    """Disjoint pools drawn from ``task``'s items by ``split_seed``.

    The demonstrations are ``task.split(n_demos, split_seed)``'s; the other items are permuted
    (seeded by ``split_seed``) and cut in turn into Exp 1's threshold half
    (round(exp1_queries / 2) items; ``analyze_calibration`` splits the records by it), its
    rate half, Exp 2 and Exp 3. Raises QuasirlValueError saying how many items are needed when
    the task has too few.
    """
    n_demos = check_int("n_demos", n_demos, 1)
    n1 = check_int("exp1_queries", exp1_queries, 2)
    n2 = check_int("exp2_queries", exp2_queries, 0)
    n3 = check_int("exp3_queries", exp3_queries, 0)
    split_seed = check_int("split_seed", split_seed)
    need = n_demos + n1 + n2 + n3
    if need > len(task.items):
        raise QuasirlValueError(
            f"task {task.name!r} has {len(task.items)} items, but disjoint pools need "
            f"n_demos + exp1_queries + exp2_queries + (rounds + 1) * queries_per_round = "
            f"{n_demos} + {n1} + {n2} + {n3} = {need}; lower these sizes or use a task with "
            f"at least {need} items")
    demos, rest = task.split(n_demos, split_seed)
    order = np.random.default_rng(sample_seed(split_seed, 17)).permutation(len(rest))
    ids = [rest[i].id for i in order]
    n_thr = int(round(0.5 * n1))
    cuts = np.cumsum([0, n_thr, n1 - n_thr, n2, n3])
    parts = [tuple(ids[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    pools = Pools(split_seed, tuple(d.id for d in demos), *parts)
    bad = {k: v for k, v in pools.overlap().items() if v}
    if bad:  # cannot happen by construction; the manifest's claim is checked, not assumed
        raise QuasirlValueError(f"pools overlap: {bad}")
    return pools


def items_of(task: Task, ids) -> tuple:
    """The task's items with these ids, in this order."""
    by_id = {it.id: it for it in task.items}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise QuasirlValueError(f"task {task.name!r} has no item(s) {missing[:5]}")
    return tuple(by_id[i] for i in ids)


# ----------------------------------------------------------------------------------------------
# Manifest
# ----------------------------------------------------------------------------------------------


def software() -> dict:
    """quasirl's version and, when it runs from a git checkout, the commit (and whether the
    working tree had changes)."""
    from ... import __version__

    root = Path(__file__).resolve().parents[3]
    out = {"quasirl": __version__, "commit": None, "dirty": None}
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode == 0:
            out["commit"] = head.stdout.strip()
            st = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                 "--untracked-files=no"], capture_output=True, text=True,
                                timeout=10)
            out["dirty"] = bool(st.stdout.strip()) if st.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return out


class Manifest:
    """``manifest.json`` of a run folder: design, software and stage times, rewritten (whole)
    at every stage so that a killed run leaves the stages it reached."""

    def __init__(self, folder, design: dict, pools: Pools):
        self.path = Path(folder) / MANIFEST
        pd = pools.to_dict()
        if not pd["disjoint"]:
            raise QuasirlValueError(f"pools overlap: {pd['overlap']}")
        old = read_manifest(folder) if self.path.exists() else None
        if old is not None:
            for name in POOL_NAMES:
                if old["pools"][name]["sha256"] != pd["pools"][name]["sha256"]:
                    raise QuasirlValueError(
                        f"out {str(Path(folder))!r} holds a run with a different {name} pool "
                        "(other seeds, sizes or task); use another folder")
            diff = sorted(k for k in set(old["design"]) | set(design)
                          if old["design"].get(k) != strict(design).get(k))
            if diff:
                raise QuasirlValueError(
                    f"out {str(Path(folder))!r} holds a run with a different design (differs "
                    f"in {', '.join(diff)}); use another folder")
        self.data = {"design": strict(design), **pd, "software": software(),
                     "stages": {} if old is None else old["stages"],
                     "runs": ([] if old is None else old.get("runs", [])) + [now()],
                     "prediction": None if old is None else old.get("prediction")}
        self.write()

    def stage(self, name: str, first: bool = True) -> str:
        """Record the time of a stage (``first``: keep the earliest time on resume)."""
        t = now()
        if not (first and name in self.data["stages"]):
            self.data["stages"][name] = t
        self.write()
        return self.data["stages"][name]

    def write(self) -> None:
        write_json(self.path, self.data, indent=1, sort_keys=True)


def read_manifest(folder) -> dict:
    """The manifest of a run folder (QuasirlValueError if missing or not JSON)."""
    path = Path(folder) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QuasirlValueError(f"{path} does not exist") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise QuasirlValueError(f"{path} is not JSON ({e})") from None


# ----------------------------------------------------------------------------------------------
# Pre-registration
# ----------------------------------------------------------------------------------------------


def read_prediction(folder) -> dict:
    """``prediction.json`` of a run folder, its hash checked against its content."""
    path = Path(folder) / PREDICTION
    try:
        reg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QuasirlValueError(f"{path} does not exist") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise QuasirlValueError(f"{path} is not JSON ({e})") from None
    if not isinstance(reg, dict) or not {"content", "sha256", "registered_at"} <= set(reg):
        raise QuasirlValueError(f"{path} is not a pre-registered prediction")
    if sha256_json(reg["content"]) != reg["sha256"]:
        raise QuasirlValueError(
            f"{path}: its content does not match its sha256 {reg['sha256']}: the file was "
            "changed after it was registered")
    return reg


def register_prediction(folder, content: dict) -> dict:
    """Write ``prediction.json`` once; returns the registration (content, sha256,
    registered_at).

    An existing registration with the same content is kept as it is (a resumed run); one with
    different content is refused, and so is a first registration into a folder that already
    holds Exp 3 records (they were drawn without a prediction registered before them)."""
    folder = Path(folder)
    path = folder / PREDICTION
    h = sha256_json(content)
    if path.exists():
        reg = read_prediction(folder)
        if reg["sha256"] != h:
            raise QuasirlValueError(
                f"{path} pre-registers a different prediction (sha256 {reg['sha256'][:16]}..., "
                f"this run's is {h[:16]}...), registered at {reg['registered_at']}; a "
                "pre-registered prediction is never overwritten: use another folder")
        return reg
    early = sorted(p.name for p in folder.glob("exp3_*.jsonl"))
    if early:
        raise QuasirlValueError(
            f"{folder} holds Exp 3 records ({', '.join(early)}) but no pre-registered "
            f"prediction ({PREDICTION}); they were not drawn after a registration: use "
            "another folder")
    reg = {"content": strict(content), "sha256": h, "registered_at": now()}
    write_json(path, reg, indent=1, sort_keys=True)
    (folder / "prediction.sha256").write_text(f"{h}  content of {PREDICTION}\n")
    return reg


def check_order(manifest: dict) -> None:
    """The prediction was registered before Exp 3 sampling started (QuasirlValueError if not,
    or if Exp 3 started with no registration)."""
    reg = manifest.get("prediction")
    started = manifest["stages"].get("exp3_sampling_started")
    if started is None:
        return
    if reg is None:
        raise QuasirlValueError("the manifest shows Exp 3 sampling with no pre-registered "
                                "prediction")
    if not datetime.fromisoformat(reg["registered_at"]) < datetime.fromisoformat(started):
        raise QuasirlValueError(
            f"the prediction was registered at {reg['registered_at']}, not before Exp 3 "
            f"sampling started at {started}")
