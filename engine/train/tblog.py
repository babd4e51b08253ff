"""TensorBoard scalars of a run (`log.tensorboard = true`), written without tensorboard installed.

Files go to `runs/<name>/tensorboard/events.out.tfevents.<time>.<host>.<pid>.<n>`, so
`tensorboard --logdir <workspace>/runs` lists every run as `<name>/tensorboard`.

The format is TensorBoard's: a TFRecord stream (uint64 length, masked CRC32C of the length, the
data, masked CRC32C of the data) of protobuf `Event` messages, encoded here by hand. The first event
carries `file_version = "brain.Event:2"`; the others a `Summary` of `simple_value` scalars.

Tags follow kohya sd-scripts so dashboards and habits carry over:

    loss/current     the step's loss (the mean over grad_accum micro-batches), as loss.csv `loss`
    loss/average     the exponential moving average of loss.csv `loss_ema` (0.9 decay), not kohya's
                     per-epoch running mean: it is the curve the terminal chart and loss.csv show
    lr/unet          the UNet adapters' learning rate at that step
    lr/textencoder   the text-encoder adapters' rate, whenever the text encoder trains (kohya logs
                     both rates then, equal or not)
    lr/d*lr/<group>  Prodigy's effective rate (d times lr), when the optimizer has one
    loss/validation  the validation loss, at validation steps (step 0 included on a fresh run)

Each step's records go out in one write and are flushed at once: a crash loses at most the record
being written, and a torn last record is skipped by TensorBoard's reader and by `read_events` here.

A fresh run removes the folder's old event files (as loss.csv starts over). A resumed run appends a
new file that opens with a SessionLog START event at the first step it will train: TensorBoard then
discards the points the interrupted attempt logged from that step on (its "orphaned data" purge), so
the steps between the resumed checkpoint and the crash are not drawn twice.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

FOLDER = "tensorboard"
FILE_PREFIX = "events.out.tfevents."
FILE_VERSION = "brain.Event:2"
_SESSION_START = 1  # SessionLog.SessionStatus.START
_MASK_DELTA = 0xA282EAD8

# ---- CRC32C (Castagnoli), reflected polynomial 0x82F63B78 ---------------------------------------------


def _crc_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15, add a constant (a CRC of CRC-bearing data stays sane)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    """One TFRecord: the framing TensorBoard reads around each serialized Event."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


# ---- protobuf encoding (only what Event needs) -------------------------------------------------------


def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # int64 negatives are ten-byte two's complement varints
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def _scalar_value(tag: str, value: float) -> bytes:
    # Summary.Value: tag = 1 (string), simple_value = 2 (float, fixed32)
    return _length_delimited(1, tag.encode("utf-8")) + _key(2, 5) + struct.pack("<f", value)


def encode_event(
    wall_time: float,
    step: int,
    *,
    file_version: str | None = None,
    scalars: dict[str, float] | None = None,
    session_start: bool = False,
) -> bytes:
    """A serialized Event: wall_time = 1 (double), step = 2 (int64), then one of file_version = 3,
    summary = 5 (Summary.value = 1, repeated) or session_log = 7 (SessionLog.status = 1)."""
    if (file_version is not None) + bool(scalars) + session_start > 1:
        # They share a protobuf oneof: a reader would keep only the last one.
        raise ValueError("an Event holds one of file_version, scalars and session_start")
    out = _key(1, 1) + struct.pack("<d", wall_time)
    if step:
        out += _key(2, 0) + _varint(step)
    if file_version is not None:
        out += _length_delimited(3, file_version.encode("utf-8"))
    if scalars:
        summary = b"".join(_length_delimited(1, _scalar_value(t, v)) for t, v in scalars.items())
        out += _length_delimited(5, summary)
    if session_start:
        out += _length_delimited(7, _key(1, 0) + _varint(_SESSION_START))
    return out


# ---- reading back (tests and tools; TensorBoard itself needs none of this) ---------------------------


