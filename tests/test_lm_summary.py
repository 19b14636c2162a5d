"""The summary across validation runs (issue 17, item 5): every number of a row is the one in
the run's JSON (read here independently), the markdown lists each run and criterion, an
unfinished run gives a status row, a folder that is not a run is refused naming it."""

import json
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

import quasirl.lm as qlm
from quasirl._validate import QuasirlValueError
from quasirl.lm import validate as V

SMALL = dict(exp1_queries=10, exp1_samples=2, exp2_queries=4, exp2_samples=1, rounds=2,
             queries_per_round=4, samples_per_query=2, n_boot=100)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two synthetic runs (seeds 1 and 2) of the same model and task."""
    task = qlm.capitals()
    root = tmp_path_factory.mktemp("runs")
    out = []
    for seed in (1, 2):
        folder = root / f"synthetic-capitals-seed{seed}"
        V.validate(qlm.SyntheticLM(task, eps0=0.4, tpr=0.8, fpr=0.2, lam=0.5), task, folder,
                   seed=seed, **SMALL)
        out.append(folder)
    return out


def _json(folder, name):
    return json.loads((folder / name).read_text())


def _lines(path):
    return len(path.read_text().splitlines()) - 1  # the first line is the configuration


def test_every_number_of_a_row_is_the_one_in_the_run_json(runs):
    for folder in runs:
        row = V.summarize_run(folder)
        man = _json(folder, "manifest.json")
        e1 = _json(folder, "exp1_calibration.json")
        e2 = _json(folder, "exp2_transfer.json")
        e3 = _json(folder, "exp3_trajectory.json")
        reg = _json(folder, "prediction.json")
        d = man["design"]
        assert row["status"] == "complete" and row["missing"] == []
        assert (row["model"], row["task"], row["seed"], row["split_seed"], row["signal"]) == \
            (d["lm"], d["task"], d["seed"], d["split_seed"], d["signal"])
        assert row["sizes"]["exp1_queries"] == d["exp1_queries"] == SMALL["exp1_queries"]
        assert row["sizes"]["rounds"] == d["rounds"]
        assert row["pools"] == {n: p["n"] for n, p in man["pools"].items()}
        # Exp 1
        assert row["eps0"] == e1["eps"] and list(row["eps0_ci"]) == e1["eps_ci"]
        assert set(row["signals"]) == set(e1["signals"]) == set(d["signals"])
        for s, js in e1["signals"].items():
            got = row["signals"][s]
            assert got["auroc"] == js["auroc"] and list(got["auroc_ci"]) == js["auroc_ci"]
            assert (got["tpr"], got["fpr"], got["threshold"]) == \
                (js["tpr"], js["fpr"], js["threshold"])
            assert got["bayes_pass"] == js["bayes"]["pass"]
        # Exp 2
        for k in ("a", "lam", "eps_star"):
            assert row[k] == e2[k] and list(row[f"{k}_ci"]) == e2[f"{k}_ci"]
        assert row["exp2_p_value"] == e2["p_value"]
        # Exp 3: each contrast at the last round
        assert set(row["contrasts"]) == set(e3["contrasts"]) == \
            {"filtered-unfiltered", "oracle-unfiltered", "filtered-random"}
        assert row["last_round"] == d["rounds"]
        for name, jc in e3["contrasts"].items():
            c = row["contrasts"][name]
            assert c["round"] == d["rounds"] == e3["prediction"]["contrasts"][name]["rounds"][-1]
            assert c["predicted"] == jc["predicted"][-1]
            assert c["observed"] == jc["observed"][-1]
            assert list(c["observed_ci"]) == [jc["cluster_ci"][0][-1], jc["cluster_ci"][1][-1]]
            assert c["z"] == jc["z"][-1] and c["sd_total"] == jc["sd_total"][-1]
            assert c["inside"] == jc["inside"][-1]
        assert row["joint"] == {"Q": e3["chi2"], "dof": e3["dof"],
                                "effective_dof": e3["effective_dof"], "p_value": e3["p_value"]}
        assert row["calibration_slope"] == e3["calibration_slope"]
        assert list(row["calibration_slope_ci"]) == e3["calibration_slope_ci"]
        assert row["coverage"] == e3["coverage"] and row["exp3_passed"] == e3["pass"]
        # criteria: Exp 1's Bayes check, Exp 2's fit, then the pre-registered ones
        names = [c["name"] for c in e3["criteria"]]
        assert names == [c["name"] for c in reg["content"]["prediction"]["criteria"]]
        assert list(row["criteria"]) == ["exp1_bayes", "exp2_linear_fit", *names]
        for c in e3["criteria"]:
            assert row["criteria"][c["name"]]["value"] == c["value"]
            assert row["criteria"][c["name"]]["passed"] == c["pass"]
        bayes = e1["signals"][d["signal"]]["bayes"]
        assert row["criteria"]["exp1_bayes"]["value"] == bayes["w_observed"]
        assert row["criteria"]["exp1_bayes"]["passed"] == bayes["pass"]
        assert row["criteria"]["exp2_linear_fit"] == {"experiment": "exp2",
                                                      "value": e2["p_value"],
                                                      "passed": e2["pass"]}
        # pre-registration against the first Exp 3 record
        first = man["stages"]["exp3_first_record_written"]
        assert row["registered_at"] == reg["registered_at"] == man["prediction"]["registered_at"]
        assert row["prediction_sha256"] == reg["sha256"]
        assert row["first_exp3_record_at"] == first
        assert row["registered_before_exp3"] is True
        assert datetime.fromisoformat(reg["registered_at"]) < datetime.fromisoformat(first)
        arm_files = sorted(folder.glob("exp3_*.jsonl"))
        assert len(arm_files) == len(d["arms"])
        assert row["exp3_records"] == sum(map(_lines, arm_files)) > 0
        assert row["exp3_records_carry_hash"] is True
        json.dumps(row, allow_nan=False)  # a row is plain JSON


def test_markdown_lists_each_run_contrast_and_criterion(runs):
    rows = [V.summarize_run(f) for f in runs]
    md = V.summary_markdown(rows)
    for r in rows:
        assert r["run"] in md
        assert f"{r['eps0']:.2f} [{r['eps0_ci'][0]:.2f}, {r['eps0_ci'][1]:.2f}]" in md
        assert f"{r['lam']:.2f} [{r['lam_ci'][0]:.2f}, {r['lam_ci'][1]:.2f}]" in md
        assert f"| {r['joint']['p_value']:.2g} |" in md  # p to 2 significant digits
        for name in r["criteria"]:
            assert name in md
    for name in rows[0]["contrasts"]:
        assert f"| {name} |" in md
    for s in rows[0]["signals"]:
        assert f"AUROC {s} [95%]" in md
    assert md.count("\n## ") == 4  # ingredients, contrasts, criteria, across seeds
    # across seeds: one group with both runs; counts of passes over the two runs
    group = next(line for line in md.splitlines() if line.startswith("| synthetic | capitals |")
                 and "| 1, 2 |" in line)
    n_joint = sum(r["criteria"]["joint_contrasts"]["passed"] for r in rows)
    assert f"| {n_joint}/2 |" in group
    name = "filtered-unfiltered"
    mean_obs = sum(r["contrasts"][name]["observed"] for r in rows) / 2
    mean_pred = sum(r["contrasts"][name]["predicted"] for r in rows) / 2
    z = [r["contrasts"][name]["z"] for r in rows]
    zc = (z[0] + z[1]) / np.sqrt(2)
    p = 2 * norm.sf(abs(zc))
    assert f"| {name} | 2 | {mean_pred:.2f} | {mean_obs:.2f} | {zc:.2f} | {p:.2g} |" in md
    assert V.stouffer([1.0, None]) is None and V.stouffer([]) is None


def test_an_unfinished_run_gives_a_status_row(runs, tmp_path):
    done = V.summarize_run(runs[0])
    cut = tmp_path / "cut"
    shutil.copytree(runs[0], cut)
    (cut / "exp3_trajectory.json").unlink()
    mid = V.summarize_run(cut)  # Exp 3 records there, its result not
    assert mid["status"].startswith("Exp 3 not finished (no exp3_trajectory.json")
    assert "records" in mid["status"] and mid["missing"] == ["exp3_trajectory.json"]
    assert mid["contrasts"] == {} and mid["joint"] is None and mid["exp3_passed"] is None
    assert list(mid["criteria"]) == ["exp1_bayes", "exp2_linear_fit"]
    assert mid["eps0"] == done["eps0"] and mid["lam_ci"] == done["lam_ci"]
    assert mid["registered_before_exp3"] is True and mid["exp3_records"] == done["exp3_records"]
    for p in cut.glob("exp3_*.jsonl"):
        p.unlink()
    row = V.summarize_run(cut)
    assert row["status"] == "Exp 3 not finished (no exp3_trajectory.json)"
    assert row["exp3_records"] == 0 and row["first_exp3_record_at"] is not None
    for p in ("exp2_transfer.json", "exp3_prediction.json", "prediction.json"):
        (cut / p).unlink()
    early = V.summarize_run(cut)
    assert early["status"] == ("Exp 2 not finished (no exp2_transfer.json); later stages "
                               "not run")
    assert early["a"] is None and early["eps0"] == done["eps0"]
    md = V.summary_markdown([done, early])
    assert "Exp 2 not finished" in md and early["run"] in md


def test_a_missing_or_changed_registration_shows_in_the_status(runs, tmp_path):
    gone, changed = tmp_path / "gone", tmp_path / "changed"
    shutil.copytree(runs[0], gone)
    shutil.copytree(runs[0], changed)
    (gone / "prediction.json").unlink()
    row = V.summarize_run(gone)
    assert row["status"].startswith("no prediction.json: the manifest names a registration")
    assert row["registered_at"] == _json(runs[0], "manifest.json")["prediction"]["registered_at"]
    reg = _json(changed, "prediction.json")
    reg["content"]["prediction"]["rounds"] += 1
    (changed / "prediction.json").write_text(json.dumps(reg))
    assert "does not match its sha256" in V.summarize_run(changed)["status"]


def test_a_folder_that_is_not_a_run_is_refused_naming_it(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a run")
    for bad in (empty, tmp_path / "missing", empty / "notes.txt"):
        with pytest.raises(QuasirlValueError, match="is not a") as info:
            V.summarize_run(bad)
        assert str(bad) in str(info.value)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(QuasirlValueError, match="is not JSON") as info:
        V.summarize_run(broken)
    assert str(broken / "manifest.json") in str(info.value)


def test_cli_summary_prints_and_writes_the_markdown(runs, tmp_path, capsys):
    from quasirl.cli import main

    out = tmp_path / "sub" / "summary.md"
    capsys.readouterr()
    assert main(["lm", "summary", *map(str, runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text() == V.summary_markdown([V.summarize_run(f) for f in runs])
    bad = tmp_path / "nothing"
    bad.mkdir()
    assert main(["lm", "summary", str(runs[0]), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(bad) in err and "\n" not in err


def test_cli_summary_draws_the_trajectories_per_run(runs, tmp_path, capsys):
    import matplotlib.pyplot as plt

    from quasirl.cli import main
    from quasirl.plots import _lm as plots

    fig_path = tmp_path / "traj.png"
    assert main(["lm", "summary", *map(str, runs), "--figure", str(fig_path)]) == 0
    assert fig_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the figure's data are the runs' stored trajectories: one panel per arm, one line per run
    groups = {"synthetic capitals": {f"context, seed {i + 1}": _json(f, "exp3_trajectory.json")
                                     for i, f in enumerate(runs)}}
    fig = plots.channels_trajectory_figure(groups)
    axes = fig.axes
    arms = list(_json(runs[0], "exp3_trajectory.json")["arms"])
    assert len(axes) == len(arms) == 4
    for ax, arm in zip(axes, ["filtered", "unfiltered", "random", "oracle"], strict=True):
        assert ax.get_title().endswith(arm)
        observed = [c for c in ax.containers]  # one errorbar per run
        assert len(observed) == 2
        for c, (_, tj) in zip(observed, groups["synthetic capitals"].items(), strict=True):
            np.testing.assert_allclose(c.lines[0].get_ydata(), tj["arms"][arm]["observed"])
    plt.close(fig)
    empty = tmp_path / "exp1-only"
    shutil.copytree(runs[0], empty)
    (empty / "exp3_trajectory.json").unlink()
    capsys.readouterr()
    assert main(["lm", "summary", str(empty), "--figure", str(tmp_path / "x.png")]) == 2
    assert "--figure" in capsys.readouterr().err


def test_results_readme_tables_are_the_summary_of_the_stored_runs():
    """results/README.md shows `quasirl lm summary results/*-seed*` as it reads today, so the
    stored records, their JSON and the published tables cannot drift apart."""
    root = Path(__file__).resolve().parents[1] / "results"
    folders = sorted(root.glob("*-seed*"))
    assert len(folders) == 12
    md = V.summary_markdown([V.summarize_run(f) for f in folders])
    tables = ("\n" + md.split("\n", 2)[2]).replace("\n## ", "\n### ")[1:]
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert readme.endswith(tables)
