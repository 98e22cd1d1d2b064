"""The README and docs: the Python example runs, and every repository path and config they name exists."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + [os.path.join("docs", f) for f in sorted(os.listdir(os.path.join(ROOT, "docs")))]


def _read(page):
    with open(os.path.join(ROOT, page)) as f:
        return f.read()


def test_readme_python_example_runs():
    code = re.search(r"## In Python\n\n```python\n(.*?)```", _read("README.md"), re.S).group(1)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    assert scope["logits"].shape == (8, 10)
    assert type(scope["engine"]).__name__ == "DeployEngine"


PATH = re.compile(r"(?<![\w/.-])((?:configs|benchmarks|docs|python|csrc|tests|scripts|triton_kernels)/"
                  r"[\w./{},<>-]+[\w}>])")


def _expand(path):
    """'benchmarks/results/cpu.{json,md}' -> both files; '<name>' placeholders are not paths."""
    m = re.search(r"\{([^}]*)\}", path)
    if not m:
        return [path]
    return [p for alt in m.group(1).split(",") for p in _expand(path[:m.start()] + alt + path[m.end():])]


@pytest.mark.parametrize("page", PAGES)
def test_named_paths_exist(page):
    missing = []
    for raw in PATH.findall(_read(page)):
        if "<" in raw or "*" in raw or "_{" in raw:
            continue  # a pattern (<name>, *, {method}), not one file
        for path in _expand(raw.rstrip(".,")):
            if not os.path.exists(os.path.join(ROOT, path)):
                missing.append(path)
    assert not missing, f"{page} names paths that do not exist: {sorted(set(missing))}"
