"""``weightspace similarity MODEL_A MODEL_B``: layer x layer CKA of two networks.

Kept out of ``cli.py`` so the main CLI file stays a list of mounts; the work
is done by :mod:`weightspace.similarity`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

DATASETS = ("digits", "mnist1d", "random")
CAPTURES = ("auto", "fx", "hooks")




def _is_model_ref(spec: str) -> bool:
    """``hf:DIR`` or ``package.module:factory`` (a dotted module and a name,
    unlike ``arch:weights.safetensors``)."""
    import re

    return spec.startswith("hf:") or bool(re.match(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+:[A-Za-z_]\w*$", spec))


def _build_model(spec: str, seed: int, kwargs: dict, option: str):
    """``arch`` (random init with ``seed``) or ``arch:weights`` -> (model, arch, description).

    Bad input raises a :class:`~weightspace.errors.WeightspaceError` naming
    the option (``--arg-a``/``--arg-b``) or the weights file.
    """
    import torch
    import zoo

    from weightspace.cli.common import check_arch, one_line
    from weightspace.errors import NonFiniteWeightsError, StateDictError
    from weightspace.io import load_state_dict

    if _is_model_ref(spec):  # hf:DIR or package.module:factory
        from weightspace.arch import resolve_model

        r = resolve_model(spec, seed=seed, **kwargs)
        return r.module, r, {"model": r.identity, "kwargs": kwargs, "weights": None,
                             "seed": None if r.hf is not None else seed}
    arch, _, weights = spec.partition(":")
    check_arch(arch, kwargs, option)
    model = zoo.create_model(arch, seed=seed, **kwargs)
    desc = {"arch": arch, "kwargs": kwargs, "weights": weights or None, "seed": None if weights else seed}
    if not weights:
        return model, arch, desc
    sd = load_state_dict(weights)
    for key, t in sd.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            n = int((~torch.isfinite(t)).sum())
            raise NonFiniteWeightsError(f"tensor has {n} NaN/Inf value(s); similarities of such a model are "
                                        "meaningless", path=weights, field=key)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        shown = f" with {option} " + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) if kwargs else ""
        raise StateDictError(f"the weights do not fit architecture {arch!r}{shown}: {one_line(exc)}",
                             path=weights) from None
    return model, arch, desc


def _load_data(name: str, arch: str, n: Optional[int], seed: int):
    """Model inputs ``(N, ...)`` as a float32 / int64 tensor."""
    import numpy as np
    import torch

    if name == "digits":
        from sklearn.datasets import load_digits

        x = torch.tensor(load_digits().data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    elif name == "mnist1d":
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.seed = seed
        if n is not None:
            args.num_samples = max(int(n), 10)
        d = make_dataset(args)  # procedural; never downloads
        x = torch.tensor(np.concatenate([d["x"], d["x_test"]]), dtype=torch.float32).unsqueeze(1)
    elif name == "random" and not isinstance(arch, str):  # a resolved hf:/factory model: like its example input
        ex = arch.example_input
        gen = torch.Generator().manual_seed(int(seed))
        shape = (n or 256, *ex.shape[1:])
        if ex.is_floating_point():
            x = torch.randn(shape, generator=gen, dtype=ex.dtype)
        else:
            vocab = getattr(getattr(arch.module, "config", None), "vocab_size", None) or int(ex.max()) + 1
            x = torch.randint(0, int(vocab), shape, generator=gen, dtype=ex.dtype)
    elif name == "random":
        import zoo

        x = zoo.example_input(arch, batch_size=n or 1024, seed=seed)
    else:  # checked by the command before anything is built
        raise AssertionError(name)
    return x if n is None else x[:n]


def similarity(
    model_a: Annotated[str, typer.Argument(help="ARCH (random init, see --seed), ARCH:WEIGHTS (.safetensors / .pt), "
                                                "hf:DIR (a local Hugging Face directory) or package.module:factory")],
    model_b: Annotated[str, typer.Argument(help="second model, same format")],
    data: Annotated[str, typer.Option(help="digits | mnist1d | random (example inputs of model a)")] = "digits",
    out: Annotated[Path, typer.Option(help="output directory")] = Path("similarity_out"),
    seed: Annotated[int, typer.Option(help="init seed of model a without weights; also the data seed")] = 0,
    seed_b: Annotated[Optional[int], typer.Option(help="init seed of model b without weights [default: seed + 1]")] = None,
    method: Annotated[str, typer.Option(help="linear (exact) | minibatch (Nguyen et al., unbiased)")] = "linear",
    reduction: Annotated[str, typer.Option(help="flatten | pool_spatial | pool_tokens")] = "flatten",
    layers_a: Annotated[Optional[str], typer.Option(help="comma-separated layer names of model a [default: all module outputs]")] = None,
    layers_b: Annotated[Optional[str], typer.Option(help="comma-separated layer names of model b")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="batch size")] = 256,
    max_samples: Annotated[Optional[int], typer.Option(min=1, help="use at most this many samples")] = None,
    match: Annotated[bool, typer.Option(help="also match neurons (Pearson, one-to-one) of same-named layers")] = True,
    capture: Annotated[str, typer.Option(help="activation capture: auto (torch.fx when the model traces, else forward "
                                              "hooks on named submodules, e.g. Hugging Face models) | fx | hooks")] = "auto",
    arg_a: Annotated[Optional[list[str]], typer.Option("--arg-a", help="architecture argument of model a, key=value (repeatable)")] = None,
    arg_b: Annotated[Optional[list[str]], typer.Option("--arg-b", help="architecture argument of model b, key=value (repeatable)")] = None,
) -> None:
    """Compare two networks layer by layer with CKA.

    Writes cka_heatmap.png/.svg and results.json to --out and prints a summary.

    Example: weightspace similarity mlp mlp --seed 0 --seed-b 1 --data digits --out sim/
    """
    import numpy as np

    from weightspace.similarity import (
        DegenerateRepresentationWarning,
        capture_activations,
        match_neurons_by_layer,
        model_cka_matrix,
    )
    from weightspace.similarity.plot import plot_similarity_heatmap

    from weightspace.cli.common import one_line, parse_kv
    from weightspace.errors import ConfigError
    from weightspace.io import atomic_write, check_output_path

    seed_b = seed + 1 if seed_b is None else seed_b
    if data not in DATASETS:
        raise ConfigError(f"unknown data {data!r}; choose one of {', '.join(DATASETS)}", field="--data")
    if capture not in CAPTURES:
        raise ConfigError(f"unknown capture {capture!r}; choose one of {', '.join(CAPTURES)}", field="--capture")
    check_output_path(out, kind="dir", field="--out")
    ma, arch_a, desc_a = _build_model(model_a, seed, parse_kv(arg_a, "--arg-a"), "--arg-a")
    mb, arch_b, desc_b = _build_model(model_b, seed_b, parse_kv(arg_b, "--arg-b"), "--arg-b")
    x = _load_data(data, arch_a, max_samples, seed)
    la = [s.strip() for s in layers_a.split(",")] if layers_a else None
    lb = [s.strip() for s in layers_b.split(",")] if layers_b else None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DegenerateRepresentationWarning)
            res = model_cka_matrix(
                ma, mb, x, layers_a=la, layers_b=lb, method=method, reduction=reduction,
                batch_size=batch_size, capture=capture,
            )
            matches = {}
            common = [k for k in res.layers_a if k in res.layers_b]
            if match and common:
                acts_a = capture_activations(ma, common, x, reduction=reduction, batch_size=batch_size,
                                             method=capture)
                acts_b = capture_activations(mb, common, x, reduction=reduction, batch_size=batch_size,
                                             method=capture)
                small = [k for k in common if acts_a[k].shape[1] * acts_b[k].shape[1] <= 4096**2]
                if small:
                    matches = match_neurons_by_layer(acts_a, acts_b, layers=small)
    except RuntimeError as exc:  # a model cannot run on the data (shapes); bad layer names etc. are SimilarityInputError
        raise ConfigError(f"{model_a} / {model_b} cannot run on {data} inputs of shape {tuple(x.shape[1:])}: "
                          f"{one_line(exc)}", field="--data") from None
    degenerate = sorted({str(w.message) for w in caught if issubclass(w.category, DegenerateRepresentationWarning)})

    out.mkdir(parents=True, exist_ok=True)
    title = f"{method} CKA, {data} (n={res.n_samples}): {model_a} vs {model_b}"
    files = plot_similarity_heatmap(
        res, out / "cka_heatmap", title=title, xlabel=f"b: {model_b}", ylabel=f"a: {model_a}"
    )
    diag = res.matching_diagonal()
    result = {
        "model_a": desc_a,
        "model_b": desc_b,
        "data": data,
        "n_samples": res.n_samples,
        "method": method,
        "reduction": reduction,
        "capture": capture,
        "cka": res.to_dict(),
        "cka_same_name": diag,
        "neuron_matching": {k: {"method": m.method, "mean_correlation": m.mean, "n_matched": int(m.rows.size)} for k, m in matches.items()},
        "degenerate_warnings": degenerate,
        "files": [str(p) for p in files],
    }
    atomic_write(out / "results.json", json.dumps(result, indent=2))

    typer.echo(f"{method} CKA of {model_a} ({len(res.layers_a)} layers) vs {model_b} "
               f"({len(res.layers_b)} layers) on {data}, n={res.n_samples}, reduction={reduction}")
    width = max(len(k) for k in res.layers_a)
    typer.echo(f"  {'layer a'.ljust(width)}  best layer b (CKA)" + ("    same-name CKA  matched corr" if diag else ""))
    for i, name in enumerate(res.layers_a):
        j = int(np.argmax(res.values[i]))
        line = f"  {name.ljust(width)}  {res.layers_b[j]} ({res.values[i, j]:.3f})"
        if name in diag:
            line = line.ljust(width + 40) + f"  {diag[name]:.3f}"
            if name in matches:
                line += f"          {matches[name].mean:.3f}"
        typer.echo(line)
    if diag:
        typer.echo(f"  mean same-name CKA: {np.mean(list(diag.values())):.3f}")
    if degenerate:
        typer.echo(f"  note: {len(degenerate)} zero-variance warning(s) (dead neurons/constant layers); see results.json")
    typer.echo(f"wrote {', '.join(str(p) for p in files)}, {out / 'results.json'}")
