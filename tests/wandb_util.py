"""Reading a W&B offline run's transaction log (`run-<id>.wandb`) in tests.

The file is W&B's LevelDB-log-style record stream (wandb/sdk/internal/datastore.py in wandb < 0.22;
the Go core writes the same format): a 7-byte header (":W&B", magic 0xBEE1, version 0), then 32 KiB
blocks of chunks, each a 7-byte header (CRC32, little-endian uint16 length, type 1 full / 2 first /
3 middle / 4 last) and data; a record's data is a serialized `wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024


def records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", data[:7]
    pos, buf, out = 7, b"", []
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


def offline_run(run_dir: Path) -> dict:
    """{"history": [{key: value}], "config": {key: value}, "summary": {key: value}, "files": dir}
    of the newest offline run under run_dir/wandb."""
    runs = sorted((Path(run_dir) / "wandb").glob("offline-run-*"))
    assert runs, f"no offline W&B run under {run_dir}"
    folder = runs[-1]
    history, config, summary = [], {}, {}
    for r in records(next(folder.glob("run-*.wandb"))):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            history.append(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            )
        elif kind == "run":
            config.update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "summary":
            summary.update({i.key: json.loads(i.value_json) for i in r.summary.update if i.key})
    return {"history": history, "config": config, "summary": summary, "files": folder / "files"}
