"""Out-of-core merging of safetensors directories: equal to the in-memory
methods, sharded output with index, copied config/tokenizer files, metadata,
dry-run plan, one-line errors, and peak memory (a ~50M-parameter model)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tests import peak_rss
from weightspace.errors import ConfigError, StateDictError
from weightspace.io import read_safetensors
from weightspace.merge import average, breadcrumbs, dare, merge_directories, slerp, task_arithmetic, ties

ROOT = Path(__file__).resolve().parents[2]


def _sd(seed, n_layers=3):
    g = torch.Generator().manual_seed(seed)
    sd = {"embed.weight": torch.randn(10, 6, generator=g)}
    for i in range(n_layers):
        sd[f"model.layers.{i}.mlp.weight"] = torch.randn(6, 6, generator=g)
        sd[f"model.layers.{i}.mlp.bias"] = torch.randn(6, generator=g)
    sd["lm_head.weight"] = torch.randn(10, 6, generator=g)
    sd["pos_ids"] = torch.arange(4)
    return sd


def _write_dir(d: Path, sd, shards=2):
    """``sd`` as a Hugging Face-like directory: ``shards`` files + index, config, tokenizer."""
    d.mkdir(parents=True)
    names = list(sd)
    per = -(-len(names) // shards)
    wm = {}
    for i in range(shards):
        f = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: sd[k].contiguous() for k in names[i * per:(i + 1) * per]}
        save_file(part, str(d / f), metadata={"format": "pt"})
        wm.update({k: f for k in part})
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    (d / "config.json").write_text('{"model_type": "toy"}')
    (d / "tokenizer.json").write_text('{"version": "1.0"}')
    return d


def _read_dir(d: Path):
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(read_safetensors(f))
    return out


@pytest.fixture
def dirs(tmp_path):
    sds = [_sd(s) for s in range(3)]
    return tmp_path, sds, [_write_dir(tmp_path / f"m{i}", sd, shards=1 + i) for i, sd in enumerate(sds)]


CASES = {
    "ties": ({"density": 0.5, "trim": "per_tensor", "sign": "weighted_sum"}, [1.0, 2.0],
             lambda b, f: ties(b, f, [1.0, 2.0], density=0.5, trim="per_tensor", sign="weighted_sum")),
    "dare": ({"density": 0.4, "rescale": "l1", "seed": 3}, None, lambda b, f: dare(b, f, density=0.4, rescale="l1", seed=3)),
    "breadcrumbs": ({"density": 0.5, "beta": 0.1}, None, lambda b, f: breadcrumbs(b, f, density=0.5, beta=0.1)),
    "task_arithmetic": ({"scale": [0.5, 1.0], "density": 0.6, "trim": "per_tensor"}, None,
                        lambda b, f: task_arithmetic(b, f, [0.5, 1.0], density=0.6, trim="per_tensor")),
    "slerp": ({"t": [0.0, 1.0]}, None, lambda b, f: slerp(f[0], f[1], [0.0, 1.0])),
    "linear": ({}, [1.0, 3.0], lambda b, f: average(f, [1.0, 3.0])),
}
_NO_BASE = ("slerp", "linear")


@pytest.mark.parametrize("method", CASES)
def test_streaming_equals_the_in_memory_merge(dirs, method):
    root, sds, paths = dirs
    opts, weights, direct = CASES[method]
    models = paths[1:]
    plan = merge_directories(method, models, root / "out", base=None if method in _NO_BASE else paths[0],
                             weights=weights, options=opts, max_shard_size=200)
    got, want = _read_dir(root / "out"), direct(sds[0], sds[1:])
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k
    assert len(plan.shards) > 1 and (root / "out" / "model.safetensors.index.json").is_file()
    index = json.loads((root / "out" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(want) and set(index["weight_map"].values()) == set(plan.shards)
    assert (root / "out" / "config.json").read_text() == '{"model_type": "toy"}'
    assert (root / "out" / "tokenizer.json").is_file()
    with safe_open(str(root / "out" / next(iter(plan.shards))), "pt") as f:
        rec = json.loads(f.metadata()["weightspace_merge"])
    assert rec["method"] == method and opts.items() <= rec["options"].items()
    assert rec["weights"] == weights


def test_dry_run_returns_the_plan_and_writes_nothing(dirs):
    root, sds, paths = dirs
    plan = merge_directories("dare", paths[1:], root / "out", base=paths[0], dry_run=True, max_shard_size=10**6)
    assert not (root / "out").exists()
    assert sorted(t.name for t in plan.tensors) == sorted(sds[0])
    by = {t.name: t for t in plan.tensors}
    assert by["embed.weight"].shape == (10, 6) and by["embed.weight"].method == "dare"
    assert by["pos_ids"].method == "non_float" and by["pos_ids"].dtype == "I64"
    assert list(plan.shards) == ["model.safetensors"]
    assert plan.model_bytes == sum(v.numel() * v.element_size() for v in sds[0].values())
    assert plan.model_bytes < plan.peak_bytes


def test_streaming_errors_name_the_option_or_tensor(dirs):
    root, sds, paths = dirs
    with pytest.raises(ConfigError, match="per_tensor") as e:
        merge_directories("ties", paths[1:], root / "o", base=paths[0])
    assert e.value.field == "trim"
    with pytest.raises(ConfigError) as e:
        merge_directories("weight_matching", paths[1:], root / "o", base=paths[0])
    assert e.value.field == "method"
    with pytest.raises(ConfigError) as e:
        merge_directories("slerp", paths, root / "o")
    assert e.value.field == "models"
    with pytest.raises(ConfigError, match="takes no base") as e:
        merge_directories("linear", paths[1:], root / "o", base=paths[0])
    assert e.value.field == "base"
    with pytest.raises(ConfigError) as e:
        merge_directories("linear", [], root / "o")
    assert e.value.field == "models"
    other = _sd(5)
    other["model.layers.1.mlp.weight"] = torch.zeros(6, 7)
    bad = _write_dir(root / "bad", other)
    with pytest.raises(StateDictError, match="model.layers.1.mlp.weight"):
        merge_directories("dare", [paths[1], bad], root / "o", base=paths[0])
    assert not (root / "o").exists()


_RSS_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from weightspace.merge import merge_directories
    base_dir, a, b, out = sys.argv[1:5]
    base = reset()
    plan = merge_directories("ties", [a, b], out, base=base_dir, options={"density": 0.3, "trim": "per_tensor"},
                             max_shard_size=40 * 2**20)
    print(json.dumps({"base": base, "peak": peak(), "model_bytes": plan.model_bytes, "shards": len(plan.shards)}))
""")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_of_a_50m_parameter_merge_stays_below_one_and_a_half_models(tmp_path):
    """Three ~50M-parameter fp16 models (48 tensors of 1M); the merge's growth
    of peak RSS (``VmHWM`` reset after the imports of a fresh process, as
    ``tests.peak_rss`` says) must stay below 1.5x one model."""
    g = torch.Generator().manual_seed(0)
    paths = []
    for m in range(3):
        d = tmp_path / f"m{m}"
        d.mkdir()
        for s in range(4):  # 4 shards of 12 tensors
            part = {f"model.layers.{s * 12 + i}.weight": torch.randn(1024, 1024, generator=g).half()
                    for i in range(12)}
            save_file(part, str(d / f"model-{s + 1:05d}-of-00004.safetensors"))
            del part
        wm = {f"model.layers.{s * 12 + i}.weight": f"model-{s + 1:05d}-of-00004.safetensors"
              for s in range(4) for i in range(12)}
        (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
        paths.append(str(d))
    r = peak_rss.run(_RSS_SCRIPT, [*paths, tmp_path / "out"])
    grow, model_bytes = r["peak"] - r["base"], r["model_bytes"]
    assert model_bytes == 48 * 2**20 * 2 and r["shards"] == 3
    print(f"peak RSS growth {grow / 2**20:.0f} MiB, one model {model_bytes / 2**20:.0f} MiB")
    assert 0 < grow < 1.5 * model_bytes, (grow, model_bytes)
    assert len(list((tmp_path / "out").glob("*.safetensors"))) == 3
