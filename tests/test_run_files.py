"""The small modules behind a run's files: run configs, scaling, images, confusion
matrices, provenance. Their bad input raises ValueError/TypeError naming the argument."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from fnn.confusion import confusion_matrix, format_confusion
from fnn.provenance import provenance
from fnn.run_config import config_json, read_run_config
from fnn.scaling import apply_scaling, fit_scaling, range_warning
from fnn.train import TrainConfig


def test_run_config_round_trip(tmp_path):
    config = TrainConfig(sizes=(4, 8, 3), activation=("tanh",), dropout=(0.1, 0.2),
                         val_fraction=0.1, patience=2)
    data = {"dataset": "d", "limit": 5, "scale": "standardize"}
    (tmp_path / "config.json").write_text(json.dumps(config_json(config, data, {"x": 1})))
    fields, opts = read_run_config(tmp_path)  # the folder works too
    assert TrainConfig(**fields) == config
    assert opts == {**dict.fromkeys(("image_column", "label_column", "train_split",
                                     "test_split")), **data}


@pytest.mark.parametrize("text, match", [
    ("[1, 2]", r"expected fnn's run config .* got list"),
    ('{"train": 3}', "got dict with keys"),
    ('{"format": "fnn.run-config", "version": 2, "train": {}}', "version 1, got 'fnn.run-config' version 2"),
    ('{"train": {"sizez": [1, 2]}}', r"unknown keys \['sizez'\] in 'train'"),
    ("\xff\xfe", "unreadable file"),
])
def test_run_config_refuses_files_that_are_not_fnn_s(tmp_path, text, match):
    path = tmp_path / "c.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match=match) as info:
        read_run_config(path)
    assert str(path) in str(info.value)


def test_scalings_and_their_bad_input():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 17, (50, 6)).astype(np.uint8)
    raw[:, 0] = 3  # a constant feature
    x = np.divide(raw, np.float32(255), dtype=np.float32)
    assert apply_scaling(x, fit_scaling("pixel", x)) is x
    div = apply_scaling(x, fit_scaling(16, x))
    np.testing.assert_array_equal(div, np.divide(raw, np.float32(16), dtype=np.float32))
    spec = json.loads(json.dumps(fit_scaling("standardize", x)))  # survives JSON exactly
    z = apply_scaling(x, spec)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[:, 1:].mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(z[:, 1:].std(axis=0), 1, rtol=1e-5)
    assert np.all(z[:, 0] == 0)  # std 0 taken as 1: centred, not divided by zero
    rows = np.arange(0, 50, 3)  # the statistics of these rows alone
    part = fit_scaling("standardize", x, rows)
    assert part == fit_scaling("standardize", x[rows]) and part != fit_scaling("standardize", x)
    assert "largest value is 16" in range_warning(x, "pixel")
    assert range_warning(x, 16) is None and range_warning(x, "standardize") is None
    with pytest.raises(ValueError, match="scale: expected one of"):
        fit_scaling("minmax", x)
    with pytest.raises(ValueError, match="scale: expected one of"):
        fit_scaling(-1.0, x)
    with pytest.raises(ValueError, match="scaling: statistics of 6 features, got x of 3"):
        apply_scaling(x[:, :3], spec)
    with pytest.raises(ValueError, match="scaling: expected a spec of kind"):
        apply_scaling(x, {"kind": "log"})


def test_read_gray_image(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    from fnn.images import read_gray_image

    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(pixels, mode="L").save(tmp_path / "a.png")
    got = read_gray_image(tmp_path / "a.png", (3, 4))
    assert got.dtype == np.uint8 and np.array_equal(got, pixels)
    rgb = np.stack([pixels] * 3, axis=-1)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "rgb.png")
    assert np.array_equal(read_gray_image(tmp_path / "rgb.png", (3, 4)), pixels)  # gray in
    with pytest.raises(ValueError, match=r"expected 4x3 pixels .* got 3x4; resize it first"):
        read_gray_image(tmp_path / "a.png", (4, 3))
    Image.fromarray(pixels.astype(np.float32), mode="F").save(tmp_path / "f.tiff")
    with pytest.raises(ValueError, match="got mode 'F'"):
        read_gray_image(tmp_path / "f.tiff", (3, 4))


def test_confusion_matrix_counts_and_text():
    m = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    lines = format_confusion(m).splitlines()
    assert lines[1].split() == ["0", "1", "1", "0", "50.00%"]
    assert lines[3].split() == ["2", "1", "0", "2", "66.67%"]
    with pytest.raises(ValueError, match=r"y_pred: expected ints in \[0, 3\)"):
        confusion_matrix(np.array([0]), np.array([3]), 3)


def test_provenance_without_threadpoolctl_or_git(monkeypatch):
    info = provenance()
    assert info["python"] == sys.version.split()[0] and info["numpy"] == np.__version__
    json.dumps(info)  # JSON-able as it is
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import fails
    monkeypatch.setattr("fnn.provenance._git_commit", lambda: None)
    info = provenance()
    assert info["blas"] is None and info["git"] is None


def test_provenance_names_the_checkout_s_commit():
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert provenance()["git"]["commit"] == head
