"""Prepared epochs on local disk, for the exactly-once RabbitMQ sink.

One file per prepared epoch in a directory of its own: a sink instance
``prepare``s an epoch by writing every output of it here (fsync'd, then
renamed into place, then the directory fsync'd), so that an epoch the
engine decides to commit can be published after a crash of this process.
The file is removed once the epoch is committed or aborted.

A file holds a header line and the outputs::

    WLEPOCH1\\n
    {"format": 1, "epoch": E, "incarnation": I, "id": "<hex>", "count": N,
     "bytes": B, "sha256": "<hex of the records>"}\\n
    N records: key length, payload length (uint32), event time (int64),
    big-endian, then the key and payload bytes

``id`` is random, drawn when the epoch is prepared: it names this one
preparation, and the commit marker in the broker repeats it, which is how
the sink tells whether this very file was committed (see
rabbitmq_sink_2pc.py). A file under its final name is complete (it was
renamed there after its fsync); a checksum failure means the disk lost or
changed it, and is an error, never a silent skip.

The directory is locked (``flock`` on ``DIR/.lock``) for as long as a store
is open, so that two processes never share one instance's epochs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import struct
from typing import List, NamedTuple, Optional, Sequence

from wallaroo.connector import Output

__all__ = ["EpochStore", "PreparedEpoch", "StoreError"]

MAGIC = b"WLEPOCH1\n"
_RECORD = struct.Struct(">IIq")
_NAME = re.compile(r"^epoch-(\d{20})$")


class StoreError(Exception):
    """The state directory cannot be used, or a file in it is damaged."""


class PreparedEpoch(NamedTuple):
    """One prepared epoch. ``outputs`` is empty when only the header was
    read (``EpochStore.list``)."""

    epoch: int
    incarnation: int
    id: str
    count: int
    outputs: Sequence[Output] = ()


class EpochStore:
    """The prepared epochs of one sink instance, in ``directory``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        try:
            os.makedirs(directory, exist_ok=True)
            self._lock_fd: Optional[int] = os.open(
                os.path.join(directory, ".lock"), os.O_RDWR | os.O_CREAT, 0o644
            )
        except OSError as e:
            raise StoreError(f"cannot use the state directory {directory}: {e}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise StoreError(
                f"the state directory {directory} is in use by another process "
                f"(a second sink with the same --state-dir and instance?)"
            ) from None
        # A temporary file is an interrupted prepare, which was never
        # answered: the engine does not count on it.
        for name in os.listdir(directory):
            if name.startswith(".epoch-") and name.endswith(".tmp"):
                os.unlink(os.path.join(directory, name))

    def close(self) -> None:
        """Releases the directory lock (the files stay)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _path(self, epoch: int) -> str:
        return os.path.join(self.directory, f"epoch-{epoch:020d}")

    def save(self, epoch: int, incarnation: int, outputs: Sequence[Output]) -> PreparedEpoch:
        """Writes the epoch durably (file and directory fsync'd) under a new
        id, replacing an earlier preparation of the same epoch."""
        body = bytearray()
        for o in outputs:
            body += _RECORD.pack(len(o.key), len(o.payload), o.event_time)
            body += o.key
            body += o.payload
        prepared = PreparedEpoch(epoch, incarnation, secrets.token_hex(16), len(outputs))
        header = {
            "format": 1,
            "epoch": epoch,
            "incarnation": incarnation,
            "id": prepared.id,
            "count": prepared.count,
            "bytes": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        final = self._path(epoch)
        tmp = os.path.join(self.directory, f".epoch-{epoch:020d}.tmp")
        with open(tmp, "wb") as f:
            f.write(MAGIC)
            f.write(json.dumps(header, sort_keys=True).encode() + b"\n")
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        self._sync_directory()
        return prepared

    def load(self, epoch: int) -> Optional[PreparedEpoch]:
        """The epoch with its outputs, or None when it is not here. Raises
        StoreError when the file is damaged."""
        try:
            with open(self._path(epoch), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        header, body = self._split(epoch, data)
        if len(body) != header["bytes"] or hashlib.sha256(body).hexdigest() != header["sha256"]:
            raise StoreError(f"epoch {epoch}: {self._path(epoch)} is damaged (checksum)")
        outputs: List[Output] = []
        pos = 0
        try:
            for _ in range(header["count"]):
                klen, plen, event_time = _RECORD.unpack_from(body, pos)
                pos += _RECORD.size
                key = bytes(body[pos:pos + klen])
                payload = bytes(body[pos + klen:pos + klen + plen])
                pos += klen + plen
                outputs.append(Output(key, payload, event_time))
        except struct.error:
            raise StoreError(f"epoch {epoch}: {self._path(epoch)} is damaged (records)") from None
        return PreparedEpoch(epoch, header["incarnation"], header["id"], header["count"], outputs)

    def list(self) -> List[PreparedEpoch]:
        """Every prepared epoch (headers only), oldest first."""
        out = []
        for name in sorted(os.listdir(self.directory)):
            m = _NAME.match(name)
            if m is None:
                continue
            epoch = int(m.group(1))
            try:
                with open(os.path.join(self.directory, name), "rb") as f:
                    data = f.read(len(MAGIC) + 4096)
            except FileNotFoundError:
                continue
            header, _ = self._split(epoch, data)
            out.append(PreparedEpoch(epoch, header["incarnation"], header["id"], header["count"]))
        return out

    def remove(self, epoch: int) -> bool:
        """Removes the epoch (durably); False when it was not here."""
        try:
            os.unlink(self._path(epoch))
        except FileNotFoundError:
            return False
        self._sync_directory()
        return True

    def _split(self, epoch: int, data: bytes):
        path = self._path(epoch)
        end = data.find(b"\n", len(MAGIC))
        if not data.startswith(MAGIC) or end < 0:
            raise StoreError(f"epoch {epoch}: {path} is not an epoch file")
        try:
            header = json.loads(data[len(MAGIC):end])
            if not isinstance(header, dict):
                raise ValueError("not an object")
            if header.get("format") != 1 or header.get("epoch") != epoch:
                raise ValueError("format or epoch")
            for field in ("incarnation", "count", "bytes"):
                if not isinstance(header.get(field), int):
                    raise ValueError(field)
        except ValueError as e:
            raise StoreError(f"epoch {epoch}: {path} has a bad header ({e})") from None
        return header, data[end + 1:]

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
