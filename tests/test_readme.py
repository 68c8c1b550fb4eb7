"""The README stays true: its API example runs, and CI runs its test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_api_example_runs_and_is_ten_lines():
    (example,) = _blocks("python")[:1]
    assert len(example.strip().splitlines()) <= 10
    exec(compile(example, "README.md", "exec"), {})


def test_ci_runs_the_readme_test_command():
    test_command = _blocks("bash")[1].strip()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in [line.strip() for line in ci]
