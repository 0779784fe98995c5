"""wallaroo._ipc: nng's ipc framing over a plain unix socket, against a real
pynng Pair1 listener (the framing must be nng's own) and against raw unix
listeners that break it.

Nothing sleeps: every wait is a socket timeout with a deadline.
"""

import os
import socket
import struct
import tempfile
import threading

import pynng
import pytest

from wallaroo._ipc import HEADER, IpcPair, LinkLost, path_of

DEADLINE = 10.0


@pytest.fixture
def directory():
    with tempfile.TemporaryDirectory() as d:
        yield d


@pytest.fixture
def listener(directory):
    path = os.path.join(directory, "l.sock")
    sock = pynng.Pair1(recv_timeout=int(DEADLINE * 1000), send_timeout=int(DEADLINE * 1000),
                       recv_max_size=1 << 22)
    sock.listen("ipc://" + path)
    yield path, sock
    sock.close()


def frame(payload, hops=1, kind=1, length=None):
    n = len(payload) + 4 if length is None else length
    return struct.pack(">BQI", kind, n, hops) + payload


def test_path_of_takes_only_ipc_addresses():
    assert path_of("ipc:///tmp/x.sock") == "/tmp/x.sock"
    assert path_of("tcp://127.0.0.1:5") is None


def test_messages_cross_both_ways_with_nng(listener):
    path, nng = listener
    link = IpcPair(path, 1 << 22)
    assert link.connect(DEADLINE)
    # One at a time: a pynng socket holds few messages unread, and a
    # blocked send would wait for this very thread to read.
    for n in [0, 1, 13, 4096, 1 << 20]:
        link.send(bytes([n % 251]) * n)
        # recv_msg: pynng's recv fails on an empty message.
        assert nng.recv_msg().bytes == bytes([n % 251]) * n
        nng.send(b"r" * n)
        assert link.recv() == b"r" * n
    link.close()


def test_many_small_messages_arrive_in_order(listener):
    path, nng = listener
    link = IpcPair(path, 1 << 22)
    assert link.connect(DEADLINE)
    # In rounds of 100, few enough for the kernel's socket buffer: many
    # messages arrive in one read and are split out of it.
    for start in range(0, 2000, 100):
        for i in range(start, start + 100):
            nng.send(str(i).encode())
        got = [link.recv() for _ in range(100)]
        assert got == [str(i).encode() for i in range(start, start + 100)]
    link.close()


def test_messages_that_straddle_the_read_buffer_arrive_whole(listener):
    # Sizes around the 256 KiB read buffer, several in the socket at once,
    # so messages start near its end, are moved to its front, or need a
    # larger buffer.
    path, nng = listener
    link = IpcPair(path, 1 << 22)
    assert link.connect(DEADLINE)
    sizes = [100_000, 70_000, 90_000, 5, 200_000, 262_131, 262_144, 300_000, 13, 180_000]
    def send_all():
        for round_ in range(3):
            for i, n in enumerate(sizes):
                nng.send(bytes([(i + round_) % 251]) * n)

    # From another thread: more than the sockets hold is in flight.
    sender = threading.Thread(target=send_all)
    sender.start()
    for round_ in range(3):
        for i, n in enumerate(sizes):
            assert link.recv() == bytes([(i + round_) % 251]) * n
    sender.join(DEADLINE)
    link.close()


def test_a_message_over_the_limit_ends_the_connection(listener):
    path, nng = listener
    link = IpcPair(path, 4096)
    assert link.connect(DEADLINE)
    nng.send(b"a" * 4092)  # exactly the limit with pair1's 4-byte header
    nng.send(b"b" * 4093)
    assert link.recv() == b"a" * 4092
    with pytest.raises(LinkLost, match="4097 bytes is over the limit of 4096"):
        link.recv()
    assert link.lost
    with pytest.raises(LinkLost):
        link.send(b"x")


def test_queued_messages_are_read_before_the_loss(listener):
    path, nng = listener
    link = IpcPair(path, 1 << 22)
    assert link.connect(DEADLINE)
    nng.send(b"one")
    nng.send(b"two")
    # Wait for nng to have written both (it answers our message after).
    link.send(b"ping")
    assert nng.recv() == b"ping"
    nng.close()
    assert link.recv() == b"one"
    assert link.recv() == b"two"
    with pytest.raises(LinkLost, match="closed"):
        link.recv()


def test_nobody_listening_gives_up_after_the_timeout(directory):
    link = IpcPair(os.path.join(directory, "none.sock"), 1024)
    assert link.connect(0.1) is False


class RawPeer:
    """A unix listener that answers with whatever bytes a test gives."""

    def __init__(self, directory, reply):
        self.path = os.path.join(directory, "raw.sock")
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.path)
        self.srv.listen(1)
        self.srv.settimeout(DEADLINE)
        self.got = b""
        self.thread = threading.Thread(target=self._serve, args=(reply,))
        self.thread.start()

    def _serve(self, reply):
        conn, _ = self.srv.accept()
        conn.settimeout(DEADLINE)
        self.got = conn.recv(8)
        conn.sendall(reply)
        # Hold the connection until the client closes it.
        while conn.recv(4096):
            pass
        conn.close()

    def close(self):
        self.thread.join(DEADLINE)
        self.srv.close()


@pytest.mark.parametrize(
    "reply, message",
    [
        (b"HTTP/1.1", "sent no nng \\(SP\\) header"),
        (b"\x00SP\x00\x00\x10\x00\x00", "speaks SP protocol 0x10, not pair1 \\(0x11\\)"),
    ],
)
def test_a_listener_that_is_not_pair1_is_named(directory, reply, message):
    peer = RawPeer(directory, reply)
    link = IpcPair(peer.path, 1024)
    with pytest.raises(LinkLost, match=message):
        link.connect(DEADLINE)
    peer.close()
    assert peer.got == HEADER


@pytest.mark.parametrize(
    "data, message",
    [
        (frame(b"x", kind=2), "message type 2 is not nng's"),
        (frame(b"", length=2), "2 bytes has no pair1 header"),
        (frame(b"x", hops=0x1234), "pair1 header 0x1234 is malformed"),
        (frame(b"x", hops=9), "crossed 9 hops"),
    ],
)
def test_a_broken_frame_ends_the_connection_with_its_fault(directory, data, message):
    peer = RawPeer(directory, HEADER + frame(b"fine") + data)
    link = IpcPair(peer.path, 1024)
    assert link.connect(DEADLINE)
    assert link.recv() == b"fine"
    with pytest.raises(LinkLost, match=message):
        link.recv()
    link.close()
    peer.close()
