"""Run records: one JSON object per line, written as each sample is produced, resumable.

The first line holds the run's configuration (``{"_meta": {...}}``); every further line is one
record. Opening an existing file resumes it: a last line cut short by a crash (anything after
the last newline, even a partial UTF-8 character) is dropped, since its record was never
complete and is produced again; the configuration must match the new run's, so that records of
different runs never mix. A file that is refused is left exactly as it was: the cut last line is
removed only once the file has been checked and is about to be appended to.

Integrity. Every line is strict JSON (a NaN or an infinity is refused when written, so it can
never reach the file) and carries a checksum ``"_sha256"``: the first 16 hex digits of the
SHA-256 of the line's canonical JSON without that field (keys sorted, no spaces, ASCII). On
load, a complete line that is not UTF-8, not JSON, holds NaN / Infinity, or does not match its
checksum is an error naming the file and the line: corrupt data is never trusted, and nothing is
changed. Records are seeded by their position, so deleting that line and resuming recomputes
exactly the record it held; nothing is lost. Lines without a checksum (files written before
checksums existed) load as before, and resuming such a file appends records with checksums.

Stamps. Inside ``with stamped(prediction_sha256=h):`` every RecordLog opened carries those fields
in its configuration line (so a file of another stamp is refused on resume) and in every record
it appends: Exp 3's record files carry the hash of the pre-registered prediction this way,
although the chaining loop that writes them knows nothing about it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from .._validate import QuasirlValueError

CHECKSUM = "_sha256"
_STAMP: ContextVar[tuple] = ContextVar("quasirl_record_stamp", default=())  # (key, value)s


@contextmanager
def stamped(**fields) -> Iterator[dict]:
    """Every RecordLog opened inside carries ``fields`` in its configuration and its records
    (nested stamps merge; see the module docstring)."""
    _refuse_nonfinite(fields, "stamp")
    merged = {**dict(_STAMP.get()), **fields}
    token = _STAMP.set(tuple(merged.items()))
    try:
        yield merged
    finally:
        _STAMP.reset(token)


def _refuse_constant(name: str):
    raise ValueError(f"non-finite number {name}")


def _nonfinite(obj, path: str = "") -> tuple[str, float] | None:
    """(field path, value) of the first NaN or infinity inside ``obj``, or None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (path, obj)
    if isinstance(obj, dict):
        children = ((f"{path}.{k}" if path else str(k), v) for k, v in obj.items())
    elif isinstance(obj, list | tuple):
        children = ((f"{path}[{i}]", v) for i, v in enumerate(obj))
    else:
        return None
    for p, v in children:
        hit = _nonfinite(v, p)
        if hit is not None:
            return hit
    return None


def _refuse_nonfinite(obj, what: str) -> None:
    hit = _nonfinite(obj)
    if hit is not None:
        raise QuasirlValueError(f"{what}: field {hit[0]!r} = {hit[1]!r} is not a finite number; "
                                "records hold only finite numbers (JSON has no NaN)")


def _checksum(obj: dict) -> str:
    body = json.dumps(obj, sort_keys=True, ensure_ascii=True, allow_nan=False,
                      separators=(",", ":"))
    return hashlib.sha256(body.encode("ascii")).hexdigest()[:16]


