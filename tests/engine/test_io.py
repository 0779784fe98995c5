"""Built-in sources and sinks: TCP and file framing, bad frames from a
client, SIGTERM draining, back pressure, and the TCP sink."""
import socket
import struct
import threading

from conftest import raw_program


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def read_frames(data):
    out, i = [], 0
    while i < len(data):
        (n,) = struct.unpack_from(">I", data, i)
        out.append(data[i + 4:i + 4 + n])
        i += 4 + n
    assert i == len(data), "trailing partial frame in sink output"
    return out


def tcp_upper_topology(extra_source="", instances=2, **runner_env):
    return ("application: tcp\nprograms:\n" + raw_program(instances=instances, **runner_env) +
            "sources:\n  in: {type: tcp, listen: '127.0.0.1:0'%s}\n" % extra_source +
            "steps:\n  up: {kind: stateless, program: raw, function: upper, inputs: [in]}\n"
            "sinks:\n  out: {type: file, path: out.bin, framing: length, inputs: [up]}\n")


def listen_port(e):
    line = e.wait_for(r"SRC-LISTEN source 'in' listening on 127.0.0.1:\d+")
    return int(line.rsplit(":", 1)[1])


def test_tcp_source_frames_are_processed_and_sigterm_drains(engine, tmp_path):
    e = engine(tcp_upper_topology())
    port = listen_port(e)
    e.wait_for("READY application 'tcp'")
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(b"".join(frame(b"msg %d" % i) for i in range(5000)))
    e.wait_for(r"SRC-CLOSE source 'in' peer 127.0.0.1:\d+ closed after 5000 events")
    e.terminate()
    assert e.wait() == 0
    e.wait_for(r"ENGINE-SIGNAL signal 15: stopping sources and draining \(a second signal stops at once\)")
    # One stream, routed by its origin: its order holds.
    assert read_frames((tmp_path / "out.bin").read_bytes()) == [b"MSG %d" % i for i in range(5000)]
    assert e.summary()["source=in"]["events"] == "5000"


def test_oversized_tcp_frame_closes_only_that_connection(engine, tmp_path):
    e = engine(tcp_upper_topology(", max_frame_bytes: 1024"))
    port = listen_port(e)
    e.wait_for("READY")
    bad = socket.create_connection(("127.0.0.1", port))
    bad.sendall(frame(b"a") + frame(b"b") + struct.pack(">I", 1 << 20) + b"x" * 100)
    e.wait_for(r"SRC-FRAME source 'in' 127.0.0.1:\d+ offset 10: frame of 1048576 bytes "
               r"exceeds max_frame_bytes=1024")
    e.wait_for(r"SRC-CLOSE source 'in' peer 127.0.0.1:\d+: closing the connection after a bad frame")
    bad.close()
    with socket.create_connection(("127.0.0.1", port)) as good:
        good.sendall(frame(b"c") + frame(b"d") + frame(b"e"))
    e.wait_for(r"SRC-CLOSE source 'in' peer 127.0.0.1:\d+ closed after 3 events")
    e.terminate()
    assert e.wait() == 0
    assert sorted(read_frames((tmp_path / "out.bin").read_bytes())) == [b"A", b"B", b"C", b"D", b"E"]
    assert e.summary()["source=in"]["errors"] == "1"


def more_clients_than_descriptors(e):
    """Connects 100 clients to the engine's source 'in' (started with
    nofile=64) and waits until it says it cannot accept them all."""
    port = listen_port(e)
    e.wait_for("READY")
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
    e.wait_for(r"SRC-ERROR source 'in': cannot accept a connection \(\d+ open\): "
               r"Too many open files; accepting again in 1 s or when one closes")
    return clients


def each_client_sends_one_frame_and_leaves(e, clients):
    """Client i sends b"client i" and closes; returns once the source has
    closed every one of them."""
    for i, c in enumerate(clients):
        c.sendall(frame(b"client %d" % i))
        c.close()
    e.wait_count(r"SRC-CLOSE source 'in' peer 127.0.0.1:\d+ closed after", len(clients))


def test_tcp_source_out_of_descriptors_names_it_and_takes_every_client_later(engine, tmp_path):
    # The engine may open 64 descriptors: 100 clients cannot all be
    # accepted. Accepting must stop with a line saying why (retrying at
    # once would spin: the waiting connection keeps the socket readable),
    # and resume as clients leave, so that every client's data arrives.
    e = engine(tcp_upper_topology(), nofile=64)
    clients = more_clients_than_descriptors(e)
    each_client_sends_one_frame_and_leaves(e, clients)
    e.terminate()
    assert e.wait() == 0
    assert sorted(read_frames((tmp_path / "out.bin").read_bytes())) == \
        sorted(b"CLIENT %d" % i for i in range(100))
    # One line per refusal, not one per turn of the loop.
    assert e.count("cannot accept a connection") < 50


