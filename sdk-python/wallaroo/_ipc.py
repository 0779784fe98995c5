"""nng's ipc framing, spoken over a plain unix socket.

A runner talks to the engine over an ``ipc://`` address. Going through
pynng costs every message two hops between threads (the caller's and nng's
own), which a Python runner answering batch by batch pays on every
round trip. The framing itself is small, and the engine speaks it from its
loop (engine/ipclink.c), so this module speaks it too: one blocking unix
stream socket, no thread.

The framing (nng's ipc transport, pair1 protocol): each side first sends
8 bytes, ``0 'S' 'P' 0``, its protocol as a big-endian u16 (pair1 is 0x11)
and ``0 0``; every message is then the byte 1, its length as a big-endian
u64 and the payload, which for pair1 begins with a 4-byte big-endian hop
count (1: the sender counts itself). The length, hop count included, is
what the receiver's size limit applies to, as in nng.

The peer may be the engine or any nng pair1 listener (the SDK's tests use
pynng's).
"""

from __future__ import annotations

import enum
import socket
import struct
import time
from typing import NoReturn, Optional

PAIR1_PROTO = 0x11
HEADER = b"\x00SP\x00" + struct.pack(">H", PAIR1_PROTO) + b"\x00\x00"
_FRAME_HEAD = struct.Struct(">BQI")  # type byte, length, pair1 hop count
_FRAME_HEAD_LEN = _FRAME_HEAD.size  # 13
_MSG_TYPE = 1
# pair1's hop count before each message; the receiver's size limit counts
# it, so a frame may be at most max - 4 bytes. The SDK's one definition.
PAIR1_HEADER = 4
# nng's pair1 drops a message that has crossed more devices than this.
_MAX_HOPS = 8
# Bytes asked of the kernel per read: a whole batch of small events in one
# call, without holding much memory. Reads go into one buffer kept for the
# connection's life: ``sock.recv(n)`` allocates n bytes per call, and at this
# size the C library maps and unmaps fresh pages for each (four system calls
# and page faults per batch, a quarter of a runner's time per batch on a
# busy 2-core machine).
_READ_CHUNK = 256 * 1024

# How long to wait between attempts to connect, growing from the first
# figure to the second (nng's dialer defaults are similar).
_RETRY_MIN = 0.02
_RETRY_MAX = 0.5