def read_records(path: Path) -> Iterator[bytes]:
    """The data of each complete, intact record; stops at a torn or corrupt one (a crash's tail)."""
    data = Path(path).read_bytes()
    pos = 0
    while pos + 12 <= len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        end = pos + 12 + length + 4
        if header_crc != masked_crc32c(header) or end > len(data):
            return
        payload = data[pos + 12 : end - 4]
        if struct.unpack("<I", data[end - 4 : end])[0] != masked_crc32c(payload):
            return
        yield payload
        pos = end


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """(field, wire type, value) of a protobuf message; varints as int, fixed as raw bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def decode_event(data: bytes) -> dict:
    """{"wall_time", "step", "file_version"?, "scalars": {tag: value}, "session_start"?}."""
    event: dict = {"wall_time": 0.0, "step": 0, "scalars": {}}
    for field, _wire, value in _fields(data):
        if field == 1:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif field == 2:
            event["step"] = value - (1 << 64) if value >= 1 << 63 else value
        elif field == 3:
            event["file_version"] = value.decode("utf-8")
        elif field == 5:
            for f, _w, item in _fields(value):
                if f != 1:
                    continue
                parts = {f2: v2 for f2, _w2, v2 in _fields(item)}
                if 1 in parts and 2 in parts:
                    event["scalars"][parts[1].decode("utf-8")] = struct.unpack("<f", parts[2])[0]
        elif field == 7:
            status = dict((f, v) for f, _w, v in _fields(value)).get(1)
            event["session_start"] = status == _SESSION_START
    return event


def event_files(folder: Path) -> list[Path]:
    """The folder's event files in the order TensorBoard reads them (by name: time first)."""
    folder = Path(folder)
    return sorted(folder.glob(FILE_PREFIX + "*")) if folder.is_dir() else []


def read_events(path: Path) -> list[dict]:
    return [decode_event(r) for r in read_records(path)]


# ---- the run's log -----------------------------------------------------------------------------------


def _lr_tag(group_name: str) -> str:
    # kohya's names: "lr/unet", "lr/textencoder"
    return "textencoder" if group_name.startswith("text_encoder") else group_name


class TensorBoardLog:
    """The event file of one training process; does nothing when `enabled` is false."""

    def __init__(self, folder: Path, *, resume_step: int | None = None, enabled: bool = True) -> None:
        self.path: Path | None = None
        self._fh = None
        if not enabled:
            return
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            for old in event_files(folder):
                old.unlink(missing_ok=True)
        self.path = self._new_path(folder)
        self._fh = open(self.path, "ab")  # noqa: SIM115 (held open for the run, closed by close())
        first = [encode_event(time.time(), 0, file_version=FILE_VERSION)]
        if resume_step is not None:
            first.append(encode_event(time.time(), resume_step + 1, session_start=True))
        self._write(first)

    @staticmethod
    def _new_path(folder: Path) -> Path:
        # The pid and a counter keep two files of the same second apart (a quick stop and resume).
        stem = f"{FILE_PREFIX}{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        n = 0
        while (folder / f"{stem}.{n}").exists():
            n += 1
        return folder / f"{stem}.{n}"

    def _write(self, events: Iterable[bytes]) -> None:
        if self._fh is None:
            return
        self._fh.write(b"".join(record(e) for e in events))
        self._fh.flush()

    def step(
        self,
        step: int,
        *,
        loss: float | None = None,
        loss_average: float | None = None,
        param_groups: Iterable[dict] = (),
        val_loss: float | None = None,
    ) -> None:
        """The scalars of one optimizer step (or of the step-0 validation: loss None)."""
        if self._fh is None:
            return
        scalars: dict[str, float] = {}
        if loss is not None:
            scalars["loss/current"] = float(loss)
        if loss_average is not None:
            scalars["loss/average"] = float(loss_average)
        for i, group in enumerate(param_groups):
            name = _lr_tag(str(group.get("name", f"group{i}")))
            scalars[f"lr/{name}"] = float(group["lr"])
            if "d" in group:
                scalars[f"lr/d*lr/{name}"] = float(group["d"]) * float(group["lr"])
        if val_loss is not None:
            scalars["loss/validation"] = float(val_loss)
        if scalars:
            self._write([encode_event(time.time(), step, scalars=scalars)])

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
