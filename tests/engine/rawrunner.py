"""A runner that speaks the protocol directly (pynng + the generated
protobuf module, no SDK), for the engine's integration tests.

It serves a few step functions and can misbehave once, on purpose, to test
the engine's supervision. Environment:

  WL_FAULT          none | crash | hang | garbage | oversize | badreply |
                    badstate | batcherror | silent_hb | mutate
  WL_MUTATE_SEED    mutate: damage replies at random (bit flips, cut,
                    spliced, overwritten or added bytes), each with
                    probability WL_MUTATE_P (default 0.2), from this seed,
                    the instance and how many runners started before this
                    one (counted with files WL_FAULT_MARKER.<n>), so that a
                    replacement does not repeat its predecessor's damage
  WL_FAULT_MARKER   a file: the fault happens only if it does not exist
                    yet (the runner creates it), so that the replacement
                    runner behaves; "always" as the value means every time.
  WL_FAULT_AFTER    misbehave on the Nth batch (default 1)
                    Several faults: WL_FAULT=hang,crash WL_FAULT_AFTER=2,5;
                    each happens once (marker WL_FAULT_MARKER.<fault>), in
                    the first runner to reach its batch
  WL_FAULT_INSTANCE only this instance misbehaves; a comma list, one per
                    fault, as WL_FAULT_AFTER (default: any instance)
  WL_HANG_UNTIL     hang: a file; the runner goes on (answering the batch)
                    once it exists, instead of hanging for an hour
  WL_SLOW_MS        sleep this long per event (a slow computation, for
                    back pressure tests)
  WL_SLOW_INSTANCE  only this instance is slow (default: every one)

Step functions: upper (stateless), count (state: an ASCII counter per key,
emits b"key:count"), first-word (key_by: the payload up to the first
space), fail-bad (stateless: payload b"bad" raises a per-event error).
"""
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "sdk-python", "wallaroo", "_pb"))
import pynng  # noqa: E402
import wallaroo_pb2 as pb  # noqa: E402


def fault_now(batches_seen):
    faults = os.environ.get("WL_FAULT", "none").split(",")
    afters = os.environ.get("WL_FAULT_AFTER", "1").split(",")
    only = os.environ.get("WL_FAULT_INSTANCE", "").split(",")
    for i, fault in enumerate(faults):
        if fault == "none":
            continue
        if batches_seen != int(afters[min(i, len(afters) - 1)]):
            continue
        which = only[min(i, len(only) - 1)]
        if which and which != os.environ["WALLAROO_INSTANCE"]:
            continue
        marker = os.environ.get("WL_FAULT_MARKER", "always")
        if marker != "always":
            if len(faults) > 1:
                marker = "%s.%s" % (marker, fault)
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.close(fd)
            except FileExistsError:
                continue
        return fault
    return None


