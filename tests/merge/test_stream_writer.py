"""The streamed shard writer: the same header and bytes as
``safetensors.torch.save_file``, tensors in any order, every tensor
required; a failed merge or commit leaves no temp files and no index."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from safetensors.torch import save_file

import weightspace.merge.stream as stream
from weightspace.errors import StateDictError
from weightspace.merge import merge_directories
from weightspace.merge.stream import TensorPlan, _ShardWriter

from tests.merge.test_merge_stream import _read_dir, _sd, _write_dir

META = {"weightspace_merge": "{}", "format": "pt"}


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "b.f32": torch.randn(3, 5, generator=g), "a.f64": torch.randn(7, generator=g, dtype=torch.float64),
        "c.bf16": torch.randn(2, 3, generator=g).bfloat16(), "d.f16": torch.randn(5, generator=g).half(),
        "e.i64": torch.arange(3), "f.bool": torch.tensor([True, False, True]), "g.scalar": torch.tensor(2.5),
        "h.empty": torch.zeros(0, 4), "i.u8": torch.arange(5, dtype=torch.uint8), "j.i32": torch.arange(2).int(),
    }


def _split(data: bytes):
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def _plans(ts):
    names = {v: k for k, v in stream._DTYPES.items()}
    return [TensorPlan(k, tuple(v.shape), names[v.dtype], "x") for k, v in ts.items()]


def test_shard_writer_matches_save_file(tmp_path):
    ts = _tensors()
    save_file(ts, str(tmp_path / "ref.safetensors"), metadata=META)
    w = _ShardWriter(tmp_path / "out.safetensors", _plans(ts), META)
    for k in reversed(list(ts)):  # any order: each tensor has its offset
        w.put(k, ts[k])
    w.commit()
    got, want = (tmp_path / "out.safetensors").read_bytes(), (tmp_path / "ref.safetensors").read_bytes()
    assert _split(got) == _split(want)
    assert len(got) == len(want)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors", "ref.safetensors"]


def test_shard_writer_needs_every_tensor_with_its_planned_dtype_and_shape(tmp_path):
    ts = _tensors()
    w = _ShardWriter(tmp_path / "out.safetensors", _plans(ts), META)
    with pytest.raises(StateDictError, match="b.f32") as e:
        w.put("b.f32", ts["b.f32"].double())
    assert e.value.field == "b.f32"
    with pytest.raises(StateDictError, match=r"\(5, 3\)"):
        w.put("b.f32", ts["b.f32"].reshape(5, 3))
    for k in list(ts)[1:]:
        w.put(k, ts[k])
    with pytest.raises(StateDictError, match="1 tensors of the shard were not written") as e:
        w.commit()
    assert e.value.field == "b.f32"
    assert list(tmp_path.iterdir()) == []


def _dirs(tmp_path):
    return [_write_dir(tmp_path / f"m{i}", _sd(i), shards=2) for i in range(2)]


def test_a_failed_read_mid_merge_leaves_no_temp_file_and_no_index(tmp_path, monkeypatch):
    paths = _dirs(tmp_path)
    read = stream._Dir.read

    def failing(self, name):
        if name == "lm_head.weight":
            raise OSError("read error")
        return read(self, name)

    monkeypatch.setattr(stream._Dir, "read", failing)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="read error"):
        merge_directories("linear", paths, out, max_shard_size=200)
    left = sorted(p.name for p in out.iterdir())
    assert not [n for n in left if n.endswith(".tmp")] and "model.safetensors.index.json" not in left
    assert left  # the shards before the failure were complete and committed
    for f in left:
        assert f.endswith(".safetensors")


def test_a_failed_commit_stops_the_merge_before_the_index(tmp_path, monkeypatch):
    paths = _dirs(tmp_path)
    commit = stream.AtomicFile.commit

    def failing(self, *a, **k):
        if self.path.name.startswith("model-00002"):
            self.abort()
            raise OSError("no space left on device")
        return commit(self, *a, **k)

    monkeypatch.setattr(stream.AtomicFile, "commit", failing)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="no space left"):
        merge_directories("linear", paths, out, max_shard_size=200)
    left = sorted(p.name for p in out.iterdir())
    assert "model.safetensors.index.json" not in left and not [n for n in left if n.endswith(".tmp")]
    assert not any(n.startswith("model-00002") for n in left)
    monkeypatch.setattr(stream.AtomicFile, "commit", commit)
    merge_directories("linear", paths, out, max_shard_size=200)  # a rerun completes the directory
    assert (out / "model.safetensors.index.json").is_file() and len(_read_dir(out)) == 9


def test_background_fsyncs_while_writing_change_nothing_but_when_the_disk_writes(tmp_path, monkeypatch):
    paths = _dirs(tmp_path)
    synced = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), fsync(fd))[1])
    merge_directories("linear", paths, tmp_path / "ref", max_shard_size=200)
    n_ref, synced[:] = len(synced), []
    monkeypatch.setattr(stream, "SYNC_BYTES", 1)  # an fsync after every tensor
    plan = merge_directories("linear", paths, tmp_path / "out", max_shard_size=200)
    assert len(synced) == n_ref + len(plan.tensors)
    for f in sorted((tmp_path / "ref").iterdir()):
        assert (tmp_path / "out" / f.name).read_bytes() == f.read_bytes(), f.name
