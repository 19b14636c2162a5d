"""Faults of the LM bridge that must never pass silently (issue #15): bad numbers from a model or
server, hung or absent servers, damaged record files. No network and no real model: a fake
in-process HTTP server, SyntheticLM and small fakes."""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time
from http.server import ThreadingHTTPServer

import numpy as np
import pytest
from fake_http import JSONHandler
from typer.testing import CliRunner

import quasirl.lm as qlm
from quasirl._validate import QuasirlValueError
from quasirl.cli.lm import lm_app


@pytest.fixture(scope="module")
def task():
    return qlm.capitals()


def _strict_json_lines(path):
    """Every line of a records file parses as strict JSON (no NaN / Infinity)."""

    def refuse(c):
        raise AssertionError(f"non-JSON constant {c} in {path}")

    return [json.loads(x, parse_constant=refuse) for x in path.read_text().splitlines()]


# ------------------------------------------------------------------------------------------
# a fake OpenAI-compatible server whose numbers or timing can be broken
# ------------------------------------------------------------------------------------------
class _Server(JSONHandler):
    logprob = -0.5  # the log-probability of every generated token (NaN, +7.5: broken servers)
    hang: threading.Event | None = None  # set: every request waits for it (a hung server)
    status = 200
    body = None

    def do_GET(self):
        cls = type(self)
        if cls.hang is not None:
            cls.hang.wait(10)
            return
        self._send(200, {"data": [{"id": "fake"}]})

    def do_POST(self):
        cls = type(self)
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if cls.hang is not None:
            cls.hang.wait(10)
            return
        if cls.status != 200:
            return self._send(cls.status, cls.body)
        text = " Paris" if req["temperature"] == 0 else f" s{req['seed'] % 1000}"
        # json.dumps writes a NaN as a bare NaN, as some servers do
        return self._send(200, {"choices": [{"text": text, "finish_reason": "stop", "logprobs": {
            "tokens": [text], "token_logprobs": [cls.logprob]}}]})


@pytest.fixture()
def server():
    _Server.logprob, _Server.hang, _Server.status, _Server.body = -0.5, None, 200, None
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    if _Server.hang is not None:
        _Server.hang.set()
    srv.shutdown()
    srv.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chain(lm, task, path, **kw):
    args = {"arm": "unfiltered", "rounds": 0, "queries_per_round": 2, "samples_per_query": 2}
    args.update(kw)
    return qlm.run_chaining(lm, task, records=path, **args)


# ------------------------------------------------------------------------------------------
# 1. numbers from a model or server are checked; records never hold NaN
# ------------------------------------------------------------------------------------------
def test_server_nan_logprob_fails_the_record(server, task, tmp_path):
    _Server.logprob = float("nan")
    lm = qlm.OpenAICompatibleLM(server, backoff=0.01)
    path = tmp_path / "r.jsonl"
    with pytest.raises(qlm.LMError, match=rf"server {server}/v1: prompt 0, sample 0, token 0 "
                                          r"\(' s\d+'\): log-probability nan is not finite"):
        _chain(lm, task, path)
    assert len(_strict_json_lines(path)) == 1  # the configuration, no record


def test_server_positive_logprob_is_refused(server, task, tmp_path):
    _Server.logprob = 7.5
    lm = qlm.OpenAICompatibleLM(server, backoff=0.01)
    with pytest.raises(qlm.LMError, match=r"log-probability 7.5 is > 0"):
        _chain(lm, task, tmp_path / "r.jsonl", arm="filtered", fitness=qlm.LikelihoodFitness())
    _Server.logprob = 2e-6  # float32 rounding of log 1 is tolerated (and read as log 1)
    res = _chain(lm, task, None, arm="filtered", fitness=qlm.LikelihoodFitness())
    np.testing.assert_allclose([r["fitness"] for r in res.records], 1.0)


def test_likelihood_fitness_refuses_impossible_logprobs(task):
    lm = qlm.SyntheticLM(task, 0.3, 0.8, 0.2, 0.5)
    it = task.item("france")
    fit = qlm.LikelihoodFitness()
    for bad in (7.5, float("nan"), float("inf"), float("-inf")):
        with pytest.raises(qlm.LMError, match=rf"sample 1 of item 'france'.*{bad}"):
            fit(lm, task, [it] * 2, [qlm.Sample(" Paris", (-0.1,)), qlm.Sample(" Lyon", (bad,))])
    with pytest.raises(ValueError):  # also a ValueError: the number is bad, not the transport
        fit(lm, task, [it], [qlm.Sample(" Lyon", (7.5,))])


