"""The user's own domains: ``data.sources.<name>`` makes ``<name>`` usable in ``datasets=``.

A source is a local file or folder (plain text, JSON lines, JSON, CSV/TSV, parquet, each but parquet
also gzip-compressed as ``.gz``; ``format: auto`` tells them by suffix and refuses a suffix it does not
know) or a Hugging Face dataset id (``hub: ORG/NAME`` with ``split`` and ``name``), with the text in
``field`` (default ``text``; plain text files give one document per blank-line-separated block). A
folder is read recursively in name order; hidden files and folders (``.name``) and files of other
suffixes are skipped, and the record lists what was read and what was skipped. The calibration and evaluation parts are given separately (``calibration: …`` and
``evaluation: …``, each a path) or split from one source deterministically: every ``holdout``-th
document (default 5: documents 4, 9, 14, …) is evaluation, the rest calibration, so the two never
overlap (a document that occurs twice in the corpus can still land on both sides: a warning says
how many). Given separately, the two parts must not be the same file nor share a document. Both parts are joined with blank lines; calibration segments are drawn from the joined text
as for WikiText-2. Provenance (location, format, documents, split rule, SHA-256 of local files) is
recorded like the built-in datasets'.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

from copal_exp.data.files import TextSource, read_rows
from copal_exp.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FORMATS = {".txt": "text", ".text": "text", ".md": "text", ".jsonl": "jsonl", ".json": "json", ".csv": "csv",
           ".tsv": "tsv", ".parquet": "parquet"}
COMPRESSED = ".gz"  # any format but parquet may be gzip-compressed: corpus.jsonl.gz
ALLOWED_SUFFIXES = ", ".join([*FORMATS, *(f"{s}{COMPRESSED}" for s, f in FORMATS.items() if f != "parquet")])


def format_of(path: Path) -> str | None:
    """The format ``format: auto`` reads ``path`` as, from its suffix (``.jsonl.gz`` is JSON lines, gzip); ``None``
    for a suffix it does not know."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes and suffixes[-1] == COMPRESSED:
        fmt = FORMATS.get(suffixes[0]) if len(suffixes) == 2 else None
        return None if fmt == "parquet" else fmt
    return FORMATS.get(suffixes[-1]) if suffixes else None


def hidden(path: Path, folder: Path) -> bool:
    """A hidden file, or a file in a hidden folder, below ``folder`` (editor swap files, ``.git``, ``.DS_Store``)."""
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


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
    fmt = spec.get("format", SourceSpec.format)
    if fmt not in ("auto", *sorted(set(FORMATS.values()))):
        raise ConfigError(f"{where}.format={fmt!r}: allowed values are auto, {', '.join(sorted(set(FORMATS.values())))}")
    for key in ("path", "calibration", "evaluation"):
        if not spec.get(key):
            continue
        path = Path(str(spec[key])).expanduser()
        if not path.exists():
            raise ConfigError(f"{where}.{key}={spec[key]}: no such file or folder")
        if path.is_file() and fmt == "auto" and format_of(path) is None:
            raise ConfigError(f"{where}.{key}={spec[key]}: format auto does not know the suffix "
                              f"{''.join(path.suffixes[-2:]) or '(none)'!r}; allowed suffixes: {ALLOWED_SUFFIXES} "
                              f"(or set {where}.format to one of {', '.join(sorted(set(FORMATS.values())))})")
    if spec.get("calibration") and spec.get("evaluation"):
        same = Path(str(spec["calibration"])).expanduser().resolve() == Path(str(spec["evaluation"])).expanduser().resolve()
        if same:
            raise ConfigError(f"{where}: calibration= and evaluation= are the same {'folder' if Path(str(spec['calibration'])).is_dir() else 'file'} "
                              f"({spec['calibration']}): the model would be scored on the text it was pruned with. Give "
                              f"two different files, or path= alone to split one deterministically ({where}.holdout)")
    holdout = spec.get("holdout", SourceSpec.holdout)
    if isinstance(holdout, bool) or not isinstance(holdout, int) or holdout < 2:
        raise ConfigError(f"{where}.holdout={holdout!r}: must be an integer at least 2")


