"""The word count example: its generator, its checker and its runner."""

import importlib.util
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(EXAMPLE.parents[1] / "sdk-python"))

import wallaroo.testing  # noqa: E402


def load(name):
    """EXAMPLE/NAME.py under a name of its own: every example has a gen.py."""
    spec = importlib.util.spec_from_file_location(
        f"word_count_{name}", EXAMPLE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module     # so pickle finds its classes
    spec.loader.exec_module(module)
    return module


gen = load("gen")
check = load("check")
runner = load("word_count")


def reference(text: bytes) -> list[bytes]:
    """The output lines in input order, counted here by hand."""
    counts: Counter = Counter()
    lines = []
    for word in re.findall(rb"[a-z']+", text.lower()):
        counts[word] += 1
        lines.append(b"%s %d" % (word, counts[word]))
    return lines


@pytest.fixture(scope="module")
def text():
    return gen.generate(800, seed=5)


@pytest.fixture(scope="module")
def output(text):
    return reference(text)


@pytest.fixture(scope="module")
def truth(text):
    return check.true_counts(text)


def test_the_same_seed_gives_the_same_bytes():
    assert gen.generate(300, seed=2) == gen.generate(300, seed=2)
    assert gen.generate(300, seed=2) != gen.generate(300, seed=3)


def test_the_text_has_the_requested_lines_of_ascii(text):
    assert text.count(b"\n") == 800 and text.endswith(b"\n")
    text.decode("ascii")


def test_word_frequencies_fall_off_like_zipf():
    counts = check.true_counts(gen.generate(5000, seed=1)).most_common()
    top = counts[0][1]
    assert 5 < top / counts[9][1] < 20          # rank 10: about a tenth
    assert sum(1 for _, n in counts if n <= 2) > 500   # a long tail


def test_the_text_exercises_the_splitter(text):
    assert re.search(rb"[a-z]'[a-z]", text)     # contractions
    assert re.search(rb"[a-z]-[a-z]", text)     # hyphenated pairs
    assert re.search(rb"\b[A-Z]{2,}\b", text)   # capitals
    assert re.search(rb"\d", text)              # numbers


def test_the_command_writes_the_file(tmp_path):
    out = tmp_path / "d" / "t.txt"
    assert gen.main(["--lines", "30", "--seed", "2", "--out", str(out)]) == 0
    assert out.read_bytes() == gen.generate(30, seed=2)


@pytest.mark.parametrize("line, words", [
    (b"Don't stop-me NOW, 42 times.", [b"don't", b"stop", b"me", b"now",
                                       b"times"]),
    (b"", []),
    (b"1984 -- ... !", []),
    (b"'quoted'", [b"'quoted'"]),
    (b"caf\xc3\xa9 au lait", [b"caf", b"au", b"lait"]),
])
def test_split_takes_runs_of_letters_and_apostrophes(line, words):
    assert runner.split(line) == words


def test_the_right_output_passes(output, truth):
    report = check.compare(output, truth)
    assert report.ok
    assert report.lines == len(output) == sum(truth.values())


def test_another_interleaving_of_words_passes(output, truth):
    by_word = sorted(output, key=lambda line: line.split()[0])
    assert by_word != output
    assert check.compare(by_word, truth).ok


def test_a_missing_line_is_caught(output, truth):
    last_of_the = max(i for i, line in enumerate(output)
                      if line.startswith(b"the "))
    report = check.compare(output[:last_of_the] + output[last_of_the + 1:],
                           truth)
    assert not report.ok and report.bad_sequence == 1


def test_a_duplicated_line_is_caught(output, truth):
    report = check.compare(output + output[:1], truth)
    assert not report.ok and report.bad_sequence == 1


def test_a_corrupted_count_is_caught(output, truth):
    bad = list(output)
    word, count = bad[50].split()
    bad[50] = word + b" " + str(int(count) + 1).encode()
    assert check.compare(bad, truth).bad_sequence == 1


def test_a_corrupted_word_is_caught(output, truth):
    bad = list(output)
    bad[50] = b"zzzzzz 1"
    report = check.compare(bad, truth)
    assert report.unexpected == 1 and not report.ok


def test_a_reordered_pair_of_one_word_is_caught(output, truth):
    i, j = [k for k, line in enumerate(output)
            if line.startswith(b"the ")][:2]
    bad = list(output)
    bad[i], bad[j] = bad[j], bad[i]
    assert check.compare(bad, truth).bad_sequence == 1


def test_a_word_never_counted_is_missing(output, truth):
    once = next(w for w, n in truth.items() if n == 1)
    bad = [line for line in output if line != once + b" 1"]
    report = check.compare(bad, truth)
    assert report.missing == 1 and not report.ok


def test_a_malformed_line_is_caught(output, truth):
    report = check.compare(output + [b"the"], truth)
    assert report.malformed == 1 and not report.ok


def run_check(tmp_path, output_lines, text):
    out = tmp_path / "out.txt"
    src = tmp_path / "in.txt"
    out.write_bytes(b"".join(line + b"\n" for line in output_lines))
    src.write_bytes(text)
    return subprocess.run([sys.executable, str(EXAMPLE / "check.py"),
                           str(out), str(src)],
                          capture_output=True, text=True, timeout=60)


def test_the_command_exits_0_or_1(tmp_path, output, text):
    good = run_check(tmp_path, output, text)
    assert good.returncode == 0 and good.stdout.endswith("OK\n")
    bad = run_check(tmp_path, output[1:], text)
    assert bad.returncode == 1 and bad.stdout.endswith("FAIL\n")


def test_the_runner_pipeline_gives_the_reference_output(text, output):
    harness = wallaroo.testing.Harness(runner.build())
    emitted = harness.pipeline(["split", "key-word", "count-word"],
                               text.split(b"\n"))
    assert [e.payload for e in emitted] == output
    assert all(e.payload.split(b" ")[0] == e.key for e in emitted)


def test_the_runner_counts_survive_batches_and_calls(text, truth):
    harness = wallaroo.testing.Harness(runner.build())
    lines = text.split(b"\n")
    for part in (lines[:300], lines[300:]):
        harness.pipeline(["split", "key-word", "count-word"], part,
                         batch_size=64)
    for word, n in truth.most_common(20):
        assert harness.state("count-word", word).count == n
