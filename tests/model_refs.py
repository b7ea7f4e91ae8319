"""Bad model references shared by the tests of every entry point that takes
one (core, predict rank, the generators, zoo recipes; import as
``tests.model_refs``)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from weightspace.arch import ModelRefError
from weightspace.errors import MissingFileError, UnknownNameError


def bad_references(tmp_path: Path, module: str) -> list[tuple[object, type, str]]:
    """``(reference, library exception, text of the one-line message)`` for an
    unknown name, a factory missing from its module, a module that does not
    import, a missing directory, a directory without ``config.json`` and a
    module without an example input. ``module``: an importable module
    (the calling test's ``__name__``)."""
    empty = tmp_path / "empty_dir"
    empty.mkdir(exist_ok=True)
    return [
        ("no_such_arch", UnknownNameError, "unknown architecture 'no_such_arch'"),
        (f"{module}:nope", ModelRefError, "has no 'nope'"),
        ("no_such_pkg.mod:fn", ModelRefError, "cannot import module"),
        (f"hf:{tmp_path / 'missing'}", MissingFileError, "no such directory"),
        (f"hf:{empty}", MissingFileError, "no config.json"),
        (nn.Linear(2, 2), ModelRefError, "example input is needed"),
    ]


def one_error_line(output: str) -> str:
    """The CLI output's only non-empty line, which must be ``error: ...``."""
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), output
    return lines[0]


def save_tiny_gpt2(directory: Path):
    """A tiny GPT-2 (1 layer, width 16, vocab 50; seed 0, eval mode) saved
    with ``save_pretrained`` to ``directory``; returns the model. Call
    ``pytest.importorskip("transformers")`` first."""
    import torch
    import transformers as T

    cfg = T.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=0,
                       eos_token_id=0)
    torch.manual_seed(0)
    model = T.GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(directory)
    return model
