"""A connector that speaks the protocol directly (pynng + the generated
protobuf module, no SDK), for the engine's integration tests. It can
misbehave on purpose to test the engine's side of section 6.

Role: WALLAROO_ROLE (source or sink), set by the engine for spawned
connectors; an accepted one gets WL_ADDR and WL_TOKEN instead.

Source. Its "upstream" is WL_STREAMS streams named s0, s1, ... of WL_COUNT
messages each (payload b"sK-ID", id 1..WL_COUNT). It remembers the
positions the engine acknowledged in WL_STATE/acked-<stream> (its resume
hint) and sends every message above the engine's resume_after. When all
streams have ended it says Goodbye and exits 0. WL_COUNT=0 means an endless
stream (until the engine's Goodbye).

Sink. Appends every payload of every batch, one per line, to WL_OUT, then
answers. With WL_2PC=1 it holds each epoch apart: on Prepare it writes the
epoch to WL_STATE/prepared-<epoch> (durable); on Commit it appends that to
WL_OUT and removes the file; InDoubt lists the files left. A commit is
redone whole after a kill: WL_STATE/committing-<epoch> records WL_OUT's size
before the append, and a restart cuts WL_OUT back to it while the prepared
file is still there (a killed write can leave part of a line).

Faults (WL_FAULT), once unless WL_FAULT_MARKER is "always" (a marker file
under WL_STATE records that the fault happened):
  source: crash:N (exit 1 after sending N events), goodbye:N (say
          Goodbye and exit 0 after N events, streams still open), overcredit,
          unknown_stream, garbage, zero_id, hang (stop answering)
  sink:   crash_before_reply:N (write batch N, then exit 1 before its
          reply), error:N (answer batch N with Error), crash_after_prepare,
          crash_after_commit (commit epoch 1's data, exit before Resolved)
  either: mutate (every frame after Hello is damaged with probability
          WL_MUTATE_P, default 0.03, as rawrunner's mutate does, from
          WL_MUTATE_SEED, the role and how many connectors of that role
          started before; WL_MUTATE_ONLY names the one frame body to
          damage, e.g. batch)
"""
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "sdk-python", "wallaroo", "_pb"))
import pynng  # noqa: E402
import wallaroo_pb2 as pb  # noqa: E402
from rawrunner import mutate, runner_start  # noqa: E402

STATE = os.environ.get("WL_STATE", ".")
FAULT = os.environ.get("WL_FAULT", "none")


def fault(name):
    """The argument of fault `name` if it is the active one and has not
    happened yet (None otherwise); marks it as happened."""
    kind, _, arg = FAULT.partition(":")
    if kind != name:
        return None
    if os.environ.get("WL_FAULT_MARKER") != "always":
        marker = os.path.join(STATE, "fault-" + kind)
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return None
    return arg or "1"


def fault_armed(name):
    kind, _, arg = FAULT.partition(":")
    if kind != name:
        return None
    if os.environ.get("WL_FAULT_MARKER") != "always" and \
            os.path.exists(os.path.join(STATE, "fault-" + kind)):
        return None
    return arg or "1"


