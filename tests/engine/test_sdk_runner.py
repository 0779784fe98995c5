"""The engine with runners built on the real Python SDK."""
import sys

from conftest import ROOT

RUNNER = '''
import wallaroo

class Total:
    def __init__(self):
        self.n = 0

def add(value, total):
    if value < 0:
        raise ValueError("negative value %d" % value)
    total.n += value
    return "%d" % total.n

if __name__ == "__main__":
    steps = wallaroo.Steps()
    steps.key_by("by-name", lambda line: line.split(b" ")[0])
    steps.state_computation("add", add, state=Total, decoder=lambda b: int(b.split(b" ")[1]))
    wallaroo.run(steps)
'''


def topology(steps="by-name, add"):
    return ("application: sdk\nprograms:\n"
            "  py: {argv: [%s, runner.py], instances: 2, env: {PYTHONPATH: %s/sdk-python}}\n"
            "sources:\n  in: {type: file, path: in.txt, framing: line}\n"
            "steps:\n"
            "  by-name: {kind: key_by, program: py, inputs: [in]}\n"
            "  add: {kind: state, program: py, state: totals, inputs: [by-name]}\n"
            "sinks:\n  out: {type: file, path: out.txt, framing: line, inputs: [add]}\n"
            % (sys.executable, ROOT))


def test_sdk_state_step_totals_and_user_exception_is_a_step_error(engine, tmp_path):
    (tmp_path / "runner.py").write_text(RUNNER)
    (tmp_path / "in.txt").write_text("alice 5\nbob 1\nalice 10\nbob -3\nalice 15\nbob 2\n")
    e = engine(topology())
    assert e.wait() == 0, e.log()
    out = (tmp_path / "out.txt").read_text().split()
    # Per key, order holds: alice 5, 15, 30; bob 1, (error), 3.
    assert [x for x in out if x in ("5", "15", "30")] == ["5", "15", "30"]
    assert [x for x in out if x in ("1", "3")] == ["1", "3"]
    assert len(out) == 5
    e.wait_for(r"STEP-ERROR step 'add' key 'bob' \(stream 1 message 4\): step 'add' key b'bob': "
               r"ValueError: negative value -3")
    assert e.summary()["step=add"]["errors"] == "1"


def test_sdk_runner_missing_a_step_function_makes_the_engine_give_up(engine, tmp_path):
    (tmp_path / "runner.py").write_text(RUNNER.replace('steps.key_by("by-name"', 'steps.key_by("other"'))
    (tmp_path / "in.txt").write_text("alice 5\n")
    e = engine(topology())
    assert e.wait() == 1
    e.wait_for(r"RUN-ERROR runner py/\d reported an error \(code 4\): .*by-name")
    e.wait_for(r"SUP-GIVEUP runner py/\d failed 5 times in a row without becoming ready")


def test_wallaroo_sdk_variables_reach_the_runner_and_other_wallaroo_ones_do_not(
        engine, tmp_path, monkeypatch):
    # WALLAROO_SDK_NNG_IPC=1 also switches the SDK to pynng's transport:
    # the run shows that it still talks to the engine's own ipc listener.
    monkeypatch.setenv("WALLAROO_SDK_NNG_IPC", "1")
    monkeypatch.setenv("WALLAROO_NOT_FOR_RUNNERS", "x")
    (tmp_path / "runner.py").write_text(RUNNER.replace(
        'if __name__ == "__main__":',
        'if __name__ == "__main__":\n'
        '    import os\n'
        '    with open("env-%s.txt" % os.environ["WALLAROO_INSTANCE"], "w") as f:\n'
        '        f.write(" ".join(sorted(k for k in os.environ if k.startswith("WALLAROO_"))))\n'))
    (tmp_path / "in.txt").write_text("alice 5\nbob 1\nalice 10\n")
    # The program's env may set WALLAROO_SDK_* too (and only those).
    e = engine(topology().replace("env: {", "env: {WALLAROO_SDK_FROM_TOPOLOGY: '1', "))
    assert e.wait() == 0, e.log()
    assert sorted((tmp_path / "out.txt").read_text().split()) == ["1", "15", "5"]
    for instance in (0, 1):
        names = (tmp_path / ("env-%d.txt" % instance)).read_text().split()
        assert "WALLAROO_SDK_NNG_IPC" in names and "WALLAROO_ENGINE_ADDR" in names
        assert "WALLAROO_SDK_FROM_TOPOLOGY" in names
        assert "WALLAROO_NOT_FOR_RUNNERS" not in names


def test_summary_says_per_runner_where_the_latency_goes(engine, tmp_path):
    (tmp_path / "runner.py").write_text(RUNNER)
    (tmp_path / "in.txt").write_text("".join("k%d %d\n" % (i % 5, i) for i in range(200)))
    e = engine(topology())
    assert e.wait() == 0, e.log()
    s = e.summary()
    total = 0
    for instance in (0, 1):
        to_send = s["batches runner=py/%d ingest_to_send" % instance]
        round_trip = s["batches runner=py/%d round_trip" % instance]
        # One sample of each per batch.
        assert to_send["samples"] == round_trip["samples"]
        for h in (to_send, round_trip):
            assert float(h["p50_us"]) <= float(h["p99.99_us"]) <= float(h["max_us"])
        total += int(round_trip["samples"])
        if int(round_trip["samples"]):
            # A runner in another process cannot answer in no time.
            assert float(round_trip["max_us"]) > 0
    # Both steps (by-name, add) run in the runners: every event crossed
    # twice, in at least one batch per step and at most one per event.
    assert 2 <= total <= 400
