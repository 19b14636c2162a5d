"""Faults of the phase module and its commands (issue 15, docs/reliability.md): corrupt, cut and
stale files in a sweep store, sizes that cannot fit in memory, progress bars outside a terminal.
"""

import io
import os
import struct
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
import xarray as xr

from quasirl import phase
from quasirl._phase_sweep import CHECKSUM_ATTR, verify
from quasirl._validate import QuasirlValueError
from quasirl.cli import main

T_GRID, MU_GRID = np.geomspace(0.05, 2.0, 6), np.linspace(0.1, 0.4, 4)  # 24 points


def _diagram(store=None):
    """The MDP phase diagram in 8 chunks of 3 points (stored when ``store`` is given)."""
    return phase.mdp_phase_diagram(T_GRID, MU_GRID, L=6, chunk_size=3, store=store,
                                   progress=False)


def _flip_one_float(path, value: float) -> None:
    """Flip the top mantissa bit of the one stored float64 equal to ``value`` (either byte
    order: netCDF-4 is little-endian, netCDF-3 big-endian)."""
    raw = bytearray(path.read_bytes())
    for order in "<>":
        pattern = struct.pack(order + "d", value)
        if raw.count(pattern) == 1:
            i = raw.index(pattern)
            bits = struct.unpack(order + "Q", bytes(raw[i:i + 8]))[0] ^ (1 << 51)
            raw[i:i + 8] = struct.pack(order + "Q", bits)
            path.write_bytes(bytes(raw))
            return
    raise AssertionError(f"{value!r} is not stored exactly once in {path}")


def _same_as_uninterrupted(ds, ref, store):
    np.testing.assert_allclose(ds["mass"].values, ref["mass"].values, rtol=1e-15, atol=0)
    assert verify(store / "result.nc") is None
    with xr.open_dataset(store / "result.nc") as stored:
        np.testing.assert_allclose(stored["mass"].values, ref["mass"].values, rtol=1e-15)


# --------------------------------------------------------------------------------------------
# the chunk store: checksums
# --------------------------------------------------------------------------------------------
def test_flipped_float_in_a_chunk_is_caught_and_recomputed(tmp_path):
    store = tmp_path / "s"
    ref = _diagram(store)  # uninterrupted
    chunk = store / "chunk-000003.nc"
    assert verify(chunk) is None
    with xr.open_dataset(chunk) as ds:
        value = float(ds["mass"].values[1])
    _flip_one_float(chunk, value)
    assert "checksum does not match" in verify(chunk)
    with pytest.warns(RuntimeWarning, match=r"chunk-000003\.nc is not used: its checksum"):
        again = _diagram(store)
    assert again.attrs["chunks_computed"] == 1 and again.attrs["chunks_loaded"] == 7
    _same_as_uninterrupted(again, ref, store)
    assert verify(chunk) is None  # rewritten


def test_cut_and_unchecksummed_chunks_are_recomputed_with_a_warning(tmp_path):
    store = tmp_path / "s"
    ref = _diagram(store)
    cut = store / "chunk-000001.nc"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    old = store / "chunk-000005.nc"  # as written before the checksums: no attribute
    with xr.open_dataset(old) as ds:
        ds = ds.load()
    del ds.attrs[CHECKSUM_ATTR]
    ds.to_netcdf(old)
    assert "no checksum" in verify(old)
    with pytest.warns(RuntimeWarning) as record:
        again = _diagram(store)
    text = "\n".join(str(w.message) for w in record if w.category is RuntimeWarning)
    assert "chunk-000001.nc is not used: unreadable" in text
    assert "chunk-000005.nc is not used: it has no checksum" in text
    assert again.attrs["chunks_computed"] == 2
    _same_as_uninterrupted(again, ref, store)
    assert verify(cut) is None and verify(old) is None