def _encode(obj: dict, what: str) -> str:
    """The line of ``obj`` (strict JSON with its checksum); a NaN or inf is refused."""
    if CHECKSUM in obj:
        raise QuasirlValueError(f"{what}: the field name {CHECKSUM!r} is reserved for the "
                                "record checksum")
    _refuse_nonfinite(obj, what)
    try:
        digest = _checksum(obj)
    except (TypeError, ValueError) as e:
        raise QuasirlValueError(f"{what}: not JSON-serialisable ({e})") from None
    line = json.dumps({**obj, CHECKSUM: digest}, sort_keys=True, ensure_ascii=False,
                      allow_nan=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate: the file could not hold it
        raise QuasirlValueError(f"{what}: text is not encodable as UTF-8 ({e.reason} at "
                                f"{e.object[e.start:e.end]!r})") from None
    return line


def _decode(raw: bytes, where: str) -> dict:
    """One complete line: UTF-8, strict JSON object, checksum verified if present."""
    hint = "; delete this line and resume to recompute the record"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise QuasirlValueError(f"{where}: not valid UTF-8 (byte {e.start} of the line){hint}") \
            from None
    try:
        obj = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as e:
        msg = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
        raise QuasirlValueError(f"{where}: corrupt record ({msg}){hint}") from None
    if not isinstance(obj, dict):
        raise QuasirlValueError(f"{where}: corrupt record (not a JSON object){hint}")
    if CHECKSUM in obj:
        stored = obj.pop(CHECKSUM)
        actual = _checksum(obj)
        if stored != actual:
            raise QuasirlValueError(
                f"{where}: corrupt record (checksum mismatch: stored {stored!r}, content gives "
                f"{actual!r}; the line was changed after it was written){hint}")
    return obj


def _split(data: bytes) -> tuple[list[bytes], int]:
    """(complete lines, byte length of the complete part): what follows the last newline is a
    line cut short (or nothing) and is never decoded."""
    end = data.rfind(b"\n") + 1
    return data[:end].split(b"\n")[:-1], end


def _head(path: Path, lines: list[bytes], action: str) -> dict:
    if not lines:
        raise QuasirlValueError(f"records file {path} holds no complete line; {action}")
    head = _decode(lines[0], f"{path}:1")
    if not isinstance(head.get("_meta"), dict):
        raise QuasirlValueError(f"records file {path} does not start with a run configuration "
                                f"line; {action}")
    return head["_meta"]


class RecordLog:
    """An append-only JSONL record file keyed by ``key_fields`` (see the module docstring).

    Args:
      path: the file (created with its folders if missing), or None to keep records in memory.
      meta: the run configuration (JSON-serialisable, finite numbers); must equal the stored one
        on resume.
      key_fields: the record fields that identify a record (no two records share a key).

    Records read back or appended are plain dicts without the checksum field. Fields of an
    enclosing :func:`stamped` are added to ``meta`` and to every appended record.
    """

    def __init__(self, path, meta: dict, key_fields: tuple[str, ...]):
        self.path = None if path is None else Path(path)
        self.stamp = dict(_STAMP.get())
        clash = sorted(k for k in self.stamp if k in meta and meta[k] != self.stamp[k])
        if clash:
            raise QuasirlValueError(f"run configuration: field(s) {', '.join(clash)} differ "
                                    "from the stamp of the enclosing stamped()")
        meta = {**meta, **self.stamp}
        _refuse_nonfinite(meta, "run configuration")
        header = _encode({"_meta": meta}, "run configuration")
        self.meta = json.loads(header)["_meta"]
        self.key_fields = tuple(key_fields)
        self.records: list[dict] = []
        self._keys: set[tuple] = set()
        self._file = None
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = self.path.read_bytes() if self.path.exists() else b""
        if data and not (b"\n" not in data and (header + "\n").encode().startswith(data)):
            self._load(data)
        else:  # new, empty, or only a cut prefix of this very header (a crash while creating)
            with self.path.open("w", encoding="utf-8") as f:
                f.write(header + "\n")
        self._file = self.path.open("a", encoding="utf-8")

    def _load(self, data: bytes) -> None:
        """Check the whole file first; only then drop a cut last line (we will append)."""
        lines, end = _split(data)
        head = _head(self.path, lines, "refusing to append to it")
        if head != self.meta:
            diff = sorted(k for k in set(head) | set(self.meta) if head.get(k) != self.meta.get(k))
            raise QuasirlValueError(
                f"records file {self.path} belongs to a different run (configuration differs in "
                f"{', '.join(diff)}); use another path or delete it")
        for n, raw in enumerate(lines[1:], 2):
            where = f"{self.path}:{n}"
            self._add(_decode(raw, where), where=where)
        if end < len(data):  # a record cut short by a crash: drop it, it will be redone
            with self.path.open("r+b") as f:
                f.truncate(end)

    def _add(self, rec: dict, where: str) -> None:
        missing = [k for k in self.key_fields if k not in rec]
        if missing:
            raise QuasirlValueError(f"{where}: record lacks the key field(s) "
                                    f"{', '.join(missing)}")
        key = self.key(rec)
        if key in self._keys:
            raise QuasirlValueError(f"{where}: duplicate record for key {key}")
        self._keys.add(key)
        self.records.append(rec)

    def key(self, rec: dict) -> tuple:
        return tuple(rec[k] for k in self.key_fields)

    def has(self, *key) -> bool:
        return tuple(key) in self._keys

    def append(self, rec: dict) -> None:
        """Add one record and write it through to the file (flushed before returning).

        A record holding NaN or an infinity is refused (QuasirlValueError naming the field)."""
        what = f"record {tuple(rec.get(k) for k in self.key_fields)}"
        clash = sorted(k for k in self.stamp if k in rec and rec[k] != self.stamp[k])
        if clash:
            raise QuasirlValueError(f"{what}: field(s) {', '.join(clash)} differ from the "
                                    "record file's stamp")
        line = _encode({**rec, **self.stamp}, what)
        parsed = json.loads(line)
        del parsed[CHECKSUM]
        self._add(parsed, where="append")
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()

    def sync(self) -> None:
        """Flush to disk (fsync), e.g. at the end of a round."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self.sync()
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_records(path) -> tuple[dict, list[dict]]:
    """(configuration, records) of a record file.

    A cut-short last line (text after the last newline, even inside a UTF-8 character) is
    ignored; any other damaged line (not UTF-8, not JSON, NaN / Infinity, checksum mismatch)
    raises QuasirlValueError naming the file and line. Files without checksums (written before
    they existed) load unchecked. The file is never modified.
    """
    path = Path(path)
    if not path.is_file():
        raise QuasirlValueError(f"path must be an existing records file, got {str(path)!r}")
    lines, _ = _split(path.read_bytes())
    meta = _head(path, lines, "it is not a records file")
    return meta, [_decode(raw, f"{path}:{n}") for n, raw in enumerate(lines[1:], 2)]