def test_a_runner_restarted_while_the_engine_is_out_of_descriptors_gets_every_event(engine, tmp_path):
    # The runner crashes on its first batch while 100 clients hold every
    # descriptor the engine may open. Its replacement cannot get going
    # until clients leave: either the new link cannot listen (the restart
    # backs off and tries again) or its listener cannot accept the
    # runner's connection (it tries again a second later), depending on
    # who takes the crashed runner's descriptor. Nothing may be lost.
    e = engine(tcp_upper_topology(instances=1, WL_FAULT="crash",
                                  WL_FAULT_MARKER=str(tmp_path / "crashed")), nofile=64)
    clients = more_clients_than_descriptors(e)
    clients[0].sendall(frame(b"first"))
    e.wait_for(r"SUP-CRASH runner raw/0")
    e.wait_for(r"LINK-ERROR ipc://\S+: (accept: Too many open files; accepting again in 1 s"
               r"|cannot listen: Too many open files)")
    each_client_sends_one_frame_and_leaves(e, clients)
    e.terminate()
    assert e.wait() == 0
    out = read_frames((tmp_path / "out.bin").read_bytes())
    assert sorted(out) == sorted([b"FIRST"] + [b"CLIENT %d" % i for i in range(100)])
    assert e.count(r"RUN-READY runner raw/0") == 2
    assert e.count(r"LINK-ERROR ") < 20, e.log()


def test_a_sink_that_cannot_write_says_so_once_and_keeps_the_data(engine, tmp_path):
    # /dev/full refuses every write (ENOSPC), as a full disk does. The
    # bytes must stay held and be retried; the failure is logged once, then
    # every 10 s, not on every turn of the loop (which would fill the disk
    # the logs are on).
    (tmp_path / "in.bin").write_bytes(b"".join(frame(b"event %d" % i) for i in range(2000)))
    e = engine("application: full\n"
               "sources:\n  in: {type: file, path: in.bin}\n"
               "  live: {type: tcp, listen: '127.0.0.1:0'}\n"
               "sinks:\n  out: {type: file, path: /dev/full, inputs: [in]}\n"
               "  ok: {type: file, path: ok.bin, inputs: [live]}\n")
    line = e.wait_for(r"SRC-LISTEN source 'live' listening on 127.0.0.1:\d+")
    port = int(line.rsplit(":", 1)[1])
    e.wait_for(r"SINK-ERROR sink 'out': write /dev/full: No space left on device "
               r"\(\d+ bytes held; trying again until it works\)")
    # Every event through the other pipeline turns the loop, and every
    # turn tries the full sink again.
    for i in range(20):
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(frame(b"live %d" % i))
        e.wait_count(r"SRC-CLOSE source 'live' peer 127.0.0.1:\d+ closed after 1 events", i + 1)
    e.terminate()
    e.wait_for("ENGINE-FORCE|ENGINE-SIGNAL")
    e.terminate()
    assert e.wait() == 1
    e.wait_for(r"SINK-ERROR sink 'out': closing with \d+ bytes unwritten")
    assert e.count(r"SINK-ERROR sink 'out': write /dev/full") == 1, e.log()


def test_tcp_client_closing_inside_a_frame_is_reported(engine, tmp_path):
    e = engine(tcp_upper_topology())
    port = listen_port(e)
    e.wait_for("READY")
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(frame(b"whole") + struct.pack(">I", 50) + b"only part")
    e.wait_for(r"SRC-TRUNCATED source 'in' 127.0.0.1:\d+ offset 9: stream ended inside a frame "
               r"\(13 bytes dropped\)")
    e.terminate()
    assert e.wait() == 0
    assert read_frames((tmp_path / "out.bin").read_bytes()) == [b"WHOLE"]


def test_file_source_with_an_overlong_line_stops_there(engine, tmp_path):
    (tmp_path / "in.txt").write_bytes(b"one\ntwo\n" + b"z" * 5000 + b"\nthree\n")
    e = engine("application: lines\nprograms:\n" + raw_program(instances=1) +
               "sources:\n  in: {type: file, path: in.txt, framing: line, max_frame_bytes: 1000}\n"
               "steps:\n  up: {kind: stateless, program: raw, function: upper, inputs: [in]}\n"
               "sinks:\n  out: {type: file, path: out.txt, framing: line, inputs: [up]}\n")
    assert e.wait() == 0
    e.wait_for(r"SRC-FRAME source 'in' \S+in.txt offset 8: line longer than max_frame_bytes=1000")
    assert (tmp_path / "out.txt").read_text() == "ONE\nTWO\n"


