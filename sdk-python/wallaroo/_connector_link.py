"""One nng pair1 connection from a connector to the engine.

A :class:`Link` owns a socket that serves exactly one connection: it dials,
refuses any second pipe, and once that connection is gone it is closed and
replaced by a new ``Link`` (reconnecting on the same socket could deliver
frames queued for the old session to the new one, before its Hello).

Everything here runs on the connector's single thread, except the three
pipe callbacks, which nng calls on its own threads and which only update
the connection flags under a lock.
"""

from __future__ import annotations

import select
import threading
import time
from typing import Optional

import pynng

# Messages the socket queues each way. The engine bounds what it has in
# flight (credits, max_inflight_batches), so this is never the limit.
SOCKET_BUFFER_MESSAGES = 64


# How long a blocked send waits before checking that the engine is still
# there (it then tries again).
_SEND_SLICE_MS = 100


class ConnectionLost(Exception):
    """The connection to the engine is gone (or must be given up)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Link:
    """A pair1 socket dialing ``address``, used for one connection only."""

    def __init__(
        self,
        address: str,
        max_message_bytes: int,
        retry_min: float,
        retry_max: float,
    ) -> None:
        """Start dialing (in the background: nng retries until it connects).

        Raises ``pynng.NNGException`` when the address cannot be dialed at
        all (a malformed URL, an unknown scheme).
        """
        self.address = address
        self._lock = threading.Lock()
        self._ever_connected = False
        self._pipes = 0
        self._connected = threading.Event()
        self._gone = threading.Event()
        self.sock = pynng.Pair1(
            recv_max_size=max_message_bytes,
            recv_buffer_size=SOCKET_BUFFER_MESSAGES,
            send_buffer_size=SOCKET_BUFFER_MESSAGES,
            send_timeout=_SEND_SLICE_MS,
            reconnect_time_min=max(1, int(retry_min * 1000)),
            reconnect_time_max=max(1, int(retry_max * 1000)),
        )
        self.sock.add_pre_pipe_connect_cb(self._on_pre_connect)
        self.sock.add_post_pipe_connect_cb(self._on_connect)
        self.sock.add_post_pipe_remove_cb(self._on_remove)
        self._recv_fd: Optional[int] = None
        try:
            self.sock.dial(address, block=False)
        except BaseException:
            self.sock.close()
            raise

    # -- pipe callbacks (nng threads) --

    def _on_pre_connect(self, pipe: pynng.Pipe) -> None:
        with self._lock:
            refuse = self._ever_connected
        if refuse:
            pipe.close()

    def _on_connect(self, pipe: pynng.Pipe) -> None:
        with self._lock:
            self._ever_connected = True
            self._pipes += 1
        self._connected.set()

    def _on_remove(self, pipe: pynng.Pipe) -> None:
        with self._lock:
            self._pipes = max(0, self._pipes - 1)
            gone = self._ever_connected and self._pipes == 0
        if gone:
            self._gone.set()

    # -- the connector's thread --

    @property
    def gone(self) -> bool:
        """The connection was made and has been lost since."""
        return self._gone.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the connection; True once made."""
        # The dialer stays open (closing it would close its pipe); a second
        # pipe is refused by _on_pre_connect.
        return self._connected.wait(timeout)

    def recv_nowait(self) -> Optional[bytes]:
        """The next queued message, or None when there is none.

        Raises ``ConnectionLost`` when nothing is queued and the connection
        is gone: messages that arrived before the loss are read first.
        """
        try:
            # recv_msg, not recv: pynng's recv fails on an empty message.
            return self.sock.recv_msg(block=False).bytes
        except pynng.TryAgain:
            if self._gone.is_set():
                raise ConnectionLost("the engine closed the connection") from None
            return None
        except pynng.Closed:
            raise ConnectionLost("the socket is closed") from None

    def wait_readable(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a message (or the loss)."""
        if timeout <= 0:
            return
        if self._recv_fd is None:
            self._recv_fd = self.sock.recv_fd
        deadline = time.monotonic() + timeout
        # The descriptor says nothing about the connection: wake up in
        # slices to notice a loss.
        while not self._gone.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select([self._recv_fd], [], [], min(left, 0.05))
            if ready:
                return

    def send(self, data: bytes) -> None:
        """Queue one message; raises ``ConnectionLost`` if the engine is gone.

        A send blocks only while the engine is not reading and the socket's
        buffer is full; it tries again until the connection is lost.
        """
        while True:
            if self._gone.is_set():
                raise ConnectionLost("the engine closed the connection")
            try:
                self.sock.send(data)
                return
            except pynng.Timeout:
                continue
            except pynng.Closed:
                raise ConnectionLost("the socket is closed") from None

    def linger(self, seconds: float) -> None:
        """Give the last queued messages time to leave.

        nng has no flush: closing a socket may drop what is still queued.
        Waits until the engine closes the connection, at most ``seconds``.
        """
        self._gone.wait(seconds)

    def close(self) -> None:
        """Close the socket (and with it the connection)."""
        self.sock.close()