def runner_start(prefix):
    """How many runners had started before this one: the first n for which
    this one creates ``prefix.<n>``."""
    n = 0
    while True:
        try:
            os.close(os.open("%s.%d" % (prefix, n), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return n
        except FileExistsError:
            n += 1


def mutate(rng, data):
    """``data`` damaged by one to three random edits."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:  # flip a bit
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # cut
            del b[i:]
        elif op == 2 and b:  # overwrite a byte (0xff makes long varints)
            i = rng.randrange(len(b))
            b[i] = rng.choice((0, 0x7f, 0x80, 0xff, rng.randrange(256)))
        elif op == 3:  # repeat a slice (a field twice, a length over its end)
            j = rng.randrange(i, len(b) + 1)
            b[j:j] = b[i:j]
        elif op == 4:  # remove a slice
            del b[i:i + rng.randint(1, 8)]
        else:  # insert random bytes
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(b)


def _count_of(value):
    try:
        return int(value)
    except ValueError:
        return None


def serve_batch(steps, batch):
    spec = steps[batch.step_id]
    reply = pb.Frame()
    rep = reply.reply
    rep.batch_id = batch.batch_id
    # A count the engine holds; None when its bytes are not one. A runner
    # that damages its replies (WL_FAULT=mutate) can get such bytes stored
    # through a reply that is still well-formed: each event of that key then
    # fails, as user code would, instead of the runner crashing on every
    # batch that holds the key.
    states = {s.key: (_count_of(s.value) if s.present else 0) for s in batch.states}
    changed = set()
    for ev in batch.events:
        res = rep.results.add()
        fn = spec.function
        if fn == "upper":
            res.outputs.add().payload = ev.payload.upper()
        elif fn == "fail-bad":
            if ev.payload == b"bad":
                res.error = "step '%s' key %r: ValueError: bad input" % (spec.name, ev.key)
            else:
                res.outputs.add().payload = ev.payload
        elif fn == "first-word":
            res.key = ev.payload.split(b" ", 1)[0]
        elif fn == "count" and states.get(ev.key, 0) is None:
            res.error = "step '%s' key %r: ValueError: the state is not a count" % (
                spec.name, ev.key)
        elif fn == "count":
            states[ev.key] = states.get(ev.key, 0) + 1
            changed.add(ev.key)
            res.outputs.add().payload = ev.key + b":" + str(states[ev.key]).encode()
        else:
            res.error = "unknown function " + fn
    for k in changed:
        st = rep.states.add()
        st.key = k
        st.value = str(states[k]).encode()
        st.present = True
    return reply


def main():
    addr = os.environ["WALLAROO_ENGINE_ADDR"]
    maxmsg = int(os.environ.get("WALLAROO_MAX_MESSAGE_BYTES", 16 << 20))
    announce = os.environ.get("WL_ANNOUNCE") == "1"
    sock = pynng.Pair1(recv_max_size=maxmsg * 4)
    sock.dial(addr, block=True)
    hello = pb.Frame()
    hello.hello.version_major = int(os.environ.get("WL_VERSION_MAJOR", "1"))
    hello.hello.role = pb.ROLE_RUNNER
    hello.hello.program = os.environ["WALLAROO_PROGRAM"]
    hello.hello.token = os.environ.get("WL_TOKEN_OVERRIDE", os.environ["WALLAROO_TOKEN"])
    hello.hello.instance = int(os.environ["WALLAROO_INSTANCE"])
    hello.hello.pid = os.getpid()
    sock.send(hello.SerializeToString())
    steps = {}
    batches = 0
    rng = None
    if os.environ.get("WL_FAULT") == "mutate":
        rng = random.Random("%s/%s/%d" % (os.environ.get("WL_MUTATE_SEED", "1"),
                                          os.environ["WALLAROO_INSTANCE"],
                                          runner_start(os.environ["WL_FAULT_MARKER"])))
        mutate_p = float(os.environ.get("WL_MUTATE_P", "0.2"))
    while True:
        try:
            data = sock.recv()
        except pynng.exceptions.Closed:
            return 0
        f = pb.Frame()
        f.ParseFromString(data)
        kind = f.WhichOneof("body")
        if kind == "refuse":
            print("rawrunner: refused: %s" % f.refuse.message, file=sys.stderr)
            return 2
        if kind == "assign":
            for s in f.assign.steps:
                steps[s.step_id] = s
            out = pb.Frame()
            out.ready.SetInParent()
            sock.send(out.SerializeToString())
        elif kind == "heartbeat" and f.heartbeat.reply:
            if os.environ.get("WL_FAULT") == "silent_hb" and fault_now(1):
                time.sleep(3600)
            out = pb.Frame()
            out.heartbeat.seq = f.heartbeat.seq
            sock.send(out.SerializeToString())
        elif kind == "goodbye":
            return 0
        elif kind == "batch":
            batches += 1
            fault = fault_now(batches)
            if fault == "crash":
                os._exit(3)
            if fault == "hang":
                release = os.environ.get("WL_HANG_UNTIL")
                deadline = time.monotonic() + 3600
                while time.monotonic() < deadline and not (release and os.path.exists(release)):
                    time.sleep(0.01)
            if fault == "garbage":
                sock.send(b"\xff\xfe this is not a frame \x00\x01")
                continue
            if fault == "oversize":
                sock.send(b"\x00" * (maxmsg + 1024))
                continue
            if fault == "batcherror":
                out = pb.Frame()
                out.error.code = pb.ERROR_CODE_TOO_LARGE
                out.error.message = "reply of 99999999 bytes is over the limit"
                out.error.batch_id = f.batch.batch_id
                sock.send(out.SerializeToString())
                continue
            slow = float(os.environ.get("WL_SLOW_MS", "0"))
            if os.environ.get("WL_SLOW_INSTANCE", os.environ["WALLAROO_INSTANCE"]) != \
                    os.environ["WALLAROO_INSTANCE"]:
                slow = 0
            if slow > 0:
                time.sleep(slow * len(f.batch.events) / 1000.0)
            reply = serve_batch(steps, f.batch)
            if fault == "badreply":
                reply.reply.batch_id += 1000
            if fault == "badstate":
                st = reply.reply.states.add()
                st.key = b"a key that is not in the batch"
                st.value = b"1"
                st.present = True
            data = reply.SerializeToString()
            if rng is not None and rng.random() < mutate_p:
                data = mutate(rng, data)
            sock.send(data)
            if announce:
                # On the engine's stderr (a runner's output goes there):
                # a test can wait for work done after a given moment.
                print("RAW-REPLIED batch %d" % f.batch.batch_id, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
