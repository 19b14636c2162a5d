"""Run records: one JSON object per line, written as each sample is produced, resumable.

The first line holds the run's configuration (``{"_meta": {...}}``); every further line is one
record. Opening an existing file resumes it: a last line cut short by a crash is dropped (its
record was never complete, so it is produced again), and the configuration must match the new
run's, so that records of different runs never mix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .._validate import QuasirlValueError


class RecordLog:
    """An append-only JSONL record file keyed by ``key_fields``.

    Args:
      path: the file (created with its folders if missing), or None to keep records in memory.
      meta: the run configuration (JSON-serialisable); must equal the stored one on resume.
      key_fields: the record fields that identify a record (no two records share a key).
    """

    def __init__(self, path, meta: dict, key_fields: tuple[str, ...]):
        self.path = None if path is None else Path(path)
        self.meta = json.loads(json.dumps(meta))
        self.key_fields = tuple(key_fields)
        self.records: list[dict] = []
        self._keys: set[tuple] = set()
        self._file = None
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > 0:
            self._load()
        else:
            with self.path.open("w", encoding="utf-8") as f:
                f.write(json.dumps({"_meta": self.meta}, sort_keys=True) + "\n")
        self._file = self.path.open("a", encoding="utf-8")

    def _load(self) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a record cut short by a crash: drop it, it will be redone
            with self.path.open("r+b") as f:
                f.truncate(end)
        lines = data[:end].decode("utf-8").splitlines()
        try:
            head = json.loads(lines[0])["_meta"]
        except (json.JSONDecodeError, KeyError, TypeError, IndexError):
            raise QuasirlValueError(
                f"records file {self.path} does not start with a run configuration line; "
                "refusing to append to it") from None
        if head != self.meta:
            diff = sorted(k for k in set(head) | set(self.meta) if head.get(k) != self.meta.get(k))
            raise QuasirlValueError(
                f"records file {self.path} belongs to a different run (configuration differs in "
                f"{', '.join(diff)}); use another path or delete it")
        for n, line in enumerate(lines[1:], 2):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise QuasirlValueError(f"{self.path}:{n}: corrupt record ({e.msg})") from None
            self._add(rec, where=f"{self.path}:{n}")

    def _add(self, rec: dict, where: str) -> None:
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
        """Add one record and write it through to the file (flushed before returning)."""
        line = json.dumps(rec, sort_keys=True, ensure_ascii=False)
        self._add(json.loads(line), where="append")
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
    """(configuration, records) of a record file (a cut-short last line is ignored)."""
    path = Path(path)
    if not path.is_file():
        raise QuasirlValueError(f"path must be an existing records file, got {str(path)!r}")
    lines = path.read_text(encoding="utf-8").split("\n")
    complete = lines[:-1]  # the text after the last newline is incomplete (or empty)
    if not complete:
        raise QuasirlValueError(f"records file {path} is empty")
    meta = json.loads(complete[0])["_meta"]
    return meta, [json.loads(x) for x in complete[1:]]
