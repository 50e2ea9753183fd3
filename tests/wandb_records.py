"""Read back a W&B offline run file (``run-*.wandb``): a LevelDB-style log of protobuf records."""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768
HEADER = 7  # file header ":W&B" + magic + version; each record header: crc32, length, type


def _payloads(path: Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""
        elif kind == 0 and length == 0:
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0


def read_run(path: Path) -> dict:
    """History rows, final summary, config, and run metadata (group, job type, tags)."""
    from wandb.proto import wandb_internal_pb2 as pb

    out = {"history": [], "summary": {}, "config": {}, "run": {}}
    for payload in _payloads(path):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in record.history.item})
        elif kind == "summary":
            out["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in record.summary.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "run":
            out["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
            out["run"] = {"group": record.run.run_group, "job_type": record.run.job_type, "tags": list(record.run.tags),
                          "project": record.run.project, "display_name": record.run.display_name}
    return out
