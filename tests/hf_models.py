"""Tiny Hugging Face models (offline, built from configs: 2 layers, hidden 32,
vocab 100) and the nanoGPT-style module, shared by the trace, nn, similarity
and merge tests (import as ``tests.hf_models``).

Tests using the Hugging Face builders call
``pytest.importorskip("transformers")`` first; this module imports
transformers only inside the builders.
"""

from __future__ import annotations

import functools

import torch

from tests.perturb import perturb_
from tests.trace.tracekit import NanoGPT


def _gpt2():
    import transformers as T

    cfg = T.GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=4, use_cache=False,
                       bos_token_id=0, eos_token_id=0)
    return cfg, T.GPT2LMHeadModel, (torch.randint(0, 100, (2, 8)),)


def _bert():
    import transformers as T

    cfg = T.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, max_position_embeddings=32)
    return cfg, T.BertModel, (torch.randint(0, 100, (2, 8)),)


def _vit():
    import transformers as T

    cfg = T.ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=64, num_labels=5)
    return cfg, T.ViTForImageClassification, (torch.randn(2, 3, 16, 16),)


def _resnet():
    import transformers as T

    cfg = T.ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                         layer_type="basic", num_labels=5)
    return cfg, T.ResNetForImageClassification, (torch.randn(2, 3, 32, 32),)


def _llama():
    import transformers as T

    cfg = T.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                        use_cache=False, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return cfg, T.LlamaForCausalLM, (torch.randint(0, 100, (2, 8)),)


def _llama_mqa_tied():
    import transformers as T

    # multi-query attention (one k/v head), tied input/output embeddings
    cfg = T.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=32,
                        use_cache=False, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0,
                        pad_token_id=0)
    return cfg, T.LlamaForCausalLM, (torch.randint(0, 100, (2, 8)),)


def _gpt_neox():
    import transformers as T

    # per-head packed q/k/v, partial rotary
    cfg = T.GPTNeoXConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, use_cache=False, bos_token_id=0, eos_token_id=0)
    return cfg, T.GPTNeoXForCausalLM, (torch.randint(0, 100, (2, 8)),)


#: Hugging Face builders: name -> () -> (config, model class, example inputs)
HF_MODELS = {"gpt2": _gpt2, "bert": _bert, "vit": _vit, "resnet": _resnet, "llama": _llama,
             "llama_mqa_tied": _llama_mqa_tied, "gpt_neox": _gpt_neox}

#: the models of the "real checkpoints" checks: five Hugging Face families
#: (GPT-2, BERT, ViT, ResNet, Llama with GQA + rotary) and nanoGPT
CHECKED = ("gpt2", "bert", "vit", "resnet", "llama", "nanogpt")


def build(name: str):
    """``(make, inputs)``: ``make(seed=0)`` returns a fresh model (train mode,
    float32) initialised under ``torch.manual_seed(seed)``; ``inputs`` is a
    tuple of example inputs (batch 2)."""
    if name == "nanogpt":
        def make(seed: int = 0):
            torch.manual_seed(seed)
            return NanoGPT(vocab_size=100, block_size=16, n_layer=2, n_head=4, n_embd=32)

        return make, (torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0)),)
    cfg, cls, x = HF_MODELS[name]()

    def make(seed: int = 0):
        torch.manual_seed(seed)
        return cls(cfg)

    return make, x


def make_inputs(name: str, batch: int, seed: int = 0) -> torch.Tensor:
    """A seeded input batch of ``batch`` samples for model ``name``."""
    _, (x,) = build(name)
    gen = torch.Generator().manual_seed(seed)
    if x.is_floating_point():
        return torch.randn((batch, *x.shape[1:]), generator=gen)
    return torch.randint(0, 100, (batch, *x.shape[1:]), generator=gen)


def perturbed_model(name: str, seed: int = 0, dtype: torch.dtype = torch.float64):
    """A fresh eval-mode model whose every parameter and BatchNorm statistic
    got seeded noise (the default init has zero biases and unit norm weights,
    which would hide a bias-edge or norm bug); tied parameters stay tied."""
    make, _ = build(name)
    return perturb_(make(seed).to(dtype).eval(), 1000 + seed, scale=0.1, mean_scale=0.1)


@functools.lru_cache(maxsize=None)
def analysis(name: str):
    """``weightspace.core.analyze`` of the float64 model (cached per name;
    ``tracer="auto"``: fx for nanoGPT, torch.export for the HF models)."""
    from weightspace.core import analyze

    make, x = build(name)
    model = make(0).double().eval()
    x = tuple(t.double() if t.is_floating_point() else t for t in x)
    return analyze(model, x, tracer="auto")


def planted(name: str, seed: int = 0, perm_seed: int = 7):
    """``(analysis, sd, perm, sd_permuted)``: a perturbed float64 state dict and
    the same network under a random permutation of every group of its spec."""
    from weightspace.symmetry import apply_permutation, random_permutation

    a = analysis(name)
    sd = perturbed_model(name, seed).state_dict()
    perm = random_permutation(a.spec, seed=perm_seed)
    assert any(not torch.equal(p, torch.arange(p.numel())) for p in perm.values()), "identity permutation drawn"
    return a, sd, perm, apply_permutation(sd, a.spec, perm)