class _BrokenLM(qlm.SyntheticLM):
    """A custom backend whose third query's second sample has a NaN log-probability."""

    def generate(self, prompts, **kw):
        out = super().generate(prompts, **kw)
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 3:
            out[0][1] = qlm.Sample(out[0][1].text, (float("nan"),))
        return out


def test_loop_checks_every_backend_and_fitness(task, tmp_path):
    path = tmp_path / "r.jsonl"
    lm = _BrokenLM(task, 0.3, 0.8, 0.2, 0.5)
    with pytest.raises(qlm.LMError, match=r"backend synthetic, round 0, query \d+ \([^)]*\), "
                                          r"sample 1: log-probability nan is not finite"):
        _chain(lm, task, path, queries_per_round=4)
    recs = _strict_json_lines(path)
    assert len(recs) == 1 + 2 * 2  # the first two queries were kept
    with pytest.raises(qlm.LMError, match=r"backend synthetic, Exp 1 query 2 \([^)]*\), sample 1"):
        qlm.validate.collect_calibration(_BrokenLM(task, 0.3, 0.8, 0.2, 0.5), task, n_queries=4,
                                         signals=("gold",))
    # Youden's "accept nothing" (+inf) reaches the loop as a finite threshold above every f
    from quasirl.lm.validate._experiments import _finite_threshold

    assert _finite_threshold(float("inf")) == 2.0

    def bad_fitness(lm, task, items, samples):
        return np.array([0.5, 1.25])

    ok = qlm.SyntheticLM(task, 0.3, 0.8, 0.2, 0.5)
    with pytest.raises(qlm.LMError, match=r"round 0, query 0 .*sample 1: fitness 1.25 is not a "
                                          r"probability in \[0, 1\]"):
        _chain(ok, task, None, arm="filtered", fitness=bad_fitness)
    with pytest.raises(QuasirlValueError, match=r"fitness returned shape \(3,\) for 2 samples"):
        _chain(ok, task, None, arm="filtered", fitness=lambda *a: np.zeros(3))


class _NaNScores(qlm.SyntheticLM):
    def score(self, prompts, continuations):
        out = super().score(prompts, continuations)
        out[1] = qlm.Score(float("nan"), (float("nan"),))
        return out


def test_label_probs_refuse_bad_scores(task):
    lm = _NaNScores(task, 0.3, 0.8, 0.2, 0.5)
    prompt = task.eval_prompt(task.item("france"), "Paris", qlm.YES_NO.question)
    with pytest.raises(qlm.LMError, match=r"prompt 0, label ' No': log-probability nan"):
        qlm.label_probs(lm, [prompt], qlm.YES_NO.labels)


