"""The examples in README.md run: the runner module and its tests."""

import importlib
import os
import re
import sys

SDK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_example_module_and_its_tests_work(tmp_path, monkeypatch):
    with open(os.path.join(SDK, "README.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    program = next(b for b in blocks if "def build_steps" in b)
    tests = next(b for b in blocks if "Harness(build_steps())" in b)
    (tmp_path / "readme_wordcount.py").write_text(program)
    (tmp_path / "readme_wordcount_test.py").write_text(
        "from readme_wordcount import build_steps\n" + tests
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = importlib.import_module("readme_wordcount_test")
        functions = [getattr(module, n) for n in dir(module) if n.startswith("test_")]
        assert len(functions) == 2
        for fn in functions:
            fn()
    finally:
        sys.modules.pop("readme_wordcount", None)
        sys.modules.pop("readme_wordcount_test", None)
