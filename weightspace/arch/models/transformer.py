"""Transformers: a small ViT with hand-written multi-head attention (timm
layout: fused qkv, reshape into heads, cls token, learned positional
embedding) and a token-sequence encoder built on ``nn.MultiheadAttention``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from weightspace.arch.models._common import image_input_shape
from weightspace.arch.registry import register_model


class Attention(nn.Module):
    """Multi-head self-attention written out by hand.

    ``qkv="fused"`` uses one ``Linear(d, 3d)`` split into q, k, v (timm);
    ``qkv="separate"`` uses three projections and
    ``F.scaled_dot_product_attention``.
    """

    def __init__(self, dim: int, num_heads: int, qkv: str = "fused") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        if qkv not in ("fused", "separate"):
            raise ValueError(f"qkv must be 'fused' or 'separate', got {qkv!r}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.mode = qkv
        if qkv == "fused":
            self.qkv = nn.Linear(dim, 3 * dim)
        else:
            self.q = nn.Linear(dim, dim)
            self.k = nn.Linear(dim, dim)
            self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        if self.mode == "fused":
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            attn = (q @ k.transpose(-2, -1)) * self.scale
            attn = attn.softmax(dim=-1)
            out = attn @ v
        else:
            q = self.q(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
            k = self.k(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
            v = self.v(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
            out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(B, N, C)
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv: str) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


@register_model(
    "vit_tiny",
    input_shape=image_input_shape,
    description="small ViT (hand-written MHA, cls token, pos embedding) for 8x8 digits",
    tags=("transformer",),
)
class VisionTransformer(nn.Module):
    """ViT: conv patch embedding, cls token, learned positional embedding,
    pre-norm blocks, final LayerNorm and a linear head on the cls token."""

    def __init__(
        self,
        image_size: int = 8,
        patch_size: int = 2,
        in_channels: int = 1,
        num_classes: int = 10,
        dim: int = 32,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        qkv: str = "fused",
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} not divisible by patch_size={patch_size}")
        n_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n_patches + 1, dim) * 0.02)
        nn.init.normal_(self.cls_token, std=0.02)
        self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_ratio, qkv) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


@register_model(
    "token_transformer",
    input_shape=lambda kw: (2, kw["seq_len"]),
    input_dtype=torch.long,
    input_high=lambda kw: kw["vocab_size"],
    description="token encoder: Embedding + nn.MultiheadAttention blocks + mean pool",
    tags=("transformer",),
)
class TokenEncoder(nn.Module):
    """Token-sequence classifier: ``nn.Embedding`` + learned positions,
    ``nn.MultiheadAttention`` blocks (post-norm), mean pooling, linear head."""

    def __init__(
        self,
        vocab_size: int = 32,
        seq_len: int = 16,
        num_classes: int = 4,
        dim: int = 32,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Parameter(torch.randn(1, seq_len, dim) * 0.02)
        self.attn = nn.ModuleList(
            nn.MultiheadAttention(dim, num_heads, batch_first=True) for _ in range(depth)
        )
        self.norm1 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(depth))
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
            for _ in range(depth)
        )
        self.norm2 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(depth))
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens):
        x = self.embed(tokens) + self.pos_embed
        for attn, n1, mlp, n2 in zip(self.attn, self.norm1, self.mlp, self.norm2):
            a, _ = attn(x, x, x, need_weights=False)
            x = n1(x + a)
            x = n2(x + mlp(x))
        return self.head(x.mean(dim=1))