def test_numeric_arguments_reject_nan_and_inf(task, tmp_path, capsys):
    lm = qlm.SyntheticLM(task, 0.3, 0.8, 0.2, 0.5)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(QuasirlValueError, match=rf"threshold must be a finite number, got "
                                                    rf"{bad}"):
            _chain(lm, task, tmp_path / "t.jsonl", arm="filtered",
                   fitness=qlm.LikelihoodFitness(), threshold=bad)
        with pytest.raises(QuasirlValueError, match="temperature must be a finite number"):
            _chain(lm, task, None, temperature=bad)
        with pytest.raises(QuasirlValueError, match="threshold must be a finite number"):
            qlm.accept([0.5], "hard", bad, [0.1])
        with pytest.raises(QuasirlValueError, match="temperature must be a finite number"):
            qlm.validate.collect_calibration(lm, task, n_queries=2, temperature=bad)
    assert not (tmp_path / "t.jsonl").exists()  # refused before anything was written
    with pytest.raises(QuasirlValueError, match=r"f\[1\] = nan must be a probability"):
        qlm.accept([0.5, float("nan")], "soft", 0.5, [0.1, 0.1])
    from quasirl.cli import main

    capsys.readouterr()
    assert main(["lm", "run", "--model", "synthetic", "--quick", "--threshold", "nan", "--out",
                 str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: --threshold must be a finite number, got nan"
    assert not (tmp_path / "chaining_filtered.jsonl").exists()


def test_records_never_hold_nan(tmp_path):
    log = qlm.RecordLog(None, {"x": 1}, ("k",))
    with pytest.raises(QuasirlValueError, match=r"record \(1,\): field 'v\[1\]' = nan is not a "
                                                r"finite number"):
        log.append({"k": 1, "v": [0.5, float("nan")]})
    assert not log.has(1)
    with pytest.raises(QuasirlValueError, match=r"run configuration: field 't' = inf"):
        qlm.RecordLog(tmp_path / "r.jsonl", {"t": float("inf")}, ("k",))
    assert not (tmp_path / "r.jsonl").exists()


# ------------------------------------------------------------------------------------------
# 2 and 5. hung and absent servers: retries are reported, bounded, and end in one clear line
# ------------------------------------------------------------------------------------------
def test_hung_server_is_reported_and_bounded(server, caplog):
    _Server.hang = threading.Event()
    lm = qlm.OpenAICompatibleLM(server, model="m", timeout=0.3, retry_budget=1.5, backoff=0.05)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="quasirl.lm"), \
            pytest.raises(qlm.LMError) as e:
        lm.generate(["q"])
    took = time.monotonic() - t0
    assert took < 3.0, took
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"server {server}/v1/completions failed ") and "ReadTimeout" in msg
    assert "retry budget of 1.5 s spent" in msg
    warned = [r.getMessage() for r in caplog.records if r.name.startswith("quasirl.lm")]
    assert warned and warned[0].startswith(f"server {server}/v1/completions: attempt 1 of 9 "
                                           "failed (ReadTimeout")
    assert "retrying in 0.05 s" in warned[0]
    with pytest.raises(QuasirlValueError, match="retry_budget must be a finite number"):
        qlm.OpenAICompatibleLM(server, retry_budget=float("nan"))


def test_http_errors_are_one_line(server):
    _Server.status, _Server.body = 400, "<html>\n<body>bad\nrequest</body>\n</html>"
    lm = qlm.OpenAICompatibleLM(server, model="m")
    with pytest.raises(qlm.LMError, match=r"answered HTTP 400: <html> <body>bad request") as e:
        lm.generate(["q"])
    assert "\n" not in str(e.value)


def test_connection_refused_fails_fast():
    url = f"http://127.0.0.1:{_closed_port()}"
    lm = qlm.OpenAICompatibleLM(url)  # default retry settings
    t0 = time.monotonic()
    with pytest.raises(qlm.LMError, match=rf"^server {url}/v1/models failed 3 times; last error: "
                                          r"ConnectError: .*is a server running at this "
                                          r"address\?") as e:
        lm.generate(["q"])
    assert time.monotonic() - t0 < 5.0
    assert "\n" not in str(e.value)