def test_back_pressure_pauses_the_source_and_loses_nothing(engine, tmp_path):
    n = 30000
    (tmp_path / "in.txt").write_text("".join("k%d x\n" % (i % 11) for i in range(n)))
    e = engine("application: bp\nlimits: {queue_max_bytes: 8192, batch_max_events: 64}\n"
               "programs:\n" + raw_program(instances=2) +
               "sources:\n  in: {type: file, path: in.txt, framing: line}\n"
               "steps:\n  key: {kind: key_by, program: raw, function: first-word, inputs: [in]}\n"
               "  cnt: {kind: state, program: raw, function: count, state: c, inputs: [key]}\n"
               "sinks:\n  out: {type: file, path: out.txt, framing: line, inputs: [cnt]}\n")
    assert e.wait(timeout=120) == 0
    s = e.summary()
    assert int(s["source=in"]["pauses"]) > 0
    lines = (tmp_path / "out.txt").read_text().splitlines()
    assert len(lines) == n
    finals = {}
    for line in lines:
        k, c = line.split(":")
        finals[k] = max(finals.get(k, 0), int(c))
    assert finals == {"k%d" % i: len(range(i, n, 11)) for i in range(11)}


def test_engine_key_range_on_a_short_payload_is_a_step_error(engine, tmp_path):
    (tmp_path / "in.txt").write_text("ABCDEF\nAB\nXYZWVU\n")
    e = engine("application: keys\nprograms:\n" + raw_program(instances=1) +
               "sources:\n  in: {type: file, path: in.txt, framing: line}\n"
               "steps:\n  key: {kind: key_by, key: {offset: 1, length: 3}, inputs: [in]}\n"
               "  cnt: {kind: state, program: raw, function: count, state: c, inputs: [key]}\n"
               "sinks:\n  out: {type: file, path: out.txt, framing: line, inputs: [cnt]}\n")
    assert e.wait() == 0
    e.wait_for(r"STEP-ERROR step 'key' key '' \(stream 1 message 2\): payload of 2 bytes is too "
               r"short for key \{offset: 1, length: 3\}")
    assert sorted((tmp_path / "out.txt").read_text().split()) == ["BCD:1", "YZW:1"]


def test_tcp_sink_delivers_every_output_to_the_receiver(engine, tmp_path):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    received = bytearray()

    def receive():
        conn, _ = srv.accept()
        with conn:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                received.extend(chunk)

    t = threading.Thread(target=receive, daemon=True)
    t.start()
    (tmp_path / "in.txt").write_text("".join("line %d\n" % i for i in range(2000)))
    e = engine("application: tcpsink\nprograms:\n" + raw_program(instances=1) +
               "sources:\n  in: {type: file, path: in.txt, framing: line}\n"
               "steps:\n  up: {kind: stateless, program: raw, function: upper, inputs: [in]}\n"
               "sinks:\n  out: {type: tcp, connect: '127.0.0.1:%d', inputs: [up]}\n" % port)
    assert e.wait() == 0
    t.join(10)
    srv.close()
    assert read_frames(bytes(received)) == [b"LINE %d" % i for i in range(2000)]


def test_second_sigterm_stops_a_drain_that_cannot_finish(engine, tmp_path):
    # The TCP sink's receiver never exists: the drain cannot complete.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    srv.close()
    (tmp_path / "in.txt").write_text("a\nb\nc\n")
    e = engine("application: stuck\nprograms:\n" + raw_program(instances=1) +
               "sources:\n  in: {type: file, path: in.txt, framing: line}\n"
               "steps:\n  up: {kind: stateless, program: raw, function: upper, inputs: [in]}\n"
               "sinks:\n  out: {type: tcp, connect: '127.0.0.1:%d', inputs: [up]}\n" % port)
    e.wait_for(r"SINK-DISCONNECT sink 'out' 127.0.0.1:%d: Connection refused; retrying in 1 s" % port)
    e.wait_for("ENGINE-DRAIN every source has ended")
    e.terminate()
    e.wait_for("ENGINE-SIGNAL signal 15")
    e.terminate()
    assert e.wait() == 1
    e.wait_for(r"ENGINE-FORCE second signal 15 while draining: stopping now; \d+ events queued or "
               r"in flight and \d+ bytes unwritten by sinks are abandoned")
