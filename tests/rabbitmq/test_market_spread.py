"""examples/market_spread fed from two RabbitMQ queues (topology-rabbitmq.yaml
and rabbitmq.py), against the real engine and broker: the rejected orders
collected from the results queue pass the example's own check."""
import os
import shutil
import subprocess
import sys
import time

import broker

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EXAMPLE = os.path.join(ROOT, "examples", "market_spread")
ENGINE = os.environ.get("WALLAROO_ENGINE", os.path.join(ROOT, "build", "wallaroo-engine"))
QUEUES = ("market-spread-nbbo", "market-spread-orders", "market-spread-rejected")


def run(argv, cwd, env, timeout=120):
    p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, "%s failed:\n%s%s" % (argv, p.stdout, p.stderr[-3000:])
    return p.stdout


def test_market_spread_over_rabbitmq_passes_the_check(rabbit, tmp_path):
    # A copy of the example beside links to the SDK and the connectors, so
    # the topology's relative paths hold and nothing lands in the tree.
    (tmp_path / "examples").mkdir()
    for name in ("sdk-python", "connectors"):
        (tmp_path / name).symlink_to(os.path.join(ROOT, name))
    work = tmp_path / "examples" / "market_spread"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns(
        "data", "out", "tests", "go", "__pycache__"))
    for q in QUEUES:
        try:
            broker.delete(rabbit.url, q)
        except Exception:
            pass
    env = dict(os.environ, RABBITMQ_URL=rabbit.url,
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    py = sys.executable
    run([py, "gen.py", "--orders", "20000", "--nbbo", "20000", "--seed", "5", "--out", "data"],
        work, env)
    want = int(run([py, "expected.py", "data"], work, env).split()[1])
    assert want > 0
    run([py, "rabbitmq.py", "feed", "data"], work, env)
    engine = subprocess.Popen([ENGINE, "--topology", "topology-rabbitmq.yaml"], cwd=work,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run([py, "rabbitmq.py", "wait", str(want), "--timeout", "120"], work, env, 150)
        # Every input is acknowledged to the broker once processed.
        broker.wait_for(lambda: broker.ready_count(rabbit.url, "market-spread-orders") == 0
                        and broker.ready_count(rabbit.url, "market-spread-nbbo") == 0,
                        30, "the input queues drained")
        engine.terminate()
        out, err = engine.communicate(timeout=60)
        assert engine.returncode == 0, err[-3000:]
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.communicate()
    run([py, "rabbitmq.py", "collect", "out/rejected.bin"], work, env)
    check = run([py, "check.py", "out/rejected.bin", "data"], work, env)
    assert check.splitlines()[-1] == "OK", check
    for q in QUEUES:
        broker.delete(rabbit.url, q)