def _files(path: Path, fmt: str) -> tuple[list[Path], list[dict[str, str]]]:
    """The files a source reads, and those of its folder it skips (with why)."""
    if not path.is_dir():
        return [path], []
    read, skipped = [], []
    for p in sorted(p for p in path.rglob("*") if p.is_file()):
        name = str(p.relative_to(path))
        if hidden(p, path):
            skipped.append({"file": name, "why": "hidden"})
        elif fmt == "auto" and format_of(p) is None:
            skipped.append({"file": name, "why": f"suffix {''.join(p.suffixes[-2:]) or '(none)'!r} is not a known format"})
        else:
            read.append(p)
    if not read:
        raise DataError(f"{path}: no file of a known format in this folder (suffixes: {ALLOWED_SUFFIXES}; "
                        f"{len(skipped)} skipped: {', '.join(f['file'] for f in skipped[:5]) or 'none'})")
    return read, skipped


def _text(path: Path, name: str, role: str) -> str:
    """The file's text as UTF-8, gunzipped first when it ends in ``.gz``; errors name the file and line."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix.lower() == COMPRESSED else path.read_bytes()
    except (EOFError, gzip.BadGzipFile, OSError) as exc:
        raise DataError(f"{name} {role} split: {path}: not a readable gzip file ({exc}); download it again") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{name} {role} split: {path}: line {line} is not valid UTF-8") from None


def _read(path: Path, fmt: str, field: str, name: str, role: str) -> list[str]:
    fmt = format_of(path) if fmt == "auto" else fmt
    if fmt == "text":
        text = _text(path, name, role)
        return [block.strip() for block in text.replace("\r\n", "\n").split("\n\n") if block.strip()]
    if fmt == "jsonl":
        return read_rows(path, "jsonl", name, role, field=field)
    if fmt in ("csv", "tsv"):
        reader = csv.DictReader(io.StringIO(_text(path, name, role), newline=""), delimiter="," if fmt == "csv" else "\t")
        try:
            records = list(reader)
        except csv.Error as exc:
            raise DataError(f"{name} {role} split: {path}: line {reader.line_num} is not valid {fmt.upper()} ({exc})") from None
        if field not in (reader.fieldnames or []):
            raise DataError(f"{name} {role} split: {path} has no {field!r} column (columns: {reader.fieldnames}); "
                            f"set data.sources.{name}.field")
    elif fmt == "json":
        try:
            records = json.loads(_text(path, name, role))
        except json.JSONDecodeError as exc:
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
    files, skipped = _files(path, spec.format)
    for f in files:
        rows += _read(f, spec.format, spec.field, name, role)
        digest.update(f.read_bytes())
    if not rows:
        raise DataError(f"{name} {role} split: {path} holds no documents")
    where = {"source": "local", "location": str(path), "files": len(files), "sha256": digest.hexdigest()}
    if path.is_dir():
        where |= {"read": [str(f.relative_to(path)) for f in files], "skipped": skipped}
        if skipped:
            log.warning("%s %s split: skipped %d file(s) of %s (%s); the record lists them", name, role, len(skipped),
                        path, ", ".join(f"{f['file']}: {f['why']}" for f in skipped[:3]) + (", …" if len(skipped) > 3 else ""))
    return rows, where


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


def check_overlap(name: str, calibration: TextSource, evaluation: TextSource) -> None:
    """Calibration and evaluation of the user's domain ``name`` share no document: given as two files, a shared
    document is refused (the model would be scored on text it was pruned with); split from one source, a
    document that occurs twice in the corpus can land on both sides, which a warning counts."""
    seen = {" ".join(doc.split()) for doc in calibration.rows if doc.strip()}
    shared = [doc for doc in evaluation.rows if doc.strip() and " ".join(doc.split()) in seen]
    if not shared:
        return
    example = " ".join(shared[0].split())[:60]
    if evaluation.provenance.get("split_rule") == "given":
        raise DataError(f"{name}: {len(shared)} of the {len(evaluation.rows)} evaluation documents (in "
                        f"{evaluation.provenance['location']}) also occur in the calibration part "
                        f"({calibration.provenance['location']}), e.g. {example!r}: the model would be scored on text it "
                        f"was pruned with. Remove them from one of the files")
    log.warning("%s: %d of the %d evaluation documents also occur among the calibration documents (the corpus %s "
                "holds them more than once), e.g. %r: de-duplicate it for a clean held-out split", name, len(shared),
                len(evaluation.rows), evaluation.provenance.get("location"), example)
