"""Text as rows: the record of one split (:class:`TextSource`), and local files read as the Hugging Face
loaders would give their rows, with errors that name the dataset, the split, the file and the line."""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from copal_exp.errors import DataError


@dataclass
class TextSource:
    """The rows (or documents) of one split of one dataset, and where they came from."""

    rows: list[str]
    provenance: dict[str, Any] = field(default_factory=dict)


def _lines(path: Path):
    """``(line number, raw bytes)`` of a text file, gzip-compressed when its name ends in ``.gz``."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        yield from enumerate(fh, start=1)


def read_rows(path: Path, reader: str, dataset: str = "", role: str = "", field: str = "text") -> list[str]:
    """Rows of a local file as the Hub's loader would give them.

    A damaged file (truncated gzip or JSON line, bytes that are not UTF-8, a row without the text
    field, no rows at all) raises :class:`DataError` naming the dataset, split, file and line.
    """
    where = f"{dataset} {role} split: {path}" if dataset else str(path)
    if reader not in ("jsonl", "lines", "sentences"):
        raise ValueError(f"unknown reader {reader!r}")
    line_no = 0
    rows: list[str] = []

    def decode(raw: bytes, first_line: int) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            at = first_line + raw[: exc.start].count(b"\n")
            raise DataError(f"{where}: line {at} is not valid UTF-8 (bytes {raw[exc.start:exc.start + 4]!r})") from None

    try:
        if reader == "jsonl":
            for line_no, raw in _lines(path):
                line = decode(raw, line_no)
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{where}: line {line_no} is not a complete JSON object ({exc.msg} at column "
                                    f"{exc.colno}; a truncated or damaged file?)") from None
                field_name = field
                if not isinstance(record, dict) or not isinstance(record.get(field_name), str):
                    keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                    raise DataError(f"{where}: line {line_no} has no {field_name!r} field holding text (found {keys})")
                rows.append(record[field_name])
        else:
            chunks = []
            for line_no, raw in _lines(path):
                chunks.append(raw)
            lines = decode(b"".join(chunks), 1).splitlines(keepends=True)
            if reader == "lines":  # the wikitext loader: one row per line, blank lines become ""
                rows = [line if line.strip() else "" for line in lines]
            else:  # ptb_text_only: sentence = line.strip()
                rows = [line.strip() for line in lines]
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{where}: the gzip stream is damaged after line {line_no} ({type(exc).__name__}: {exc}); "
                        "download the file again") from None
    except OSError as exc:
        raise DataError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if not any(row.strip() for row in rows):
        raise DataError(f"{where}: the file holds no text ({'empty' if line_no == 0 else 'only blank rows'})")
    return rows
