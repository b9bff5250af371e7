"""Attention variants. Each one only changes how q, k, v are produced; one core runs causal SDPA.

A variant's `qkv(x)` returns (q, k, v) shaped (B, heads, T, hd); a tied projection returns *the
same tensor* (`v is k`), so sharing is checkable with `is`. Positions (RoPE) are applied by the core
to q and k after the variant has produced them, so with v = k the values are the un-rotated keys and
the cache holds one pre-RoPE tensor per token (rotated on use).

| name            | paper   | projections                                   | cached per token per layer |
|-----------------|---------|-----------------------------------------------|----------------------------|
| baseline        | QKV     | Wq, Wk, Wv                                    | K and V                    |
| tied_kv         | Q-K=V   | Wq, Wk; v = k                                 | K                          |
| tied_qk         | Q=K-V   | Wk, Wv; q = k                                 | K and V                    |
| tied_qkv        | Q=K=V   | one W; q = k = v                              | K                          |
| gqa{g}, mqa     | GQA-g   | Wq; Wk, Wv with g kv heads (mqa: g = 1)       | g heads of K and V         |
| tied_kv_gqa{g}  | Q-GQA-g | Wq; Wk with g heads; v = k (tied_kv_mqa: g=1) | g heads of K               |
| linear_v        | V=aQ+bK | Wq, Wk; v = a_h q + b_h k (learned, a=0, b=1) | K and V                    |
| v_q_minus_k     | V=Q-K   | Wq, Wk; v = q - k                             | K and V                    |
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Variant:
    name: str  # canonical name, e.g. "tied_kv_gqa4"
    family: str  # key of QKV_FNS / projection layout, e.g. "tied_kv_gqa"
    groups: int | None  # kv heads for the gqa families; None = n_head
    projections: int  # distinct d -> (heads * hd) projections: how many outputs the fused W has
    cached: int  # tensors cached per kv head per token: 2 (K and V) or 1 (K only)

    @property
    def paper(self) -> str:
        g = self.groups
        return {
            "baseline": "QKV",
            "tied_kv": "Q-K=V",
            "tied_qk": "Q=K-V",
            "tied_qkv": "Q=K=V",
            "gqa": "MQA" if g == 1 else f"GQA-{g}",
            "tied_kv_gqa": "Q-MQA" if g == 1 else f"Q-GQA-{g}",
            "linear_v": "V=aQ+bK",
            "v_q_minus_k": "V=Q-K",
        }[self.family]

    def n_kv_head(self, n_head: int) -> int:
        return n_head if self.groups is None else self.groups


# family -> (projections, cached). GQA families have 1 full-width q plus narrow k (and v).
_FAMILIES = {
    "baseline": (3, 2),
    "tied_kv": (2, 1),
    "tied_qk": (2, 2),
    "tied_qkv": (1, 1),
    "gqa": (3, 2),
    "tied_kv_gqa": (2, 1),
    "linear_v": (2, 2),
    "v_q_minus_k": (2, 2),
}
_PAPER_ALIASES = {
    "qkv": "baseline",
    "q-k=v": "tied_kv",
    "q=k-v": "tied_qk",
    "q=k=v": "tied_qkv",
    "mqa": "gqa1",
    "q-mqa": "tied_kv_gqa1",
    "tied_kv_mqa": "tied_kv_gqa1",
    "v=aq+bk": "linear_v",
    "v=q-k": "v_q_minus_k",
}
KNOWN = "baseline, tied_kv, tied_qk, tied_qkv, gqa{g}, mqa, tied_kv_gqa{g}, tied_kv_mqa, linear_v, v_q_minus_k"


def parse_variant(name: str) -> Variant:
    """Canonical name or paper alias (case-insensitive: 'Q-K=V', 'GQA-4', 'Q-GQA-4') -> Variant."""
    key = _PAPER_ALIASES.get(name.strip().lower(), name.strip().lower())
    key = re.sub(r"^q-gqa-?(\d+)$", r"tied_kv_gqa\1", key)
    key = re.sub(r"^gqa-(\d+)$", r"gqa\1", key)
    m = re.fullmatch(r"(gqa|tied_kv_gqa)(\d+)", key)
    if m:
        family, groups = m.group(1), int(m.group(2))
        if groups < 1:
            raise ValueError(f"variant: '{name}' needs at least 1 kv head")
        canonical = {("gqa", 1): "mqa", ("tied_kv_gqa", 1): "tied_kv_mqa"}.get((family, groups), key)
    elif key in _FAMILIES and key not in ("gqa", "tied_kv_gqa"):
        family, groups, canonical = key, None, key
    else:
        raise ValueError(f"variant: unknown '{name}' (known: {KNOWN}, or the paper's QKV, Q-K=V, GQA-4, ...)")
    projections, cached = _FAMILIES[family]
    return Variant(canonical, family, groups, projections, cached)


def _heads(t: torch.Tensor, n: int) -> torch.Tensor:
    B, T, C = t.shape
    return t.view(B, T, n, C // n).transpose(1, 2)  # (B, n, T, hd)


# Each family: (attention module, x) -> (q, k, v), each (B, heads, T, hd). Tied outputs are the same tensor.
def _baseline(m: Attention, x: torch.Tensor):
    q, k, v = m.qkv(x).split([m.d_model, m.kv_dim, m.kv_dim], dim=2)
    return _heads(q, m.n_head), _heads(k, m.n_kv_head), _heads(v, m.n_kv_head)


def _tied_kv(m: Attention, x: torch.Tensor):
    q, k = m.qkv(x).split([m.d_model, m.kv_dim], dim=2)
    k = _heads(k, m.n_kv_head)
    return _heads(q, m.n_head), k, k


def _tied_qk(m: Attention, x: torch.Tensor):
    k, v = m.qkv(x).split(m.d_model, dim=2)
    k = _heads(k, m.n_head)
    return k, k, _heads(v, m.n_head)


def _tied_qkv(m: Attention, x: torch.Tensor):
    q = _heads(m.qkv(x), m.n_head)
    return q, q, q


def _linear_v(m: Attention, x: torch.Tensor):
    q, k = (_heads(t, m.n_head) for t in m.qkv(x).split(m.d_model, dim=2))
    return q, k, m.v_a.view(1, -1, 1, 1) * q + m.v_b.view(1, -1, 1, 1) * k


def _v_q_minus_k(m: Attention, x: torch.Tensor):
    q, k = (_heads(t, m.n_head) for t in m.qkv(x).split(m.d_model, dim=2))
    return q, k, q - k


QKV_FNS = {
    "baseline": _baseline,
    "gqa": _baseline,
    "tied_kv": _tied_kv,
    "tied_kv_gqa": _tied_kv,
    "tied_qk": _tied_qk,
    "tied_qkv": _tied_qkv,
    "linear_v": _linear_v,
    "v_q_minus_k": _v_q_minus_k,
}


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

    def __init__(self, cfg) -> None:  # cfg: tiedattn.model.ModelConfig
        super().__init__()
        self.variant = parse_variant(cfg.variant)
        self.family = self.variant.family
        self.d_model, self.n_head = cfg.d_model, cfg.n_head
        self.n_kv_head = self.variant.n_kv_head(cfg.n_head)
        self.kv_dim = self.n_kv_head * (cfg.d_model // cfg.n_head)
        self.qkv = nn.Linear(cfg.d_model, qkv_out_features(self.variant, cfg), bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        if self.family == "linear_v":  # v = a q + b k, starts as v = k (the tied_kv model)
            self.v_a = nn.Parameter(torch.zeros(cfg.n_head))
            self.v_b = nn.Parameter(torch.ones(cfg.n_head))

    def project(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None):
        """(q, k, v) as the core sees them: the variant's projections, then RoPE on q and k."""
        q, k, v = QKV_FNS[self.family](self, x)  # (B, H, T, hd), (B, g, T, hd), (B, g, T, hd)
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


def qkv_out_features(variant: Variant, cfg) -> int:
    """Width of the fused input projection: one d-wide q (if not tied) plus kv-wide k (and v)."""
    hd = cfg.d_model // cfg.n_head
    kv_dim = variant.n_kv_head(cfg.n_head) * hd
    if variant.family in ("gqa", "tied_kv_gqa"):
        return cfg.d_model + (variant.projections - 1) * kv_dim
    return variant.projections * cfg.d_model
