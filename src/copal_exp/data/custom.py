"""The user's own domains: ``data.sources.<name>`` makes ``<name>`` usable in ``datasets=``.

A source is a local file or folder (plain text, JSON lines, JSON, parquet; ``format: auto`` guesses
from the suffix) or a Hugging Face dataset id (``hub: ORG/NAME`` with ``split`` and ``name``), with
the text in ``field`` (default ``text``; plain text files give one document per blank-line-separated
block). The calibration and evaluation parts are given separately (``calibration: …`` and
``evaluation: …``, each a path) or split from one source deterministically: every ``holdout``-th
document (default 5: documents 4, 9, 14, …) is evaluation, the rest calibration, so the two never
overlap. Both parts are joined with blank lines; calibration segments are drawn from the joined text
as for WikiText-2. Provenance (location, format, documents, split rule, SHA-256 of local files) is
recorded like the built-in datasets'.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

from copal_exp.data.files import TextSource, read_rows
from copal_exp.errors import ConfigError, DataError

FORMATS = {".txt": "text", ".text": "text", ".md": "text", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}


@dataclass(frozen=True)
class SourceSpec:
    """One ``data.sources.<name>`` entry, every key with its default once."""

    path: Optional[str] = None  # a local file or folder
    hub: Optional[str] = None  # or a Hugging Face dataset id
    split: str = "train"  # the Hub split
    name: Optional[str] = None  # the Hub config
    field: str = "text"  # the text column (JSON, parquet, Hub)
    format: str = "auto"  # auto: from the suffix
    calibration: Optional[str] = None  # or the two parts given as paths
    evaluation: Optional[str] = None
    holdout: int = 5  # every holdout-th document is evaluation


SPEC_KEYS = {f.name for f in fields(SourceSpec)}


def check_source(name: str, spec: Any) -> None:
    """Before anything loads: the spec's keys, and that its local paths exist."""
    where = f"data.sources.{name}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}={spec!r}: give a mapping, e.g. {{path: corpus.jsonl, field: text}}")
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(SPEC_KEYS)}")
    given = [k for k in ("path", "hub") if spec.get(k)] + (["calibration+evaluation"] if spec.get("calibration")
                                                            or spec.get("evaluation") else [])
    if len(given) != 1:
        raise ConfigError(f"{where}: give exactly one of path=FILE_OR_FOLDER, hub=ORG/NAME, or both calibration= and "
                          f"evaluation= (got {given or 'none'})")
    if "calibration+evaluation" in given and not (spec.get("calibration") and spec.get("evaluation")):
        raise ConfigError(f"{where}: calibration= and evaluation= go together")
    for key in ("path", "calibration", "evaluation"):
        if spec.get(key) and not Path(str(spec[key])).expanduser().exists():
            raise ConfigError(f"{where}.{key}={spec[key]}: no such file or folder")
    if spec.get("format", SourceSpec.format) not in ("auto", *sorted(set(FORMATS.values()))):
        raise ConfigError(f"{where}.format={spec['format']!r}: allowed values are auto, json, jsonl, parquet, text")
    holdout = spec.get("holdout", SourceSpec.holdout)
    if isinstance(holdout, bool) or not isinstance(holdout, int) or holdout < 2:
        raise ConfigError(f"{where}.holdout={holdout!r}: must be an integer at least 2")


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in FORMATS)
        if not found:
            raise DataError(f"{path}: no {'/'.join(sorted(FORMATS))} file in this folder")
        return found
    return [path]


def _read(path: Path, fmt: str, field: str, name: str, role: str) -> list[str]:
    fmt = FORMATS.get(path.suffix, "text") if fmt == "auto" else fmt
    if fmt == "text":
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise DataError(f"{name} {role} split: {path}: line {line} is not valid UTF-8") from None
        return [block.strip() for block in text.replace("\r\n", "\n").split("\n\n") if block.strip()]
    if fmt == "jsonl":
        return read_rows(path, "jsonl", name, role, field=field)
    if fmt == "json":
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{name} {role} split: {path}: not a JSON document ({exc})") from None
        records = records if isinstance(records, list) else [records]
    else:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 - whatever pyarrow says, the file is unusable
            raise DataError(f"{name} {role} split: {path}: not a readable parquet file ({exc})") from None
        if field not in table.column_names:
            raise DataError(f"{name} {role} split: {path} has no {field!r} column (columns: {table.column_names})")
        records = [{field: v} for v in table.column(field).to_pylist()]
    rows = []
    for i, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            raise DataError(f"{name} {role} split: {path}: record {i} has no {field!r} text field")
        rows.append(record[field])
    return rows


def _local(spec_path: str, spec: SourceSpec, name: str, role: str) -> tuple[list[str], dict[str, Any]]:
    path = Path(str(spec_path)).expanduser()
    rows, digest = [], hashlib.sha256()
    files = _files(path)
    for f in files:
        rows += _read(f, spec.format, spec.field, name, role)
        digest.update(f.read_bytes())
    if not rows:
        raise DataError(f"{name} {role} split: {path} holds no documents")
    return rows, {"source": "local", "location": str(path), "files": len(files), "sha256": digest.hexdigest()}


def _hub(spec: SourceSpec, name: str, role: str) -> tuple[list[str], dict[str, Any]]:
    import datasets

    ds = datasets.load_dataset(spec.hub, spec.name, split=spec.split)
    if spec.field not in ds.column_names:
        raise DataError(f"{name} {role} split: the Hub dataset {spec.hub} has no {spec.field!r} column "
                        f"(columns: {ds.column_names})")
    return list(ds[spec.field]), {"source": "hub", "location": spec.hub, "name": spec.name, "split": spec.split}


def load_custom(name: str, role: str, spec: dict[str, Any]):
    """The rows of the user's domain ``name`` for ``role`` (``calibration`` or ``evaluation``); ``spec`` is
    its ``data.sources`` entry (checked by :func:`check_source`)."""
    spec = SourceSpec(**spec)
    if getattr(spec, role):
        rows, where = _local(getattr(spec, role), spec, name, role)
        return TextSource(rows, {"dataset": name, "role": role, **where, "split_rule": "given", "documents": len(rows),
                                 "stand_in": None})
    rows, where = _hub(spec, name, role) if spec.hub else _local(spec.path, spec, name, role)
    holdout = spec.holdout
    picked = [r for i, r in enumerate(rows) if (i % holdout == holdout - 1) == (role == "evaluation")]
    if not picked:
        raise DataError(f"{name} {role} split: {len(rows)} document(s) in {where['location']} leave none for {role} "
                        f"with data.sources.{name}.holdout={holdout}; give more documents or separate files")
    return TextSource(picked, {"dataset": name, "role": role, **where, "documents": len(picked),
                               "split_rule": f"every {holdout}th document (index % {holdout} == {holdout - 1}) is "
                                             "evaluation, the rest calibration", "stand_in": None})