# --------------------------------------------------------------------------------------------
# the chunk store: temporary files a killed run left
# --------------------------------------------------------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporary_files_are_removed_on_resume_and_never_read(tmp_path):
    from quasirl._phase_sweep import _HOST

    store = tmp_path / "s"
    ref = _diagram(store)
    whole = (store / "chunk-000003.nc").read_bytes()
    (store / "chunk-000002.nc").unlink()  # killed before these were renamed into place
    (store / "chunk-000004.nc").unlink()
    day = 24 * 3600
    other = "deadbeef" if _HOST != "deadbeef" else "feedface"
    stale = {
        # the unnamed temporary files of quasirl before issue 15: a cut copy and garbage
        f".chunk-000002.nc.{uuid.uuid4().hex}.tmp": whole[: len(whole) // 2],
        f".chunk-000004.nc.{uuid.uuid4().hex}.tmp": b"\x89HDF\r\n\x1a\ngarbage",
        f".result.nc.{uuid.uuid4().hex}.tmp": whole[:100],
        f".chunk-000006.nc.{_HOST}-{_dead_pid()}-0123456789ab.tmp": whole,  # writer gone
        f".chunk-000007.nc.{other}-1-0123456789ab.tmp": whole,  # another host, 2 days old
    }
    kept = {
        f".chunk-000002.nc.{_HOST}-{os.getpid()}-0123456789ab.tmp": whole,  # a live writer
        f".chunk-000003.nc.{other}-1-0123456789ab.tmp": whole,  # another host, just now
        ".notes.txt.tmp": b"not the store's",
    }
    for name, data in {**stale, **kept}.items():
        (store / name).write_bytes(data)
    two_days_ago = time.time() - 2 * day
    os.utime(store / f".chunk-000007.nc.{other}-1-0123456789ab.tmp",
             (two_days_ago, two_days_ago))
    again = _diagram(store)
    left = {p.name for p in store.glob(".*")}
    assert not left & set(stale), left
    assert set(kept) <= left
    assert again.attrs["chunks_computed"] == 2 and again.attrs["chunks_loaded"] == 6
    _same_as_uninterrupted(again, ref, store)


# --------------------------------------------------------------------------------------------
# memory estimated up front
# --------------------------------------------------------------------------------------------
CLI_CASES = {
    "converge --size 10^5": (["converge", "--size", "100000"], "--size", "GiB"),
    "converge random, size 2^70": (["converge", "--mdp", "random", "--size", str(2**70)],
                                   "--size", "GiB"),
    "converge --temps 10^12": (["converge", "--temps", str(10**12)], "--temps", "GiB"),
    "converge --horizon 2^70": (["converge", "--horizon", str(2**70)], "horizon",
                                "between 1 and 2147483647, got"),
    "phase --L 10^5": (["phase", "--L", "100000"], "--L", "GiB"),
    "phase --L 2^70": (["phase", "--L", str(2**70), "--diagram", "mdp"], "--L", "GiB"),
}


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_cli_refuses_what_cannot_fit_with_one_error_line(name, tmp_path, capsys):
    argv, option, text = CLI_CASES[name]
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {option}"), captured.err
    assert text in lines[0]
    assert not out.exists()  # refused before anything was written


def test_memory_limit_is_named_and_defaults_still_fit(monkeypatch, capsys, tmp_path):
    import quasirl._validate as V
    from quasirl._phase_mdp import check_phase_memory
    from quasirl.cli.converge import _check_memory

    monkeypatch.setattr(V, "available_memory", lambda: 8 * 2**30)
    assert main(["phase", "--L", "1000", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--L: the MDP phase diagram at L = 1,000" in err
    assert "needs about 24.3 GiB" in err and "this machine's 8 GiB" in err
    with pytest.raises(QuasirlValueError, match=r"^L: route_chain\(L=100,000\)"):
        phase.route_chain(100_000)
    with pytest.raises(QuasirlValueError, match=r"^L: the MDP phase diagram at L = 20,000"):
        phase.mdp_phase_diagram([1.0], [0.1], L=20_000, progress=False)
    # every default of the commands fits a 1 GiB machine
    monkeypatch.setattr(V, "available_memory", lambda: 2**30)
    check_phase_memory(20, 81 * 40, option="--L")
    for world in ("gridworld", "chain", "random"):
        _check_memory(world, None, 0.0, 20, 40)
    _check_memory("gridworld", 30, 0.1, 20, 40)


# --------------------------------------------------------------------------------------------
# progress bars
# --------------------------------------------------------------------------------------------
class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_sweep_bar_only_on_a_terminal(monkeypatch):
    for stream, shown in ((_Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        phase.sweep(lambda x: 2 * x, x=np.arange(4.0), backend="loop", progress=None)
        assert ("sweep value [loop]" in stream.getvalue()) is shown


def test_cli_phase_prints_no_bar_into_a_log(tmp_path, capsys):
    assert main(["phase", "--quick", "--diagram", "mdp", "--L", "4",
                 "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "sweep value" not in err and "pt/s" not in err, err