def test_cli_closed_port_is_a_prompt_lm_error(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    r = CliRunner().invoke(lm_app, ["run", "--server", url, "--quick", "--out", str(tmp_path),
                                    "--timeout", "5", "--retry-budget", "30"])
    assert time.monotonic() - t0 < 10.0
    assert isinstance(r.exception, qlm.LMError), r.output
    assert str(r.exception).startswith(f"server {url}/v1/models failed")
    assert "\n" not in str(r.exception)
    r = CliRunner().invoke(lm_app, ["run", "--model", "synthetic", "--quick", "--out",
                                    str(tmp_path), "--timeout", "5"])
    assert isinstance(r.exception, ValueError)
    assert str(r.exception) == "--timeout applies only with --server"


# ------------------------------------------------------------------------------------------
# 3 and 4. record files: refusal never modifies, a cut last line is ignored, checksums
# ------------------------------------------------------------------------------------------
def _synthetic_run(task, path, **kw):
    lm = qlm.SyntheticLM(task, 0.4, 0.8, 0.3, 0.5, seed=1)
    args = {"rounds": 1, "queries_per_round": 3, "samples_per_query": 2, "seed": 5}
    args.update(kw)
    return qlm.run_chaining(lm, task, qlm.LikelihoodFitness(), records=path, **args)


def test_refusal_leaves_the_file_untouched(task, tmp_path):
    path = tmp_path / "r.jsonl"
    _synthetic_run(task, path)
    with path.open("ab") as f:
        f.write(b'{"round": 1, "qid": "cut')  # a record cut short by a crash
    before = path.read_bytes()
    with pytest.raises(QuasirlValueError, match="belongs to a different run"):
        _synthetic_run(task, path, queries_per_round=2)
    assert path.read_bytes() == before
    _synthetic_run(task, path)  # the same run resumes: only now is the cut line removed
    assert path.read_bytes() == before[:before.rfind(b"\n") + 1]
    other = tmp_path / "other.txt"  # no complete line, not ours: refused, untouched
    other.write_bytes(b"notes on the run, \xc3")
    with pytest.raises(QuasirlValueError, match="holds no complete line; refusing to append"):
        _synthetic_run(task, other)
    assert other.read_bytes() == b"notes on the run, \xc3"
    mine = tmp_path / "mine.jsonl"  # a crash while writing the header: it is written again
    mine.write_bytes(before[:20])
    _synthetic_run(task, mine)
    assert mine.read_bytes() == before[:before.rfind(b"\n") + 1]


def test_cut_utf8_last_line_is_ignored(task, tmp_path):
    path = tmp_path / "r.jsonl"
    ref = _synthetic_run(task, path)
    data = path.read_bytes()
    cut = '{"round": 1, "text": "Bras\u00ed'.encode()[:-1]  # inside the two bytes of í
    path.write_bytes(data + cut)
    meta, recs = qlm.read_records(path)
    assert len(recs) == len(ref.records) and meta["kind"] == "chaining"
    assert path.read_bytes() == data + cut  # reading never modifies
    res = _synthetic_run(task, path)
    assert res.records == ref.records and path.read_bytes() == data


@pytest.mark.parametrize("damage,match", [
    (lambda s: s.replace(b'"finish"', b'"fin\xff\xfeh"', 1), r"r.jsonl:3: not valid UTF-8"),
    (lambda s: s.replace(b'"finish": ', b'"finish" ', 1), r"r.jsonl:3: corrupt record"),
    (lambda s: s.replace(b'"logprob": -', b'"logprob": NaN, "x": -', 1),
     r"r.jsonl:3: corrupt record \(non-finite number NaN\)"),
])
def test_corruption_inside_the_file_names_the_line(task, tmp_path, damage, match):
    path = tmp_path / "r.jsonl"
    _synthetic_run(task, path)
    lines = path.read_bytes().split(b"\n")
    lines[2] = damage(lines[2])
    path.write_bytes(b"\n".join(lines))
    before = path.read_bytes()
    with pytest.raises(QuasirlValueError, match=match):
        qlm.read_records(path)
    with pytest.raises(QuasirlValueError, match=match):
        _synthetic_run(task, path)
    assert path.read_bytes() == before


def test_checksums_catch_changed_records(task, tmp_path):
    path = tmp_path / "r.jsonl"
    ref = _synthetic_run(task, path)
    lines = path.read_text().splitlines()
    rec = json.loads(lines[3])
    assert len(rec["_sha256"]) == 16 and "_sha256" not in ref.records[0]
    rec["correct"] = not rec["correct"]  # valid JSON, silently different data
    lines[3] = json.dumps(rec, sort_keys=True)
    path.write_text("\n".join(lines) + "\n")
    before = path.read_bytes()
    with pytest.raises(QuasirlValueError, match=r"r.jsonl:4: corrupt record \(checksum "
                                                r"mismatch: .*delete this line"):
        qlm.read_records(path)
    with pytest.raises(QuasirlValueError, match=r"r.jsonl:4: corrupt record \(checksum"):
        _synthetic_run(task, path)
    assert path.read_bytes() == before
    # the advice works: without the line, resume recomputes that record and loses nothing
    del lines[3]
    path.write_text("\n".join(lines) + "\n")
    assert _synthetic_run(task, path).records == ref.records


def test_old_records_without_checksums_still_load(task, tmp_path):
    ref_path = tmp_path / "ref.jsonl"
    ref = _synthetic_run(task, ref_path)
    old = []
    for line in ref_path.read_text().splitlines()[:5]:  # a partial run written before hashes
        obj = json.loads(line)
        obj.pop("_sha256")
        old.append(json.dumps(obj, sort_keys=True, ensure_ascii=False))
    path = tmp_path / "old.jsonl"
    path.write_text("\n".join(old) + "\n")
    meta, recs = qlm.read_records(path)
    assert len(recs) == 4
    res = _synthetic_run(task, path)  # resumes, appending records with checksums
    assert res.records == ref.records
    assert sum('"_sha256"' in x for x in path.read_text().splitlines()) == len(ref.records) - 4
    assert math.isclose(meta["temperature"], 1.0)
