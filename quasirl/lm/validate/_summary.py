"""One table across validation runs (issue 17, item 5), read from the runs' files alone.

:func:`summarize_run` reads one folder written by :func:`validate` (``manifest.json``,
``prediction.json``, ``exp1_calibration.json``, ``exp2_transfer.json``,
``exp3_trajectory.json`` and the ``exp3_<arm>.jsonl`` records) into one row: the design (model,
task, seeds, sizes), the ingredients (eps0, AUROC per signal, the transfer line a + lam b and
its fixed point eps*, each with its interval), the Exp 3 contrasts at the last round (predicted,
observed with its query cluster interval, z), the joint test, the calibration slope, every
pre-stated criterion, and whether the prediction was registered before the first Exp 3 record.
No model is loaded and nothing is recomputed: every number is the one in the run's JSON.

A run that stopped early gives a row with what exists and a ``status`` naming the missing
stage; a folder holding none of a run's files is refused (QuasirlValueError naming it).
:func:`summary_markdown` draws the tables, per run and per (model, task) across seeds.

Time of the first Exp 3 record. Exp 3 records carry the prediction's hash but no time of
their own; the time is the manifest's ``exp3_first_record_written`` stage (stamped just after
the first record was written, so an upper bound), or, for a manifest without it, the
``exp3_sampling_started`` stage (a lower bound, written before the first record file was
opened). Records that do carry a time in one of :data:`RECORD_TIME_FIELDS` are used first.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from ..._validate import QuasirlValueError
from .._records import read_records
from . import _io
from ._design import MANIFEST, PREDICTION, sha256_json

RECORD_TIME_FIELDS = ("time", "timestamp", "written_at")
DESIGN_SIZES = ("n_demos", "k", "exp1_queries", "exp1_samples", "exp2_queries", "exp2_samples",
                "rounds", "queries_per_round", "samples_per_query", "n_boot", "temperature")
_RESULT_FILES = (MANIFEST, _io.EXP1_JSON, _io.EXP2_JSON, _io.EXP3_JSON)


def _load(path: Path) -> dict | None:
    """A JSON file of the run, None if absent; a file that is not a JSON object is refused."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as e:
        raise QuasirlValueError(f"{path} is not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise QuasirlValueError(f"{path} is not a JSON object")
    return obj


def _pair(x) -> tuple | None:
    return None if x is None else tuple(x)


def _time(s):
    return None if s is None else datetime.fromisoformat(s)


def _last(seq):
    return seq[-1] if seq else None


def _exp3_records(folder: Path) -> tuple[int, set, str | None, list[str]]:
    """(number of Exp 3 records, the prediction hashes they and their files carry, the earliest
    record time if records carry one, the record files) of a folder."""
    n, hashes, times, files = 0, set(), [], []
    for path in sorted(folder.glob("exp3_*.jsonl")):
        meta, recs = read_records(path)
        files.append(path.name)
        hashes.add(meta.get("prediction_sha256"))
        for r in recs:
            hashes.add(r.get("prediction_sha256"))
            times += [r[f] for f in RECORD_TIME_FIELDS if isinstance(r.get(f), str)]
        n += len(recs)
    return n, hashes, (min(times, key=_time) if times else None), files


def summarize_run(folder) -> dict:
    """One row of the cross-run summary, read from a :func:`validate` folder's files.

    Keys (None where the run does not hold the number):

    * ``folder``, ``run`` (the folder's name), ``status`` ("complete", or which stage is missing
      and why), ``missing`` (the result files not there);
    * design: ``model``, ``task``, ``channel`` (context, weights or both), ``seed``,
      ``split_seed``, ``signal`` (the filtered arm's),
      ``sizes`` (the manifest's design sizes), ``pools`` (items per pool);
    * Exp 1: ``eps0``, ``eps0_ci``, ``signals`` ({signal: auroc, auroc_ci, tpr, fpr, threshold,
      bayes_pass});
    * Exp 2: ``a``, ``a_ci``, ``lam``, ``lam_ci``, ``eps_star``, ``eps_star_ci``,
      ``exp2_p_value``;
    * Exp 3: ``last_round``; ``contrasts`` ({name as in the JSON, e.g. "filtered-unfiltered":
      round, predicted, observed, observed_ci (query cluster bootstrap), sd_total, z, inside},
      all at the last round); ``joint`` (Q, dof, effective_dof, p_value); ``coverage``;
      ``calibration_slope``, ``calibration_slope_ci``; ``exp3_passed``;
    * ``criteria``: {name: experiment, value, passed}: Exp 1's Bayes check of the filtered arm's
      signal ("exp1_bayes", value the observed w), Exp 2's linear fit ("exp2_linear_fit", value
      its p), then the criteria written into the prediction, as the comparison evaluated them
      (e.g. "joint_contrasts", "each_contrast");
    * pre-registration: ``prediction_sha256``, ``registered_at``, ``first_exp3_record_at`` and
      its ``first_exp3_record_source``, ``registered_before_exp3`` (None when either time is
      unknown), ``exp3_records``, ``exp3_records_carry_hash`` (every Exp 3 record and record
      file carries the registered hash; None without records or registration).

    Raises QuasirlValueError naming the folder when it holds none of a run's files
    (``manifest.json`` or an experiment's JSON), or naming a file that is not JSON.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise QuasirlValueError(f"{str(folder)!r} is not a folder (expected a run folder of "
                                "`quasirl lm validate`)")
    if not any((folder / f).is_file() for f in _RESULT_FILES):
        raise QuasirlValueError(f"{str(folder)!r} is not a validation run: it holds none of "
                                f"{', '.join(_RESULT_FILES)}")
    manifest = _load(folder / MANIFEST)
    exp1 = _load(folder / _io.EXP1_JSON)
    exp2 = _load(folder / _io.EXP2_JSON)
    exp3 = _load(folder / _io.EXP3_JSON)
    pred_path = folder / PREDICTION
    registration = _load(pred_path)
    design = (manifest or {}).get("design", {})
    header = next((d for d in (exp1, exp2, exp3) if d is not None), {})
    row: dict = {"folder": str(folder), "run": folder.name,
                 "model": design.get("lm", header.get("lm")),
                 "task": design.get("task", header.get("task")),
                 "channel": design.get("channel", "context"),
                 "seed": design.get("seed"), "split_seed": design.get("split_seed"),
                 "signal": design.get("signal", ((exp3 or {}).get("prediction") or {})
                                      .get("signal")),
                 "sizes": {k: design[k] for k in DESIGN_SIZES if k in design},
                 "pools": {n: p.get("n") for n, p in (manifest or {}).get("pools", {}).items()}}
    notes: list[str] = []

    # Exp 1
    signals = (exp1 or {}).get("signals", {})
    row["eps0"] = None if exp1 is None else exp1.get("eps")
    row["eps0_ci"] = None if exp1 is None else _pair(exp1.get("eps_ci"))
    row["signals"] = {s: {"auroc": d.get("auroc"), "auroc_ci": _pair(d.get("auroc_ci")),
                          "tpr": d.get("tpr"), "fpr": d.get("fpr"),
                          "threshold": d.get("threshold"),
                          "bayes_pass": (d.get("bayes") or {}).get("pass")}
                      for s, d in signals.items()}

    # Exp 2
    e2 = exp2 or {}
    for key in ("a", "lam", "eps_star"):
        row[key] = e2.get(key)
        row[f"{key}_ci"] = _pair(e2.get(f"{key}_ci"))
    row["exp2_p_value"] = e2.get("p_value")

    # Exp 3
    e3 = exp3 or {}
    pc = (e3.get("prediction") or {}).get("contrasts", {})
    row["contrasts"] = {}
    for name, c in e3.get("contrasts", {}).items():
        rounds = (pc.get(name) or {}).get("rounds")
        ci = c.get("cluster_ci") or ((), ())
        row["contrasts"][name] = {
            "round": _last(rounds) if rounds else len(c.get("observed", ())),
            "predicted": _last(c.get("predicted")), "observed": _last(c.get("observed")),
            "observed_ci": (_last(ci[0]), _last(ci[1])), "sd_total": _last(c.get("sd_total")),
            "z": _last(c.get("z")), "inside": _last(c.get("inside"))}
    row["last_round"] = (e3.get("prediction") or {}).get("rounds")
    row["joint"] = None if exp3 is None else {
        "Q": e3.get("chi2"), "dof": e3.get("dof"), "effective_dof": e3.get("effective_dof"),
        "p_value": e3.get("p_value")}
    row["coverage"] = e3.get("coverage")
    row["calibration_slope"] = e3.get("calibration_slope")
    row["calibration_slope_ci"] = _pair(e3.get("calibration_slope_ci"))
    row["exp3_passed"] = e3.get("pass")
    if exp3 is not None and "contrasts" not in e3:
        notes.append("Exp 3 results in an older format (no paired contrasts or criteria)")

    # criteria
    criteria: dict = {}
    sig = row["signal"]
    if exp1 is not None and sig in signals:
        b = signals[sig].get("bayes") or {}
        criteria["exp1_bayes"] = {"experiment": "exp1", "signal": sig,
                                  "value": b.get("w_observed"), "passed": b.get("pass")}
    if exp2 is not None:
        criteria["exp2_linear_fit"] = {"experiment": "exp2", "value": e2.get("p_value"),
                                       "passed": e2.get("pass")}
    for cr in e3.get("criteria", ()):
        criteria[cr["name"]] = {"experiment": "exp3", "value": cr.get("value"),
                                "passed": cr.get("pass")}
    row["criteria"] = criteria

    # pre-registration
    n_rec, hashes, rec_time, rec_files = _exp3_records(folder)
    reg_hash = reg_at = None
    if registration is not None:
        if not {"content", "sha256", "registered_at"} <= set(registration):
            raise QuasirlValueError(f"{pred_path} is not a pre-registered prediction")
        reg_hash, reg_at = registration["sha256"], registration["registered_at"]
        if sha256_json(registration["content"]) != reg_hash:
            notes.append(f"{PREDICTION} does not match its sha256 (changed after registration)")
    elif (manifest or {}).get("prediction"):
        reg_hash = manifest["prediction"].get("sha256")
        reg_at = manifest["prediction"].get("registered_at")
    stages = (manifest or {}).get("stages", {})
    first, source = rec_time, "records"
    if first is None and "exp3_first_record_written" in stages:
        first, source = stages["exp3_first_record_written"], "manifest exp3_first_record_written"
    if first is None and n_rec and "exp3_sampling_started" in stages:
        first, source = stages["exp3_sampling_started"], "manifest exp3_sampling_started"
    row["prediction_sha256"] = reg_hash
    row["registered_at"] = reg_at
    row["first_exp3_record_at"] = first
    row["first_exp3_record_source"] = None if first is None else source
    row["registered_before_exp3"] = (None if reg_at is None or first is None
                                     else _time(reg_at) < _time(first))
    row["exp3_records"] = n_rec
    row["exp3_records_carry_hash"] = (None if not rec_files or reg_hash is None
                                      else hashes == {reg_hash})

    # status
    missing = [f for f in (MANIFEST, _io.EXP1_JSON, _io.EXP2_JSON, PREDICTION, _io.EXP3_JSON)
               if not (folder / f).is_file()]
    for name, f in (("Exp 1", _io.EXP1_JSON), ("Exp 2", _io.EXP2_JSON),
                    ("Exp 3", _io.EXP3_JSON)):
        if f in missing:
            so_far = (f": {n_rec} records in {len(rec_files)} arm files so far"
                      if name == "Exp 3" and rec_files else "")
            later = "" if name == "Exp 3" else "; later stages not run"
            notes.insert(0, f"{name} not finished (no {f}{so_far}){later}")
            break
    if MANIFEST in missing:
        notes.append(f"no {MANIFEST} (seed, sizes and stage times unknown)")
    if PREDICTION in missing and (rec_files or exp3 is not None):
        notes.append(f"no {PREDICTION}: " + ("the manifest names a registration that the "
                                             "folder no longer holds" if reg_hash else
                                             "the prediction was not pre-registered"))
    row["missing"] = missing
    row["status"] = "; ".join(notes) if notes else "complete"
    return row


# ----------------------------------------------------------------------------------------------
# markdown
# ----------------------------------------------------------------------------------------------


def _f(x) -> str:
    """A number to 2 decimals; n/a for a missing or non-finite one."""
    if x is None or isinstance(x, bool) or not math.isfinite(x):
        return "n/a"
    return f"{x:.2f}"


def _p(x) -> str:
    """A p-value to 2 significant digits."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.2g}"


def _g(x) -> str:
    """A criterion's value: whole numbers as such, others to 2 significant digits."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return str(int(x)) if float(x).is_integer() else f"{x:.2g}"


def _ci(x, ci) -> str:
    if x is None:
        return "n/a"
    return _f(x) if ci is None else f"{_f(x)} [{_f(ci[0])}, {_f(ci[1])}]"


def _model(row) -> str:
    """The model, and the adaptation channel where it is not the context."""
    ch = row.get("channel", "context")
    return _s(row["model"]) + ("" if ch == "context" else f" ({ch})")


def _s(x) -> str:
    return "n/a" if x is None else str(x)


def _yes(v, yes="yes", no="**no**") -> str:
    return {True: yes, False: no, None: "n/a"}[v]


def _verdict(v) -> str:
    return _yes(v, "pass", "**FAIL**")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def _ordered(lists) -> list[str]:
    """Names in order of first appearance across the runs."""
    seen: dict[str, None] = {}
    for names in lists:
        seen.update(dict.fromkeys(names))
    return list(seen)


def _labels(rows) -> list[str]:
    """Each run's folder name, or its path where names repeat."""
    names = [r["run"] for r in rows]
    return [r["run"] if names.count(r["run"]) == 1 else r["folder"] for r in rows]


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _passed(values) -> str:
    """'k/n': runs that passed, of those with a verdict."""
    vs = [v for v in values if v is not None]
    return f"{sum(vs)}/{len(vs)}" if vs else "-"


def stouffer(zs) -> float | None:
    """Stouffer's combined z of independent z-scores, sum(z) / sqrt(n) (None if any is
    missing or there are none)."""
    zs = list(zs)
    if not zs or any(z is None or not math.isfinite(z) for z in zs):
        return None
    return sum(zs) / math.sqrt(len(zs))


def summary_markdown(rows) -> str:
    """Markdown tables of :func:`summarize_run` rows: (a) the ingredients per run, (b) the Exp 3
    contrasts at the last round, predicted against observed, with the joint test, (c) every
    pre-stated criterion and the registration order; then per (model, task) across seeds the
    mean predicted and observed contrasts and how many runs passed each criterion."""
    rows = list(rows)
    labels = _labels(rows)
    sigs = _ordered(r["signals"] for r in rows)
    names = _ordered(r["contrasts"] for r in rows)
    crits = _ordered(r["criteria"] for r in rows)
    out = [f"# Validation runs: {len(rows)}", ""]

    out += ["## Runs and ingredients (Exp 1, Exp 2)", "",
            "eps0: Exp 1 error rate [95% cluster bootstrap]; AUROC per fitness signal; the "
            "transfer line g(b) = a + lambda b and its fixed point eps* = a / (1 - lambda).", ""]
    header = (["run", "model", "task", "seed", "split seed", "status", "eps0 [95%]"]
              + [f"AUROC {s} [95%]" for s in sigs]
              + ["a [95%]", "lambda [95%]", "eps* [95%]"])
    body = []
    for lab, r in zip(labels, rows, strict=True):
        sd = r["signals"]
        body.append([lab, _model(r), _s(r["task"]), _s(r["seed"]), _s(r["split_seed"]),
                     r["status"], _ci(r["eps0"], r["eps0_ci"])]
                    + [_ci(sd[s]["auroc"], sd[s]["auroc_ci"]) if s in sd else "-" for s in sigs]
                    + [_ci(r["a"], r["a_ci"]), _ci(r["lam"], r["lam_ci"]),
                       _ci(r["eps_star"], r["eps_star_ci"])])
    out += _table(header, body) + [""]

    out += ["## Exp 3 contrasts at the last round: predicted against observed", "",
            "observed with its 95% query cluster bootstrap interval; z = (observed - predicted) "
            "/ sd_total; inside: within the Bonferroni interval; joint test: Q on its dof "
            "(effective dof) and p, over every contrast and round.", ""]
    header = ["run", "contrast", "round", "predicted", "observed [95%]", "z", "inside",
              "joint Q / dof (eff.)", "joint p", "calibration slope [95%]"]
    body = []
    for lab, r in zip(labels, rows, strict=True):
        j = r["joint"]
        joint = ["n/a", "n/a"] if j is None else [
            f"{_f(j['Q'])} / {j['dof']} ({_f(j['effective_dof'])})", _p(j["p_value"])]
        slope = _ci(r["calibration_slope"], r["calibration_slope_ci"])
        if not r["contrasts"]:
            body.append([lab, "-", "-", "-", "-", "-", "-", *joint, slope])
        for i, (name, c) in enumerate(r["contrasts"].items()):
            body.append([lab if i == 0 else "", name, str(c["round"]), _f(c["predicted"]),
                         _ci(c["observed"], c["observed_ci"]), _f(c["z"]), _yes(c["inside"])]
                        + (joint + [slope] if i == 0 else ["", "", ""]))
    out += _table(header, body) + [""]

    out += ["## Pre-stated criteria", "",
            "exp1_bayes: Exp 1 one-step Bayes check of the filtered arm's signal (value: "
            "observed w); exp2_linear_fit: Exp 2 chi-square fit of the line (value: p); the "
            "others are written into the pre-registered prediction (joint_contrasts value: p; "
            "each_contrast value: points inside). Registered before Exp 3: prediction.json's "
            "time before the first Exp 3 record's; hash: every Exp 3 record carries it.", ""]
    header = (["run"] + crits
              + ["Exp 3 overall", "registered at", "first Exp 3 record", "registered before Exp 3",
                 "records carry hash"])
    body = []
    for lab, r in zip(labels, rows, strict=True):
        cr = r["criteria"]
        body.append([lab]
                    + [f"{_verdict(cr[c]['passed'])} ({_g(cr[c]['value'])})" if c in cr else "-"
                       for c in crits]
                    + [_verdict(r["exp3_passed"]), _s(r["registered_at"]),
                       _s(r["first_exp3_record_at"]),
                       _yes(r["registered_before_exp3"]), _yes(r["exp3_records_carry_hash"])])
    out += _table(header, body) + [""]

    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(_model(r), _s(r["task"]))].append(r)
    out += ["## Per model and task, across seeds", "",
            "Mean predicted and mean observed contrast at the last round over the runs that "
            "have it; Stouffer's z = sum(z) / sqrt(runs) of the runs' last-round z-scores "
            "(the runs resample queries and samples independently) and its two-sided p.", ""]
    header = ["model", "task", "contrast", "runs", "mean predicted", "mean observed",
              "Stouffer z", "p"]
    body = []
    for (model, task), rs in groups.items():
        for name in names:
            cs = [r["contrasts"][name] for r in rs if name in r["contrasts"]]
            if cs:
                z = stouffer([c["z"] for c in cs])
                body.append([model, task, name, str(len(cs)),
                             _f(_mean(c["predicted"] for c in cs)),
                             _f(_mean(c["observed"] for c in cs)), _f(z),
                             _p(None if z is None else math.erfc(abs(z) / math.sqrt(2)))])
    out += _table(header, body) + [""]
    out += ["Runs that passed each criterion, of the runs that evaluated it.", ""]
    header = ["model", "task", "runs", "seeds"] + crits + ["Exp 3 overall",
                                                           "registered before Exp 3"]
    body = []
    for (model, task), rs in groups.items():
        body.append([model, task, str(len(rs)),
                     ", ".join(_s(r["seed"]) for r in rs)]
                    + [_passed(r["criteria"][c]["passed"] if c in r["criteria"] else None
                               for r in rs) for c in crits]
                    + [_passed(r["exp3_passed"] for r in rs),
                       _passed(r["registered_before_exp3"] for r in rs)])
    out += _table(header, body)
    return "\n".join(out) + "\n"