class LinkLost(Exception):
    """The connection is gone, or the peer broke the framing (then
    ``reason`` says how)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _State(enum.Enum):
    CLOSED = "not connected"  # before connect() succeeds, or after a failure
    UP = "connected"  # headers exchanged; messages flow
    LOST = "lost"  # the peer closed, or broke the framing: never reconnects


def path_of(address: str) -> Optional[str]:
    """The socket path of an ``ipc://`` address, or None for another
    scheme (which this module does not speak)."""
    if not address.startswith("ipc://"):
        return None
    return address[len("ipc://"):]


class IpcPair:
    """One pair1 connection to an ipc:// listener, used from one thread."""

    def __init__(self, path: str, max_message_bytes: int) -> None:
        self.path = path
        self.max_message_bytes = max_message_bytes
        self.state = _State.CLOSED
        self._sock: Optional[socket.socket] = None
        self._buf = bytearray()
        self._need = 0  # bytes of the message being read, head included
        self._chunk = memoryview(bytearray(_READ_CHUNK))

    # -- connecting --

    def connect(self, timeout: float) -> bool:
        """Connect and exchange headers within ``timeout`` seconds.

        Retries while nobody listens yet. False when the time ran out;
        raises ``LinkLost`` when a listener answered with something that is
        not nng's pair1 framing.
        """
        deadline = time.monotonic() + timeout
        delay = _RETRY_MIN
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                sock.connect(self.path)
                sock.sendall(HEADER)
                peer = self._read_exactly(sock, len(HEADER))
            except (FileNotFoundError, ConnectionRefusedError, socket.timeout):
                sock.close()
            except OSError as exc:
                sock.close()
                raise LinkLost(f"{self.path}: {exc}") from None
            else:
                if peer is None:
                    # Accepted, then closed before its header: the listener
                    # went away (or refused a second peer). Try again.
                    sock.close()
                elif peer[:4] != HEADER[:4] or peer[6:] != b"\x00\x00":
                    sock.close()
                    raise LinkLost(f"{self.path}: the listener sent no nng (SP) header")
                elif struct.unpack(">H", peer[4:6])[0] != PAIR1_PROTO:
                    sock.close()
                    proto = struct.unpack(">H", peer[4:6])[0]
                    raise LinkLost(
                        f"{self.path}: the listener speaks SP protocol 0x{proto:x}, "
                        f"not pair1 (0x{PAIR1_PROTO:x})"
                    )
                else:
                    # Blocking from now on: a loss shows up as end of
                    # stream at once, so nothing needs to poll.
                    sock.settimeout(None)
                    self._sock = sock
                    self.state = _State.UP
                    return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(delay, left))
            delay = min(delay * 2, _RETRY_MAX)

    @staticmethod
    def _read_exactly(sock: socket.socket, n: int) -> Optional[bytes]:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    # -- messages --

    def recv(self) -> bytes:
        """The next message (its payload, without the pair1 header); blocks
        until one arrives. Raises ``LinkLost`` once the connection is gone
        (messages that arrived before are returned first)."""
        while True:
            msg = self._take()
            if msg is not None:
                return msg
            self._fill()

    def _take(self) -> Optional[bytes]:
        buf = self._buf
        if self._need == 0:
            if len(buf) < _FRAME_HEAD_LEN:
                return None
            kind, length, hops = _FRAME_HEAD.unpack_from(buf)
            if kind != _MSG_TYPE:
                self._lose(f"message type {kind} is not nng's (1)")
            if length < PAIR1_HEADER:
                self._lose(f"a message of {length} bytes has no pair1 header")
            if length > self.max_message_bytes:
                # nng closes the connection on a message over its limit.
                self._lose(
                    f"a message of {length} bytes is over the limit of "
                    f"{self.max_message_bytes} (WALLAROO_MAX_MESSAGE_BYTES)"
                )
            if hops > 0xFF:
                self._lose(f"pair1 header 0x{hops:x} is malformed")
            if hops > _MAX_HOPS:
                self._lose(f"a message crossed {hops} hops, over pair1's {_MAX_HOPS}")
            self._need = 9 + length
        if len(buf) < self._need:
            return None
        msg = bytes(buf[_FRAME_HEAD_LEN:self._need])
        del buf[:self._need]
        self._need = 0
        return msg

    def _fill(self) -> None:
        if self.state is not _State.UP or self._sock is None:
            raise LinkLost("the connection is closed")
        try:
            n = self._sock.recv_into(self._chunk)
        except OSError as exc:
            self._lose(str(exc))
        if not n:
            self._lose("the peer closed the connection")
        self._buf += self._chunk[:n]

    def send(self, data: bytes) -> None:
        """Send one message; blocks while the peer is not reading. Raises
        ``LinkLost`` when the connection is gone."""
        if self.state is not _State.UP or self._sock is None:
            raise LinkLost("the connection is closed")
        head = _FRAME_HEAD.pack(_MSG_TYPE, len(data) + PAIR1_HEADER, 1)
        try:
            # Two buffers, one system call, no copy of the payload.
            sent = self._sock.sendmsg([head, data])
            if sent < len(head):
                self._sock.sendall(head[sent:])
                sent = len(head)
            if sent < len(head) + len(data):
                # A partial write: the socket buffer filled up.
                self._sock.sendall(memoryview(data)[sent - len(head):])
        except OSError as exc:
            self._lose(str(exc))

    def _lose(self, reason: str) -> NoReturn:
        self.state = _State.LOST
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        raise LinkLost(reason)

    @property
    def lost(self) -> bool:
        return self.state is _State.LOST

    def wait_closed(self, seconds: float) -> None:
        """Wait up to ``seconds`` for the peer to close the connection,
        reading (and dropping) whatever it still sends."""
        if self._sock is None:
            return
        deadline = time.monotonic() + seconds
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._sock.settimeout(left)
                if not self._sock.recv(_READ_CHUNK):
                    return
        except OSError:
            return

    def close(self) -> None:
        if self.state is _State.UP:
            self.state = _State.LOST
        if self._sock is not None:
            self._sock.close()
            self._sock = None