class Conn:
    def __init__(self, role):
        self.addr = os.environ.get("WALLAROO_ENGINE_ADDR") or os.environ["WL_ADDR"]
        self.token = os.environ.get("WALLAROO_TOKEN") or os.environ["WL_TOKEN"]
        self.sock = pynng.Pair1(recv_max_size=64 << 20)
        self.sock.recv_timeout = 100
        self.sock.dial(self.addr, block=True)
        hello = pb.Frame()
        hello.hello.version_major = 1
        hello.hello.role = role
        hello.hello.program = os.environ.get("WALLAROO_PROGRAM", "rawconnector")
        hello.hello.token = self.token
        hello.hello.instance = int(os.environ.get("WALLAROO_INSTANCE", "0"))
        hello.hello.pid = os.getpid()
        if os.environ.get("WL_2PC") == "1":
            hello.hello.capabilities.append("2pc")
        self.rng = None
        self.send(hello)
        if FAULT == "mutate":
            self.rng = random.Random("%s/%d/%d" % (
                os.environ.get("WL_MUTATE_SEED", "1"), role,
                runner_start(os.path.join(STATE, "start-%d" % role))))
            self.mutate_p = float(os.environ.get("WL_MUTATE_P", "0.03"))
            self.mutate_only = os.environ.get("WL_MUTATE_ONLY")
        f = self.recv(10.0)
        if f is None or f.WhichOneof("body") != "welcome":
            what = f.refuse.message if f is not None and f.WhichOneof("body") == "refuse" else f
            print("rawconnector: refused: %s" % what, file=sys.stderr, flush=True)
            sys.exit(3)
        self.welcome = f.welcome

    def send(self, frame):
        data = frame.SerializeToString()
        if self.rng is not None and self.rng.random() < self.mutate_p and \
                self.mutate_only in (None, frame.WhichOneof("body")):
            data = mutate(self.rng, data)
        self.sock.send(data)

    def recv(self, timeout=0.1):
        """The next frame, answering heartbeats; None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = self.sock.recv()
            except pynng.Timeout:
                if time.monotonic() >= deadline:
                    return None
                continue
            except pynng.Closed:
                sys.exit(4)
            f = pb.Frame.FromString(data)
            body = f.WhichOneof("body")
            if body == "heartbeat" and f.heartbeat.reply:
                if fault_armed("hang"):
                    continue
                out = pb.Frame()
                out.heartbeat.seq = f.heartbeat.seq
                self.send(out)
                continue
            if body == "goodbye":
                print("rawconnector: engine goodbye: %s" % f.goodbye.reason,
                      file=sys.stderr, flush=True)
                sys.exit(0)
            if body == "error":
                print("rawconnector: engine error %d: %s" % (f.error.code, f.error.message),
                      file=sys.stderr, flush=True)
                continue
            return f


def read_pos(name):
    try:
        with open(os.path.join(STATE, "acked-" + name)) as fh:
            return int(fh.read() or 0)
    except FileNotFoundError:
        return 0


def write_pos(name, value):
    tmp = os.path.join(STATE, "acked-" + name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(str(value))
    os.replace(tmp, os.path.join(STATE, "acked-" + name))


def run_source():
    c = Conn(pb.ROLE_SOURCE)
    count = int(os.environ.get("WL_COUNT", "1000"))
    nstreams = int(os.environ.get("WL_STREAMS", "1"))
    batch_max = int(os.environ.get("WL_BATCH", "100"))
    credits = c.welcome.initial_credits
    names = ["s%d" % i for i in range(nstreams)]
    nxt, acked, ended = {}, {}, set()
    for i, name in enumerate(names):
        f = pb.Frame()
        f.open_stream.stream_id = i + 1
        f.open_stream.name = name
        f.open_stream.resume_hint = read_pos(name)
        c.send(f)
    opened = 0
    while opened < nstreams:
        f = c.recv(10.0)
        if f is None:
            sys.exit(5)
        if f.WhichOneof("body") == "stream_opened":
            name = names[f.stream_opened.stream_id - 1]
            nxt[name] = f.stream_opened.resume_after + 1
            acked[name] = read_pos(name)
            opened += 1
    sent_total, batch_id, end_sent = 0, 0, set()
    crash_at = fault_armed("crash")
    quit_at = fault_armed("goodbye")
    while len(ended) < nstreams:
        # Send while credits last.
        progressed = False
        for i, name in enumerate(names):
            if name in end_sent:
                continue
            if count and nxt[name] > count:
                f = pb.Frame()
                f.end_stream.stream_id = i + 1
                f.end_stream.last_id = count
                c.send(f)
                end_sent.add(name)
                continue
            n = min(batch_max, credits, (count - nxt[name] + 1) if count else batch_max)
            if n <= 0:
                continue
            if fault("overcredit"):
                n = credits + 1
            f = pb.Frame()
            batch_id += 1
            f.batch.batch_id = batch_id
            for k in range(n):
                ev = f.batch.events.add()
                ev.stream_id = i + 1
                ev.message_id = nxt[name] + k
                ev.payload = b"%s-%d" % (name.encode(), nxt[name] + k)
            if fault("unknown_stream"):
                f.batch.events[0].stream_id = 99
            if fault("zero_id"):
                f.batch.events[0].message_id = 0
            if fault("garbage"):
                c.sock.send(b"\xff\xff\xff")
            c.send(f)
            credits -= n
            nxt[name] += n
            sent_total += n
            progressed = True
            if crash_at and sent_total >= int(crash_at) and fault("crash"):
                os._exit(1)
            if quit_at and sent_total >= int(quit_at) and fault("goodbye"):
                g = pb.Frame()
                g.goodbye.reason = "stopped by the operator"
                c.send(g)
                time.sleep(0.2)
                sys.exit(0)
        f = c.recv(0.01 if progressed and credits > 0 else 0.5)
        while f is not None:
            body = f.WhichOneof("body")
            if body == "credit":
                credits += f.credit.events
            elif body == "ack":
                name = names[f.ack.stream_id - 1]
                if f.ack.up_to > acked.get(name, 0):
                    acked[name] = f.ack.up_to
                    write_pos(name, f.ack.up_to)
            elif body == "stream_ended":
                ended.add(names[f.stream_ended.stream_id - 1])
            f = c.recv(0)
    g = pb.Frame()
    g.goodbye.reason = "every stream ended"
    c.send(g)
    time.sleep(0.2)  # let nng deliver the goodbye before the socket goes
    sys.exit(0)


def undo_torn_commits(out):
    """A commit killed before its prepared file went may have appended all,
    part or none of the epoch: cut WL_OUT back to the size before it, so
    that the engine's Commit (the epoch is listed in doubt) redoes it whole.
    Once the prepared file is gone the append was complete."""
    for name in os.listdir(STATE):
        if not name.startswith("committing-"):
            continue
        marker = os.path.join(STATE, name)
        if os.path.exists(os.path.join(STATE, "prepared-" + name[len("committing-"):])):
            with open(marker) as fh:
                size = int(fh.read())
            with open(out, "ab") as fh:
                fh.truncate(size)
        os.unlink(marker)


def run_sink():
    c = Conn(pb.ROLE_SINK)
    out = os.environ["WL_OUT"]
    twopc = os.environ.get("WL_2PC") == "1"
    held = {}
    batches = 0
    if twopc:
        undo_torn_commits(out)
        f = pb.Frame()
        for name in sorted(os.listdir(STATE)):
            if name.startswith("prepared-"):
                f.in_doubt.epochs.append(int(name[len("prepared-"):]))
                f.in_doubt.incarnations.append(0)
        f.in_doubt.SetInParent()
        c.send(f)
    while True:
        f = c.recv(1.0)
        if f is None:
            continue
        body = f.WhichOneof("body")
        if body == "batch":
            batches += 1
            lines = b"".join(ev.payload + b"\n" for ev in f.batch.events)
            if twopc:
                held.setdefault(f.batch.epoch, []).append(lines)
            else:
                with open(out, "ab") as fh:
                    fh.write(lines)
            arg = fault_armed("crash_before_reply")
            if arg and batches == int(arg) and fault("crash_before_reply"):
                os._exit(1)
            arg = fault_armed("error")
            if arg and batches == int(arg) and fault("error"):
                e = pb.Frame()
                e.error.code = pb.ERROR_CODE_INTERNAL
                e.error.message = "upstream refused the batch"
                e.error.batch_id = f.batch.batch_id
                c.send(e)
                continue
            r = pb.Frame()
            r.reply.batch_id = f.batch.batch_id
            c.send(r)
        elif body == "prepare":
            ep = f.prepare.epoch
            path = os.path.join(STATE, "prepared-%d" % ep)
            with open(path, "wb") as fh:
                fh.write(b"".join(held.pop(ep, [])))
            if fault("crash_after_prepare"):
                os._exit(1)
            r = pb.Frame()
            r.prepared.epoch = ep
            r.prepared.ok = True
            c.send(r)
        elif body in ("commit", "abort"):
            msg = getattr(f, body)
            path = os.path.join(STATE, "prepared-%d" % msg.epoch)
            marker = os.path.join(STATE, "committing-%d" % msg.epoch)
            if body == "commit" and os.path.exists(path):
                with open(marker + ".tmp", "w") as fh:  # whole, or not there
                    fh.write(str(os.path.getsize(out) if os.path.exists(out) else 0))
                os.replace(marker + ".tmp", marker)
                with open(path, "rb") as src, open(out, "ab") as dst:
                    dst.write(src.read())
            if os.path.exists(path):
                os.unlink(path)
            if os.path.exists(marker):
                os.unlink(marker)
            if body == "commit" and fault("crash_after_commit"):
                os._exit(1)
            r = pb.Frame()
            r.resolved.epoch = msg.epoch
            r.resolved.committed = body == "commit"
            c.send(r)


if __name__ == "__main__":
    role = os.environ.get("WALLAROO_ROLE") or os.environ.get("WL_ROLE")
    if role == "source":
        run_source()
    elif role == "sink":
        run_sink()
    else:
        sys.exit("rawconnector: WALLAROO_ROLE must be source or sink")
