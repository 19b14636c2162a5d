"""No CLI command prints a Python traceback for the faults of docs/reliability.md (issue 15):
each ends with one ``error:`` line and a non-zero status, quickly."""

import socket

import jax
import numpy as np
import pytest

import quasirl as qr
from quasirl.cli import main
from quasirl.lm import LMError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CASES = {
    "demo, horizon 10^8": (["demo", "--horizon", "100000000"], 2, "needs about"),
    "converge, size 10^5": (["converge", "--size", "100000"], 2, "GiB"),
    "phase, L = 10^5": (["phase", "--L", "100000"], 2, "GiB"),
    "lm run, closed port": (["lm", "run", "--server", "http://127.0.0.1:{port}", "--quick"],
                            1, "is a server running at this address"),
    "lm validate, weights through llama.cpp": (
        ["lm", "validate", "--model", "smollm2-135m", "--channel", "weights"], 2,
        "needs a local model with --backend transformers"),
    "lm validate, unknown channel": (
        ["lm", "validate", "--model", "synthetic", "--channel", "dreams"], 2,
        "--channel must be one of context, weights, both"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_cli_faults_end_with_one_error_line(name, tmp_path, capsys):
    argv, rc, text = CASES[name]
    argv = [a.format(port=_closed_port()) for a in argv] + ["--out", str(tmp_path / "out")]
    assert main(argv) == rc
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and text in lines[0], err


def _raising(exc):
    def command(*args, **kwargs):
        raise exc
    return command


@pytest.mark.parametrize("exc,rc,text", [
    (LMError("server http://x/v1 failed"), 1, "error: server http://x/v1 failed"),
    (MemoryError(), 1, "error: out of memory"),
    (TypeError("unsupported operand"), 2, "error: bad argument: unsupported operand"),
])
def test_cli_turns_failures_into_one_line(exc, rc, text, tmp_path, capsys, monkeypatch):
    import quasirl.cli.demo as demo

    monkeypatch.setattr(demo, "run_demo", _raising(exc))
    assert main(["demo", "--out", str(tmp_path)]) == rc
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines() == [err.strip()]
    assert err.startswith(text), err


def test_cli_shows_a_check_that_ran_under_jit_as_its_message(tmp_path, capsys, monkeypatch):
    import quasirl.cli.demo as demo

    m = qr.chain(3, dtype=np.float32)

    def run_demo(*args, **kwargs):
        jax.block_until_ready(jax.jit(lambda T: qr.free_energy(m, T, 3))(-1.0))

    monkeypatch.setattr(demo, "run_demo", run_demo)
    assert main(["demo", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: T must be finite and >= 0, but a traced T is not"), err


def test_summaries_are_strict_json(tmp_path):
    import json

    from quasirl._jsonio import write_json

    def refuse(name):
        raise ValueError(name)

    write_json(tmp_path / "s.json", {"w": float("nan"), "t": [np.inf, np.float32(0.5)],
                                     "a": np.arange(2), "n": np.int64(3)})
    # summaries wrote bare NaN / Infinity (not JSON) when a round accepted nothing
    got = json.loads((tmp_path / "s.json").read_text(), parse_constant=refuse)
    assert got == {"w": None, "t": [None, 0.5], "a": [0, 1], "n": 3}


class _Terminal:
    """A stand-in stderr that says it is a terminal."""

    def __init__(self):
        import io

        self.buf = io.StringIO()

    def isatty(self):
        return True

    def write(self, s):
        return self.buf.write(s)

    def flush(self):
        pass


@pytest.mark.parametrize("tty", [True, False])
def test_long_commands_show_their_stages_on_a_terminal_only(tty, monkeypatch, capsys):
    import sys

    from quasirl.cli._stages import Stages

    term = _Terminal()
    if tty:
        monkeypatch.setattr(sys, "stderr", term)
    st = Stages(2, "demo")
    st.next("F(T) at 37 temperatures, horizon 1,000,000")
    st.next("figures")
    st.close()
    text = term.buf.getvalue() if tty else capsys.readouterr().err
    if tty:  # demo and converge ran a minute and more at large horizons without a word
        assert "demo: 2/2 stages" in text and "horizon 1,000,000" in text
    else:
        assert text == ""
