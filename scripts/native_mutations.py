"""Break each instruction-set-specific branch of the native kernels on purpose and check that
the ISA matrix (tests/native_probe.py, as tests/test_native_isa.py runs it) catches it.

    python scripts/native_mutations.py            # every mutation this CPU can run
    python scripts/native_mutations.py --only clzero

Each mutation edits quasirl/_native/simd.h (restored afterwards, also on an error), builds the
variant whose code path it breaks into a scratch cache, and runs the probe with 2 threads. A
mutation is "caught" when some check leaves its tolerance or some bit-equality fails. The
AVX-512 mutations need an AVX-512 CPU; CLZERO ones an AMD CPU with CLZERO. Not part of
``make test`` (about a minute per mutation): run it after changing simd.h.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIMD = ROOT / "quasirl" / "_native" / "simd.h"
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

# (name, variant that runs the branch, original text, broken text)
MUTATIONS = [
    ("clzero: whole lines past the rows", "x86-64-v3+clzero",
     "    for (; p < a; p += LANES) vstore(p, splat(0.0f));\n"
     "    for (; p < z; p += 16) __builtin_ia32_clzero(p);",
     "    for (; p < e; p += 16) __builtin_ia32_clzero(p);\n    p = e;"),
    ("8 lanes: exp2 polynomial", "x86-64-v3",
     "  p = p * f + splat(6.931471824645996e-1f);\n  p = p * f + splat(1.0f);",
     "  p = p * f + splat(6.93e-1f);\n  p = p * f + splat(1.0f);"),
    ("8 lanes: ldexp in two steps", "x86-64-v3",
     "  const vi n1 = ni >> 1, n2 = ni - n1;", "  const vi n1 = ni >> 1, n2 = n1;"),
    ("8 lanes: add_log2", "x86-64-v3",
     "  return (ref + __builtin_convertvector(e, vf)) + (m + y) * splat(LOG2E);",
     "  return (ref + __builtin_convertvector(e, vf)) + (m + y) * splat(1.44f);"),
    ("8 lanes: all_below", "x86-64-v3",
     "  const vi ok = (s < splat(lim)) & (s >= splat(1.0f));",
     "  const vi ok = (s >= splat(1.0f));"),
    ("8 lanes: hsum", "x86-64-v3",
     "  for (int i = 0; i < LANES; ++i) s += a[i];",
     "  for (int i = 1; i < LANES; ++i) s += a[i];"),
    ("8 lanes: all_zero", "x86-64-v3",
     "  const vi z = a == splat(0.0f);", "  const vi z = a <= splat(1e-6f);"),
    ("avx512: exp2 table", "x86-64-v4",
     "    1.0f, 1.0442737340927124f,", "    1.0f, 1.04f,"),
    ("avx512: scalef", "x86-64-v4",
     "  return (vf)_mm512_maskz_scalef_ps(ALL16, (__m512)p, (__m512)n);",
     "  return (vf)_mm512_maskz_scalef_ps(ALL16, (__m512)p, (__m512)(n + 1));"),
    ("avx512: log2 table", "x86-64-v4",
     "    0.9696969985961914f, 0.9142857193946838f,", "    0.9696969985961914f, 0.9f,"),
    ("avx512: all_below mask", "x86-64-v4",
     "          _mm512_cmp_ps_mask((__m512)s, _mm512_set1_ps(1.0f), _CMP_GE_OQ)) == 0xFFFF;",
     "          _mm512_cmp_ps_mask((__m512)s, _mm512_set1_ps(1.0f), _CMP_GE_OQ)) != 0;"),
    ("avx512: reduce_add", "x86-64-v4",
     "  return _mm_cvtss_f32(s4);", "  return _mm_cvtss_f32(s4) * 0.5f;"),
    ("avx512: all_zero mask", "x86-64-v4",
     "  return _mm512_cmp_ps_mask((__m512)a, _mm512_setzero_ps(), _CMP_EQ_OQ) == 0xFFFF;",
     "  return _mm512_cmp_ps_mask((__m512)a, _mm512_setzero_ps(), _CMP_EQ_OQ) != 0;"),
    ("avx512: streamed stores", "x86-64-v4",
     "    _mm512_stream_ps(p, (__m512)v);", "    _mm512_stream_ps(p, (__m512)(v * 0.5f));"),
    ("avx512 + clzero: lines left unzeroed", "x86-64-v4+clzero",
     "    for (; p < z; p += 16) __builtin_ia32_clzero(p);",
     "    for (; p < z; p += 32) __builtin_ia32_clzero(p);"),
]


def probe(variant: str, cache: Path, refs: Path) -> dict:
    env = {**os.environ, "QUASIRL_NATIVE_MARCH": variant, "QUASIRL_CACHE_DIR": str(cache),
           "OMP_WAIT_POLICY": "passive", "QUASIRL_NATIVE_GRAIN": "1",
           "PYTHONPATH": str(ROOT / "tests")}
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "native_probe.py"), "--refs",
                          str(refs), "--threads", "2", "--examples", "6"],
                         capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        return {"crash": out.stderr[-500:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def caught(rep: dict) -> list[str]:
    from test_native_isa import BITS, TOLERANCE

    if "crash" in rep or not rep["status"]["available"]:
        return ["build or run failed"]
    r = rep["2"]
    bad = [k for k, tol in TOLERANCE.items() if not r[k] <= tol]
    bad += [k for k in BITS if not r[k]]
    return bad + (["property"] if r["property"] else [])


def main() -> int:
    from quasirl._native.build import runnable

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="mutations whose name contains this")
    args = ap.parse_args()
    original = SIMD.read_text()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        refs = Path(tmp) / "refs.npz"
        subprocess.run([sys.executable, str(ROOT / "tests" / "native_probe.py"), "--refs",
                        str(refs), "--refs-only"], check=True, capture_output=True,
                       env={**os.environ, "QUASIRL_NATIVE": "0"})
        try:
            for name, variant, old, new in MUTATIONS:
                if args.only not in name:
                    continue
                ok, why = runnable(variant)
                if not ok:
                    rows.append((name, variant, f"not run: {why}"))
                    continue
                assert original.count(old) == 1, f"{name}: the original text is not in simd.h"
                SIMD.write_text(original.replace(old, new))
                bad = caught(probe(variant, Path(tmp) / "cache", refs))
                rows.append((name, variant, f"CAUGHT by {', '.join(bad)}" if bad else "MISSED"))
                print(f"{name:45s} {variant:18s} {rows[-1][2]}", flush=True)
        finally:
            SIMD.write_text(original)
    print()
    for name, variant, verdict in rows:
        print(f"| {name} | {variant} | {verdict} |")
    return 1 if any(v == "MISSED" for *_, v in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
