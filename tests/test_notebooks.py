"""Every notebook in notebooks/ runs from a clean kernel, and is committed executed.

CI runs each notebook top to bottom in a fresh kernel of this interpreter, with
``FNN_NOTEBOOK_QUICK=1`` in the kernel's environment (the notebooks' switch for a short
run, which they acknowledge by printing "quick run") and the notebook's folder as the
working directory; any error fails the test. The committed files must hold the outputs of
a full run: every code cell executed in order, no errors, nothing on stderr, no paths of
the machine that ran them.

Re-execute in full and save the outputs (what a commit should hold)::

    python tests/test_notebooks.py                # every notebook
    python tests/test_notebooks.py notebooks/mnist.ipynb
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

__all__ = ["execute"]

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
QUICK_ENV = "FNN_NOTEBOOK_QUICK"
QUICK_MARK = "quick run"
# Per cell: a cold Numba cache compiles kernels inside the first cells that use them.
CELL_TIMEOUT = 300
MAX_BYTES = 400_000


def execute(path: Path, *, quick: bool, kernel_dir: Path):
    """Run the notebook at `path` in a fresh kernel; returns the executed NotebookNode.

    The kernel is this interpreter (a kernel spec written into `kernel_dir`, so an
    unrelated "python3" spec installed on the machine cannot be picked instead), with
    cwd = the notebook's folder. Raises nbclient's CellExecutionError on any error.
    """
    import nbformat
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    spec = kernel_dir / "python3"
    if not spec.exists():
        write_kernel_spec(spec)  # argv: [sys.executable, "-m", "ipykernel_launcher", ...]
    km = KernelManager(
        kernel_name="python3",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]),
    )
    env = {k: v for k, v in os.environ.items() if k != QUICK_ENV}
    if quick:
        env[QUICK_ENV] = "1"
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        km=km,
        timeout=CELL_TIMEOUT,
        record_timing=False,  # no timestamps in the saved cells
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(env=env)
    return nb


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def _output_text(nb) -> str:
    return "\n".join(json.dumps(o) for c in _code_cells(nb) for o in c.outputs)


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory) -> Path:
    for module in ("nbformat", "nbclient", "ipykernel"):
        pytest.importorskip(module, reason="needs the dev extras: pip install -e '.[dev]'")
    return tmp_path_factory.mktemp("kernels")


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {ROOT / 'notebooks'}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_with_outputs_of_a_full_run(path):
    nbformat = pytest.importorskip("nbformat", reason="needs the dev extras")

    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size} bytes"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    cells = _code_cells(nb)
    assert cells
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1)), (
        "not executed top to bottom in one kernel"
    )
    for i, cell in enumerate(cells):
        assert cell.outputs, f"code cell {i} has no output:\n{cell.source}"
        for out in cell.outputs:
            assert out.output_type != "error", f"code cell {i}: {out.ename}: {out.evalue}"
            assert out.get("name") != "stderr", f"code cell {i} wrote to stderr: {out.text}"
        assert "execution" not in cell.metadata, "timestamps in the cell metadata"
    text = _output_text(nb)
    assert QUICK_MARK not in text, f"outputs of a {QUICK_ENV}=1 run were committed"
    for private in {str(ROOT), str(Path.home())} - {"/"}:
        assert private not in text, f"outputs show a path of this machine: {private}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_runs_from_a_clean_kernel_in_quick_mode(path, kernel_dir):
    nb = execute(path, quick=True, kernel_dir=kernel_dir)
    cells = _code_cells(nb)
    assert all(c.execution_count is not None for c in cells)
    assert not [o for c in cells for o in c.outputs if o.output_type == "error"]
    # The switch reached the kernel: the notebook says it ran the short version.
    assert QUICK_MARK in _output_text(nb)


def main(argv: list[str]) -> None:
    import nbformat

    paths = [Path(a).resolve() for a in argv] or NOTEBOOKS
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            print(f"executing {path.relative_to(ROOT)} (full run) ...", flush=True)
            nb = execute(path, quick=False, kernel_dir=Path(tmp))
            nbformat.write(nb, path)
            print(f"  saved, {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
