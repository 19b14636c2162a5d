"""The validation design (issue 17): disjoint query pools drawn by a seed, the run manifest, the
pre-registered prediction and its hash on every Exp 3 record; a task CSV's answer column."""

import hashlib
import json
from datetime import datetime
from itertools import combinations

import numpy as np
import pytest

import quasirl
import quasirl.lm as qlm
from quasirl._validate import QuasirlValueError
from quasirl.lm import validate as V
from quasirl.lm._records import RecordLog, stamped

SMALL = dict(signals=("gold", "likelihood"), exp1_queries=10, exp1_samples=2, exp2_queries=4,
             exp2_samples=1, rounds=2, queries_per_round=4, samples_per_query=2, n_boot=100)


@pytest.fixture(scope="module")
def task():
    return qlm.capitals()


def _lm(task):
    return qlm.SyntheticLM(task, eps0=0.4, tpr=0.8, fpr=0.2, lam=0.5)


def _t(s):
    return datetime.fromisoformat(s)


def _arm_files(folder):
    return sorted(folder.glob("exp3_*.jsonl"))


def _canonical_sha256(obj):
    """Independent oracle of the content hash: hashlib over the canonical JSON text."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------------------------------
# pools
# ------------------------------------------------------------------------------------------


def test_pools_are_disjoint_sized_and_resampled_by_the_split_seed(task):
    kw = dict(n_demos=8, exp1_queries=40, exp2_queries=24, exp3_queries=120)
    a, a2, b = (V.draw_pools(task, split_seed=s, **kw) for s in (1, 1, 2))
    assert a == a2  # the seed fixes the pools
    names = ("demos", "exp1_threshold", "exp1_rate", "exp2", "exp3")
    sizes = {"demos": 8, "exp1_threshold": 20, "exp1_rate": 20, "exp2": 24, "exp3": 120}
    all_ids = {it.id for it in task.items}
    for p in (a, b):
        for n in names:  # brute force: every pair of pools, from the ids
            assert len(getattr(p, n)) == sizes[n] == len(set(getattr(p, n)))
            assert set(getattr(p, n)) <= all_ids
        for x, y in combinations(names, 2):
            assert not set(getattr(p, x)) & set(getattr(p, y)), (x, y)
        assert not any(p.overlap().values()) and p.to_dict()["disjoint"] is True
    # another seed resamples every pool (not just a shift of the same order)
    for n in names[1:]:
        assert set(getattr(a, n)) != set(getattr(b, n))
    assert len(set(a.exp3) & set(b.exp3)) < 100
    # Exp 3's blocks are the pool in order (round r answers exp3[r q : (r + 1) q])
    assert a.to_dict()["pools"]["exp3"]["ids"] == list(a.exp3)


def test_too_few_items_names_the_count_needed(task):
    with pytest.raises(QuasirlValueError, match=r"has 195 items, but disjoint pools need .*"
                                                r"= 8 \+ 100 \+ 50 \+ 120 = 278"):
        V.draw_pools(task, n_demos=8, exp1_queries=100, exp2_queries=50, exp3_queries=120,
                     split_seed=0)
    with pytest.raises(QuasirlValueError, match="278"):
        V.validate(_lm(task), task, "unused", exp1_queries=100, exp2_queries=50)
    with pytest.raises(QuasirlValueError, match="split_seed must be an integer"):
        V.draw_pools(task, n_demos=8, exp1_queries=4, exp2_queries=2, exp3_queries=2,
                     split_seed=1.5)


def test_with_split_fixes_the_query_pool(task):
    t = task.with_split(["france", "peru"], ["chile", "japan"])
    demos, queries = t.split(2, seed=123)
    assert [d.id for d in demos] == ["france", "peru"] and [q.id for q in queries] == [
        "chile", "japan"]
    assert t.fingerprint() != task.fingerprint() and t.items == task.items
    with pytest.raises(QuasirlValueError, match="n_demos must be 2"):
        t.split(3)
    with pytest.raises(QuasirlValueError, match="not in task"):
        task.with_split(["france"], ["atlantis"])
    with pytest.raises(QuasirlValueError, match="distinct items"):
        task.with_split(["france"], ["france"])


# ------------------------------------------------------------------------------------------
# Exp 1's halves: the pools' threshold half chooses the threshold, the rate half measures
# ------------------------------------------------------------------------------------------


def _youden_brute_force(f, correct):
    """The threshold maximising TPR - FPR of "accept f >= t" over every observed value (ties:
    the highest), by enumeration."""
    best, best_t = -np.inf, None
    for t in sorted(set(f.tolist()), reverse=True):
        acc = f >= t
        j = acc[correct].mean() - acc[~correct].mean()
        if j > best + 1e-15:
            best, best_t = j, t
    return best_t


@pytest.fixture(scope="module")
def exp1_pooled(task):
    pools = V.draw_pools(task, n_demos=8, exp1_queries=60, exp2_queries=0, exp3_queries=0,
                         split_seed=3)
    lm = qlm.SyntheticLM(task, eps0=0.4, tpr=0.8, fpr=0.2, lam=0.5, seed=3,
                         difficulty_sd=1.0)
    recs = V.collect_calibration(lm, task, signals=("likelihood",), samples_per_query=2,
                                 split_seed=3, pools=pools, seed=3)
    return pools, recs


def test_exp1_analysis_splits_by_the_records_halves(exp1_pooled):
    pools, recs = exp1_pooled
    f = np.array([r["fitness"]["likelihood"] for r in recs])
    correct = np.array([r["correct"] for r in recs])
    thr = np.array([r["qid"] in pools.exp1_threshold for r in recs])
    assert thr.sum() == 60 == (~thr).sum()  # 30 queries x 2 samples in each half
    np.testing.assert_array_equal(thr, [r["half"] == "threshold" for r in recs])
    for split, seed in ((0.5, 0), (0.3, 9)):  # neither moves the pools' halves
        s = V.analyze_calibration(recs, n_boot=50, split=split, seed=seed).signals[
            "likelihood"]
        assert s.threshold == _youden_brute_force(f[thr], correct[thr])
        acc = f[~thr] >= s.threshold
        np.testing.assert_allclose(s.tpr, acc[correct[~thr]].mean())
        np.testing.assert_allclose(s.fpr, acc[~correct[~thr]].mean())
        np.testing.assert_allclose(s.accept_rate_heldout, acc.mean())
    # records without the field (drawn before the pools): the former random split by seed
    from quasirl.lm.validate._statistics import _split_halves

    old = [{k: v for k, v in r.items() if k != "half"} for r in recs]
    qids = np.array([r["qid"] for r in recs])
    for seed in (0, 9):
        mask = _split_halves(qids, 0.5, seed)
        assert not np.array_equal(mask, thr)
        s = V.analyze_calibration(old, n_boot=50, seed=seed).signals["likelihood"]
        assert s.threshold == _youden_brute_force(f[mask], correct[mask])
        acc = f[~mask] >= s.threshold
        np.testing.assert_allclose(s.tpr, acc[correct[~mask]].mean())


def test_exp1_records_with_bad_halves_are_refused(exp1_pooled):
    _, recs = exp1_pooled
    bad = [dict(r) for r in recs]
    bad[3]["half"] = "calibration"
    with pytest.raises(QuasirlValueError, match=r"records\[3\]\['half'\] must be 'threshold' "
                                                r"or 'rate'"):
        V.analyze_calibration(bad, n_boot=10)
    mixed = [dict(r) for r in recs]
    q = mixed[0]["qid"]
    assert mixed[1]["qid"] == q  # the two samples of the first query
    mixed[1]["half"] = "rate" if mixed[0]["half"] == "threshold" else "threshold"
    with pytest.raises(QuasirlValueError, match=f"query '{q}' in both Exp 1 halves"):
        V.analyze_calibration(mixed, n_boot=10)
    one = [r for r in recs if r["half"] == "rate"]
    with pytest.raises(QuasirlValueError, match="both Exp 1 halves, got only 'rate'"):
        V.analyze_calibration(one, n_boot=10)


# ------------------------------------------------------------------------------------------
# a validation run: manifest, pre-registration, hash on every Exp 3 record
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(task, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    res = V.validate(_lm(task), task, out, seed=1, **SMALL)
    return out, res


def test_manifest_lists_disjoint_pools_that_the_records_used(run, task):
    out, res = run
    m = V.read_manifest(out)
    pools = {n: p["ids"] for n, p in m["pools"].items()}
    for x, y in combinations(pools, 2):
        assert not set(pools[x]) & set(pools[y])
    assert m["disjoint"] is True and not any(m["overlap"].values())
    assert {n: p["n"] for n, p in m["pools"].items()} == {
        "demos": 8, "exp1_threshold": 5, "exp1_rate": 5, "exp2": 4, "exp3": 12}
    for n, p in m["pools"].items():
        assert p["sha256"] == _canonical_sha256(p["ids"]), n
    assert m["design"]["seed"] == m["design"]["split_seed"] == m["split_seed"] == 1
    assert m["design"]["lm"] == res.trajectory.runs["filtered"].config["lm"]
    assert m["software"]["quasirl"] == quasirl.__version__
    # the records used exactly these pools
    _, r1 = qlm.read_records(out / "exp1_calibration.jsonl")
    assert {r["qid"] for r in r1 if r["half"] == "threshold"} == set(pools["exp1_threshold"])
    assert {r["qid"] for r in r1 if r["half"] == "rate"} == set(pools["exp1_rate"])
    _, r2 = qlm.read_records(out / "exp2_transfer.jsonl")
    assert {r["qid"] for r in r2} == set(pools["exp2"])
    q = 4
    for f in _arm_files(out):
        _, r3 = qlm.read_records(f)
        assert {r["qid"] for r in r3} == set(pools["exp3"])
        for r in r3:  # paired: every arm answers block r of the pool in round r
            assert r["qid"] in pools["exp3"][r["round"] * q:(r["round"] + 1) * q]
        for r in r3:
            assert not {c.split(":")[1] for c in r["context"] if c.startswith("demo:")} - set(
                pools["demos"])


def test_prediction_is_registered_before_exp3_and_every_record_carries_its_hash(run):
    out, res = run
    reg = V.read_prediction(out)
    assert reg["sha256"] == _canonical_sha256(reg["content"])
    assert (out / "prediction.sha256").read_text().split()[0] == reg["sha256"]
    stored = json.loads((out / "exp3_prediction.json").read_text())
    assert reg["content"]["prediction"] == {k: v for k, v in stored.items()
                                            if k not in ("lm", "task")}
    assert reg["content"]["prediction"]["rounds"] == res.trajectory.prediction.rounds == 2
    m = V.read_manifest(out)
    assert m["prediction"] == {"sha256": reg["sha256"], "registered_at": reg["registered_at"]}
    st = m["stages"]
    assert _t(st["exp2_done"]) < _t(reg["registered_at"]) < _t(st["exp3_sampling_started"]) \
        < _t(st["exp3_first_record_written"]) <= _t(st["exp3_done"])
    files = _arm_files(out)
    assert len(files) == 4
    for f in files:
        meta, recs = qlm.read_records(f)
        assert meta["prediction_sha256"] == reg["sha256"]
        assert recs and all(r["prediction_sha256"] == reg["sha256"] for r in recs)
    # Exp 1 and Exp 2 records were drawn before any prediction existed: no hash there
    for f in ("exp1_calibration.jsonl", "exp2_transfer.jsonl"):
        meta, recs = qlm.read_records(out / f)
        assert "prediction_sha256" not in meta and "prediction_sha256" not in recs[0]


def test_rerun_resumes_an_identical_prediction_and_refuses_a_different_one(run, task,
                                                                           tmp_path):
    out, _ = run
    for f in out.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    before = (tmp_path / "prediction.json").read_bytes()
    V.validate(_lm(task), task, tmp_path, seed=1, **SMALL)  # identical: resumes
    assert (tmp_path / "prediction.json").read_bytes() == before
    # a different prediction (consistently hashed) is never overwritten
    reg = json.loads(before)
    reg["content"]["prediction"]["rounds"] = 99
    reg["sha256"] = _canonical_sha256(reg["content"])
    (tmp_path / "prediction.json").write_text(json.dumps(reg))
    with pytest.raises(QuasirlValueError, match="pre-registers a different prediction"):
        V.validate(_lm(task), task, tmp_path, seed=1, **SMALL)
    # an edited file no longer matches its hash
    reg["content"]["prediction"]["rounds"] = 98
    (tmp_path / "prediction.json").write_text(json.dumps(reg))
    with pytest.raises(QuasirlValueError, match="changed after it was registered"):
        V.read_prediction(tmp_path)
    # other pools (another seed) into the same folder: refused before anything is sampled
    with pytest.raises(QuasirlValueError, match="different demos pool"):
        V.validate(_lm(task), task, tmp_path, seed=2, **SMALL)


def test_exp3_records_without_a_registration_are_refused(tmp_path):
    (tmp_path / "exp3_filtered.jsonl").write_text("")
    with pytest.raises(QuasirlValueError, match="no pre-registered prediction"):
        V.register_prediction(tmp_path, {"x": 1})
    m = {"stages": {"exp3_sampling_started": "2026-01-01T00:00:00+00:00"},
         "prediction": {"registered_at": "2026-01-01T00:00:01+00:00"}}
    from quasirl.lm.validate._design import check_order

    with pytest.raises(QuasirlValueError, match="not before Exp 3 sampling started"):
        check_order(m)


class _Killed(Exception):
    pass


class _DiesInExp3:
    """SyntheticLM that dies after ``calls`` generate calls once Exp 3 has started."""

    def __init__(self, lm, folder, calls):
        self.lm, self.folder, self.calls = lm, folder, calls
        self.name = lm.name

    def generate(self, *a, **kw):
        if (self.folder / "prediction.json").exists():
            self.calls -= 1
            if self.calls < 0:
                raise _Killed
        return self.lm.generate(*a, **kw)

    def __getattr__(self, name):
        return getattr(self.lm, name)


def test_killed_run_resumes_with_the_same_prediction_and_records(run, task, tmp_path):
    out, _ = run
    dying = _DiesInExp3(_lm(task), tmp_path, calls=5)
    with pytest.raises(_Killed):
        V.validate(dying, task, tmp_path, seed=1, **SMALL)
    reg = V.read_prediction(tmp_path)
    before = (tmp_path / "prediction.json").read_bytes()
    assert _arm_files(tmp_path)  # some Exp 3 records were written
    V.validate(_lm(task), task, tmp_path, seed=1, **SMALL)
    assert (tmp_path / "prediction.json").read_bytes() == before
    assert reg["sha256"] == V.read_prediction(out)["sha256"]  # = the uninterrupted run's
    m = V.read_manifest(tmp_path)
    assert len(m["runs"]) == 2 and m["prediction"]["registered_at"] == reg["registered_at"]
    assert _t(reg["registered_at"]) < _t(m["stages"]["exp3_sampling_started"])
    for f in _arm_files(out):
        assert qlm.read_records(tmp_path / f.name) == qlm.read_records(f)


def test_a_stamp_is_part_of_the_record_file_configuration(tmp_path):
    path = tmp_path / "r.jsonl"
    with stamped(prediction_sha256="a" * 64), RecordLog(path, {"x": 1}, ("i",)) as log:
        log.append({"i": 0})
        with pytest.raises(QuasirlValueError, match="differ from the record file's stamp"):
            log.append({"i": 1, "prediction_sha256": "b"})
    meta, recs = qlm.read_records(path)
    assert meta == {"x": 1, "prediction_sha256": "a" * 64}
    assert recs == [{"i": 0, "prediction_sha256": "a" * 64}]
    with stamped(prediction_sha256="b" * 64), \
            pytest.raises(QuasirlValueError, match="differs in prediction_sha256"):
        RecordLog(path, {"x": 1}, ("i",))
    with pytest.raises(QuasirlValueError, match="differs in prediction_sha256"):
        RecordLog(path, {"x": 1}, ("i",))  # no stamp: not the same run either


# ------------------------------------------------------------------------------------------
# command line: the acceptance, on the synthetic model
# ------------------------------------------------------------------------------------------


def test_cli_validate_seed_writes_disjoint_pools_and_an_earlier_prediction(tmp_path):
    from quasirl.cli import main

    args = ["lm", "validate", "--model", "synthetic", "--task", "capitals", "--signals",
            "likelihood,gold", "--exp1-queries", "6", "--exp1-samples", "1",
            "--exp2-queries", "2", "--exp2-samples", "1", "--rounds", "1", "--queries", "3",
            "--samples", "1", "--n-boot", "50"]
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert main([*args, "--seed", "1", "--out", str(a)]) == 0
    assert main([*args, "--seed", "2", "--out", str(b)]) == 0
    assert main([*args, "--seed", "2", "--split-seed", "1", "--out", str(c)]) == 0
    ma, mb, mc = (V.read_manifest(x) for x in (a, b, c))
    for m in (ma, mb, mc):
        assert m["disjoint"] is True
        ids = [set(p["ids"]) for p in m["pools"].values()]
        assert sum(map(len, ids)) == len(set().union(*ids)) == 8 + 6 + 2 + 6
        reg = m["prediction"]
        assert _t(reg["registered_at"]) < _t(m["stages"]["exp3_sampling_started"]) \
            < _t(m["stages"]["exp3_first_record_written"])
    assert ma["pools"]["exp3"]["ids"] != mb["pools"]["exp3"]["ids"]  # --seed resamples
    assert ma["pools"] == mc["pools"] and mc["design"]["seed"] == 2  # --split-seed fixes them
    assert main([*args, "--seed", "1", "--exp1-queries", "3", "--out", str(a)]) == 2


# ------------------------------------------------------------------------------------------
# task files
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["answer", "answers"])
def test_task_csv_answer_column(tmp_path, column):
    f = tmp_path / "t.csv"
    f.write_text(f"query,{column}\nSwitzerland,Bern|Berne\nFrance,Paris\n", encoding="utf-8")
    t = qlm.Task.from_file(f)
    assert [i.answers for i in t.items] == [("Bern", "Berne"), ("Paris",)]
    assert t.check(t.items[0], "Berne") and not t.check(t.items[1], "Lyon")
    np.testing.assert_array_equal([t.check(t.items[0], a) for a in ("Bern", "Zurich")],
                                  [True, False])


def test_task_csv_with_both_or_no_answer_column_is_refused(tmp_path):
    for header in ("query,answer,answers\nx,y,z\n", "query,reply\nx,y\n"):
        f = tmp_path / "t.csv"
        f.write_text(header)
        with pytest.raises(QuasirlValueError, match="one answer column, 'answers' or 'answer'"):
            qlm.Task.from_file(f)
