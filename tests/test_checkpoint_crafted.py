"""Crafted checkpoint files, as an attacker would make them: each is refused with
CheckpointError, quickly and with memory bounded by the file's size, or (for a flip in
bytes nothing reads, such as a timestamp) loads exactly the state that was saved. A good
checkpoint is never replaced by a bad one."""

from __future__ import annotations

import io
import json
import pickle
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from test_checkpoint import fix_checksum, rewrite, set_meta
from test_train import blobs, interrupt_at, same_run

from fnn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fnn.train import TrainConfig, TrainingInterrupted, fit

DATA = blobs(seed=7, n=160, n_val=32)
CONFIG = TrainConfig(sizes=(12, 6, 3), epochs=2, batch_size=32, lr=0.05,
                     optimizer="nesterov", backend="numpy", eval_every=2)


@pytest.fixture(scope="module")
def state():
    with pytest.raises(TrainingInterrupted) as info:
        fit(None, DATA, CONFIG, callbacks=[interrupt_at(7)])
    return info.value.state


@pytest.fixture(scope="module")
def good(state, tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "good.npz"
    save_checkpoint(path, state, extra={"dataset": "blobs"})
    return path.read_bytes()


def refused(path, match=None):
    """load_checkpoint(path) raises CheckpointError within 2 s, allocating at most
    twice the file's size plus 1 MiB."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(CheckpointError, match=match) as info:
            load_checkpoint(path)
    finally:
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert seconds < 2, seconds
    assert peak < 2 * path.stat().st_size + 2**20, peak
    return str(info.value)


def write(tmp_path, data, name="bad.npz"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- truncations and flips
def test_every_truncation_is_refused(tmp_path, good):
    cuts = sorted(set(np.linspace(0, len(good) - 1, 80).astype(int).tolist())
                  | {0, 1, 4, 22, len(good) - 22, len(good) - 1})
    for keep in cuts:
        refused(write(tmp_path, good[:keep]))


def test_byte_flips_are_refused_or_change_nothing(tmp_path, good, state):
    rng = np.random.default_rng(12)
    loaded = 0
    for at in rng.choice(len(good), size=150, replace=False).tolist():
        data = bytearray(good)
        data[at] ^= 1 << int(rng.integers(8))
        path = write(tmp_path, bytes(data))
        try:
            got = load_checkpoint(path)
        except CheckpointError:
            continue
        loaded += 1  # a byte nothing reads (a timestamp, a header's padding)
        same_run(got, state)
    assert loaded < 40, loaded


# ---------------------------------------------------------------- every metadata field
WRONG_META = {
    "format": ["fnn.other", 1, None],
    "version": [2, "1", 1.0, True, None],
    "sizes": [[12, 6], [12, 6, 4], "12-6-3", [12, 0, 3], [12, 6.0, 3], [12, 6, 10**20]],
    "dtype": ["float16", "int64", None, 32],
    "config": [None, [], {"bogus": 1}, {"lr": -1}, {"optimizer": "rmsprop"},
               {"sizes": [12, 7, 3]}, {"dtype": "float64"}, {"epochs": "2"}],
    "step": [-1, "7", 7.0, None, 6, 10**30, True],
    "epoch": [-1, 5, "1", 2.5],
    "batch": [-1, 5, 10**9, "2"],
    "rng_state": [None, {}, {"bit_generator": "Bogus"}, {"bit_generator": "PCG64"},
                  {"bit_generator": "PCG64", "state": {"state": "x", "inc": 1}},
                  "PCG64"],
    "elapsed": ["x", -1.0, None, [1]],
    "data_fingerprint": [7, None, ["n=160"], "n=160 d=13 labels-sha256=0", "x" * 2000,
                         "n=0 d=12 labels-sha256=0"],
    "opt_state": [None, {}, {"type": "AdamState", "count": 7, "fields": {"mu": 2, "nu": 2}},
                  {"type": "SGDState", "count": -1, "fields": {"velocity": 2}},
                  {"type": "SGDState", "count": 7, "fields": {"velocity": 0}},
                  {"type": "SGDState", "count": 7, "fields": {"velocity": 2}, "x": 1},
                  {"type": "Pickle", "count": 7, "fields": {}}],
    "extra": [[1, 2], "x", None, 3],
}
CASES = [(k, i) for k, values in WRONG_META.items() for i in range(len(values))]


@pytest.mark.parametrize("field, i", CASES)
def test_every_metadata_field_wrong_is_refused(tmp_path, good, field, i):
    path = write(tmp_path, good)
    value = WRONG_META[field][i]
    if field == "config":
        def change(a):
            meta = json.loads(a["meta"].tobytes())
            if isinstance(value, dict):
                meta["config"].update(value)
            else:
                meta["config"] = value
            a["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    else:
        def change(a):
            set_meta(a, **{field: value})
    rewrite(path, lambda a: (change(a), fix_checksum(a)))
    refused(path)


@pytest.mark.parametrize("what", ["missing key", "unknown key", "not an object", "NaN",
                                  "not UTF-8", "deep nesting", "over 8 MiB"])
def test_malformed_metadata_is_refused(tmp_path, good, what):
    path = write(tmp_path, good)

    def change(a):
        meta = json.loads(a["meta"].tobytes())
        if what == "missing key":
            del meta["elapsed"]
        elif what == "unknown key":
            meta["pickle"] = "cos\nsystem\n"
        text = json.dumps(meta).encode()
        text = {"not an object": b"[1, 2]",
                "NaN": text.replace(b'"elapsed": ', b'"elapsed": NaN, "x": '),
                "not UTF-8": b"\xff\xfe" + text,
                "deep nesting": b"[" * 100_000 + b"]" * 100_000,
                "over 8 MiB": text[:-1] + b', "pad": "' + b"x" * (8 * 2**20) + b'"}',
                }.get(what, text)
        a["meta"] = np.frombuffer(text, dtype=np.uint8)
        fix_checksum(a)

    rewrite(path, change)
    refused(path)


# ---------------------------------------------------------------- arrays and sizes
def _replace_entry(good: bytes, name: str, data: bytes, method=zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename != name:
                dst.writestr(info, src.read(info))
        info = zipfile.ZipInfo(name)
        info.compress_type = method
        dst.writestr(info, data)
    return out.getvalue()


def _npy(header: dict, payload: bytes = b"") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_2_0(buf, header) if header.pop("v2", False) else \
        np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload


@pytest.mark.parametrize("header", [
    {"descr": "<f8", "fortran_order": False, "shape": (2**40,)},
    {"descr": "<f8", "fortran_order": False, "shape": (2**31, 2**31)},
    {"descr": "<f8", "fortran_order": False, "shape": (7, 2)},
    {"descr": "<f4", "fortran_order": False, "shape": (7,)},
    {"descr": ">f8", "fortran_order": False, "shape": (7,)},
    {"descr": "|O", "fortran_order": False, "shape": (7,)},
    {"descr": "<f8", "fortran_order": False, "shape": (9,), "v2": True},
    {"descr": "<f8", "fortran_order": False, "shape": (7,), "short": True},
], ids=["2**40", "2**62", "2-d", "float32", "big-endian", "object", "v2-9", "short-data"])
def test_declared_shapes_and_dtypes_are_checked_before_reading(tmp_path, good, header):
    header = dict(header)
    payload = b"\0" * (40 if header.pop("short", False) else 56)
    data = _replace_entry(good, "history.loss.npy", _npy(header, payload))
    message = refused(write(tmp_path, data))
    assert "history.loss" in message


def test_a_directory_that_declares_a_huge_size_is_refused(tmp_path, good):
    # The central directory's uncompressed size of the first entry set to 2**31.
    data = bytearray(good)
    at = data.find(b"PK\x01\x02")
    data[at + 24:at + 28] = (2**31).to_bytes(4, "little")
    refused(write(tmp_path, bytes(data)))


@pytest.mark.parametrize("mib", [16, 64])
def test_deflate_bombs_are_refused_before_decompressing(tmp_path, good, mib):
    payload = _npy({"descr": "<f8", "fortran_order": False, "shape": (mib * 2**17,)},
                   bytes(mib * 2**20))
    data = _replace_entry(good, "history.eval_loss.npy", payload, zipfile.ZIP_DEFLATED)
    path = write(tmp_path, data)
    assert path.stat().st_size < 2**20
    assert "zip bomb" in refused(path)


def test_a_deflated_checkpoint_within_bounds_loads(tmp_path, good, state):
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    same_run(load_checkpoint(write(tmp_path, out.getvalue())), state)


@pytest.mark.parametrize("method", [1, 12, 14, 93, 99])
def test_unknown_compression_methods_are_refused(tmp_path, good, method):
    data = bytearray(good)
    for sig, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = data.find(sig)
        data[at + offset:at + offset + 2] = method.to_bytes(2, "little")
    assert f"compression method {method}" in refused(write(tmp_path, bytes(data)))


def test_duplicate_entry_names_are_refused(tmp_path, good):
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        with pytest.warns(UserWarning, match="Duplicate name"):
            dst.writestr("params.0.w.npy", src.read("params.0.w.npy"))
    refused(write(tmp_path, out.getvalue()), "repeated entry")


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_pickle_payloads_are_never_unpickled(tmp_path, good, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = np.empty(7, dtype=object)
    evil[:] = [_Payload()] * 7
    buf = io.BytesIO()
    np.save(buf, evil, allow_pickle=True)
    for name in ("history.loss.npy", "meta.npy", "params.0.b.npy"):
        refused(write(tmp_path, _replace_entry(good, name, buf.getvalue())))
    raw = pickle.dumps(_Payload())  # a bare pickle where an entry or the file should be
    refused(write(tmp_path, _replace_entry(good, "checksum.npy", raw)))
    refused(write(tmp_path, raw))
    assert not (tmp_path / "PWNED").exists()


def test_a_single_npy_file_and_other_zips_are_refused(tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    refused(write(tmp_path, buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("readme.txt", "hello")
    refused(write(tmp_path, out.getvalue()), "not an fnn checkpoint")


# ---------------------------------------------------------------- never replaced by a bad one
def test_a_good_checkpoint_is_never_replaced_by_a_bad_one(tmp_path, good, state, monkeypatch):
    path = write(tmp_path, good, "checkpoint.npz")
    w = state.params[0].w.copy()
    w[0, 0] = np.nan
    bad_params = (state.params[0]._replace(w=w), *state.params[1:])
    with pytest.raises(CheckpointError, match="not finite"):
        save_checkpoint(path, state._replace(params=bad_params))
    with pytest.raises(TypeError, match="extra"):
        save_checkpoint(path, state, extra={"x": object()})
    with pytest.raises(ValueError, match="extra"):
        save_checkpoint(path, state, extra={"x": "y" * (5 * 2**20)})

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, state)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]
