"""Local models through Hugging Face ``transformers``: any local model folder or a GGUF file.

A GGUF file is dequantised by transformers on load (minutes for a few hundred MB); the result is
saved once under the quasirl cache (``$QUASIRL_CACHE`` or ``~/.cache/quasirl``) and later loads
take seconds. The hub is never contacted (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
from pathlib import Path

import numpy as np

from .._validate import QuasirlValueError
from ._llamacpp import default_threads
from ._token import TokenLM, log_softmax


def cache_root() -> Path:
    """Where converted models are kept: ``$QUASIRL_CACHE`` or ``~/.cache/quasirl``."""
    return Path(os.environ.get("QUASIRL_CACHE") or Path.home() / ".cache" / "quasirl")


def _file_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()


def gguf_add_bos(path: Path) -> bool | None:
    """The GGUF's ``tokenizer.ggml.add_bos_token`` flag (None when absent)."""
    from gguf import GGUFReader

    field = GGUFReader(str(path)).fields.get("tokenizer.ggml.add_bos_token")
    if field is None:
        return None
    return bool(field.parts[field.data[0]][0])


def converted_dir(gguf_path) -> Path:
    """Folder holding the transformers copy of a GGUF file (keyed by path, size and mtime)."""
    p = Path(gguf_path)
    return cache_root() / "hf" / f"{p.stem}-{_file_key(p)[:16]}"


def convert_gguf(gguf_path, threads: int | None = None) -> Path:
    """Dequantise a GGUF file into a transformers folder once (idempotent); return the folder."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    src = Path(gguf_path)
    if not src.is_file():
        raise QuasirlValueError(f"gguf_file must be an existing file, got {str(src)!r}")
    dst = converted_dir(src)
    if (dst / "quasirl-complete").exists():
        return dst
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads or default_threads())
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name,
                                                 dtype=torch.float32)
    # the weights are already dequantised to float32; drop the GGUF marker so they can be saved
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tok.save_pretrained(tmp)
    model.save_pretrained(tmp)
    add_bos = gguf_add_bos(src)
    (tmp / "quasirl-add-bos").write_text("" if add_bos is None else str(int(add_bos)))
    (tmp / "quasirl-complete").write_text(str(src) + "\n")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst


class TransformersLM(TokenLM):
    """A causal LM run by ``transformers`` (PyTorch), on GPU when one is present, else CPU.

    Args:
      path: a local model folder, or (with ``gguf_file``) the folder of a GGUF file; a path to
        a ``.gguf`` file may be given directly.
      gguf_file: file name of a GGUF model inside ``path`` (converted once, then cached).
      device: ``"cpu"``, ``"cuda"`` ... (default: cuda when available).
      threads: CPU threads for torch (default: all usable cores, at most 8).
      add_bos: prepend the BOS token to prompts (default: the GGUF flag, else the tokenizer's).
    """

    def __init__(self, path, gguf_file: str | None = None, device: str | None = None,
                 threads: int | None = None, add_bos: bool | None = None,
                 name: str | None = None):
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        path = Path(path)
        if path.suffix == ".gguf" and gguf_file is None:
            path, gguf_file = path.parent, path.name
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads or default_threads())
        if gguf_file is not None:
            folder = convert_gguf(path / gguf_file, threads)
            flag = (folder / "quasirl-add-bos").read_text().strip()
            if add_bos is None and flag:
                add_bos = bool(int(flag))
            self.name = name or gguf_file
        else:
            if not path.is_dir():
                raise QuasirlValueError(f"path must be a local model folder, got {str(path)!r}")
            folder = path
            self.name = name or path.name
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tok = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=torch.float32 if self.device == "cpu" else torch.bfloat16
        ).to(self.device).eval()
        bos = self.tok.bos_token_id
        if add_bos is None:
            probe = self.tok("a").input_ids
            add_bos = bool(probe) and bos is not None and probe[0] == bos
        self._bos = [bos] if add_bos and bos is not None else []
        eog = {self.tok.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)}
        flat = set()
        for e in eog:
            flat.update(e if isinstance(e, list | tuple) else [e])
        self._eog = frozenset(int(e) for e in flat if e is not None)
        self._ids: list[int] = []
        self._past = None
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def tokenize(self, text: str, bos: bool) -> list[int]:
        ids = list(self.tok(text, add_special_tokens=False).input_ids)
        return (self._bos if bos else []) + ids

    def detokenize(self, ids) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=False,
                               clean_up_tokenization_spaces=False)

    def eog_ids(self) -> frozenset[int]:
        return self._eog

    def next_logits(self, ids) -> np.ndarray:
        ids = list(ids)
        if not ids:
            raise QuasirlValueError("cannot predict after an empty token sequence")
        torch = self.torch
        n_old = len(self._ids)
        # reuse the cache only when it holds a strict prefix of ids (cache cropping differs
        # between transformers versions, so a diverging sequence starts afresh)
        extend = self._past is not None and n_old < len(ids) and self._ids == ids[:n_old]
        start, past = (n_old, self._past) if extend else (0, None)
        with torch.no_grad():
            x = torch.tensor([ids[start:]], device=self.device)
            out = self.model(input_ids=x, use_cache=True, **{self._cache_kw: past})
        self._past = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        self._ids = ids
        return out.logits[0, -1].float().cpu().numpy()

    def token_pieces(self) -> list[str]:
        if getattr(self, "_pieces", None) is None:
            self._pieces = [self.detokenize([t]) for t in range(len(self.tok))]
        return self._pieces

    def continuation_rows(self, prefix, cont) -> np.ndarray:
        """One forward pass over prompt + continuation; the rows from the prompt's last token."""
        prefix, cont = list(prefix), list(cont)
        if not prefix:
            raise QuasirlValueError("cannot score after an empty prompt")
        torch = self.torch
        ids = prefix + cont
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([ids], device=self.device)).logits[0]
        return logits[len(prefix) - 1:].float().cpu().numpy()

    def continuation_logprobs(self, prefix, cont) -> np.ndarray:
        cont = list(cont)
        lp = log_softmax(self.continuation_rows(prefix, cont)[:-1])
        return lp[np.arange(len(cont)), np.asarray(cont, dtype=np.int64)]
