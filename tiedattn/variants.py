"""Attention variants as data: each one only changes how q, k, v are produced.

A variant's `qkv(x)` returns (q, k, v) shaped (B, heads, T, hd); a tied projection returns *the
same tensor* (`v is k`), so sharing is checkable with `is`. The core that runs them (causal SDPA,
RoPE on q and k afterwards) is attention.py's `Attention`.

This module imports no torch (the qkv functions only call tensor methods): the orchestrator parses
names, counts parameters and plans a sweep from this table without paying torch's import (~2.5 s of
CPU per command on the project's 2-core machine).

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

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from tiedattn.attention import Attention


@dataclass(frozen=True)
class Variant:
    name: str  # canonical name, e.g. "tied_kv_gqa4"
    family: str  # key of FAMILIES, e.g. "tied_kv_gqa"
    groups: int | None  # kv heads for the grouped families; None = n_head

    @property
    def spec(self) -> Family:
        return FAMILIES[self.family]

    @property
    def projections(self) -> int:
        return self.spec.projections

    @property
    def cached(self) -> int:
        return self.spec.cached

    @property
    def paper(self) -> str:
        """The paper's notation: QKV, Q-K=V, GQA-4, MQA, Q-GQA-4, ..."""
        spec = self.spec
        return spec.paper_one if self.groups == 1 and spec.paper_one else spec.paper.format(g=self.groups)

    def n_kv_head(self, n_head: int) -> int:
        return n_head if self.groups is None else self.groups


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


@dataclass(frozen=True)
class Family:
    """One row of the variant table: everything that makes a variant family what it is."""

    qkv: Callable  # (attention module, x) -> (q, k, v), each (B, heads, T, hd); tied outputs are one tensor
    projections: int  # distinct d -> (heads * hd) projections: how many outputs the fused W has
    cached: int  # tensors cached per kv head per token: 2 (K and V) or 1 (K only)
    paper: str  # the paper's name; "{g}" stands for the kv heads of a grouped family
    grouped: bool = False  # 1 full-width q plus g narrow kv heads (the name carries g: gqa4)
    head_params: tuple[tuple[str, float], ...] = ()  # learned per-head scalars: (name, initial value)
    name_one: str = ""  # grouped families: the canonical name at g = 1
    paper_one: str = ""  # grouped families: the paper's name at g = 1


# The variant table (the module docstring shows it as prose). Adding a variant is one qkv function
# above and one row here; parsing, the model, accounting and analysis's names all read this table.
FAMILIES: dict[str, Family] = {
    "baseline": Family(_baseline, 3, 2, "QKV"),
    "tied_kv": Family(_tied_kv, 2, 1, "Q-K=V"),
    "tied_qk": Family(_tied_qk, 2, 2, "Q=K-V"),
    "tied_qkv": Family(_tied_qkv, 1, 1, "Q=K=V"),
    "gqa": Family(_baseline, 3, 2, "GQA-{g}", grouped=True, name_one="mqa", paper_one="MQA"),
    "tied_kv_gqa": Family(_tied_kv, 2, 1, "Q-GQA-{g}", grouped=True, name_one="tied_kv_mqa", paper_one="Q-MQA"),
    # v = a q + b k per head, starting as v = k (the tied_kv model)
    "linear_v": Family(_linear_v, 2, 2, "V=aQ+bK", head_params=(("v_a", 0.0), ("v_b", 1.0))),
    "v_q_minus_k": Family(_v_q_minus_k, 2, 2, "V=Q-K"),
}
BASELINE = "baseline"
_ALIASES = {f.paper.lower(): name for name, f in FAMILIES.items() if not f.grouped}  # "q-k=v" -> "tied_kv"
KNOWN = ", ".join(f"{n}{{g}}, {f.name_one}" if f.grouped else n for n, f in FAMILIES.items())


@functools.lru_cache(maxsize=256)  # a sweep's expansion asks ~10 times per trial for a handful of names
def parse_variant(name: str) -> Variant:
    """Canonical name or paper alias (case-insensitive: 'Q-K=V', 'GQA-4', 'Q-GQA-4') -> Variant."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    for family, spec in FAMILIES.items():
        if spec.grouped:  # GQA-4 -> gqa4, Q-GQA-4 -> tied_kv_gqa4, MQA -> gqa1, tied_kv_mqa -> tied_kv_gqa1
            paper = re.escape(spec.paper.split("{g}")[0].rstrip("-").lower()) + r"-?(\d+)"
            key = re.sub(f"^{paper}$", rf"{family}\1", key)
            if key in (spec.paper_one.lower(), spec.name_one):
                key = f"{family}1"
    m = re.fullmatch(r"([a-z_]+?)(\d+)", key)
    if m and m.group(1) in FAMILIES and FAMILIES[m.group(1)].grouped:
        family, groups = m.group(1), int(m.group(2))
        if groups < 1:
            raise ValueError(f"variant: '{name}' needs at least 1 kv head")
        canonical = FAMILIES[family].name_one if groups == 1 else key
    elif key in FAMILIES and not FAMILIES[key].grouped:
        family, groups, canonical = key, None, key
    else:
        raise ValueError(f"variant: unknown '{name}' (known: {KNOWN}, or the paper's QKV, Q-K=V, GQA-4, ...)")
    return Variant(canonical, family, groups)


def paper_name(variant: str) -> str:
    """The paper's notation of a variant (`tied_kv` -> `Q-K=V`); an unknown name is returned as-is."""
    try:
        return parse_variant(variant).paper
    except ValueError:
        return variant


def qkv_out_features(variant: Variant, cfg) -> int:
    """Width of the fused input projection: one d-wide q (if not tied) plus kv-wide k (and v)."""
    hd = cfg.d_model // cfg.n_head
    kv_dim = variant.n_kv_head(cfg.n_head) * hd
    if variant.spec.grouped:
        return cfg.d_model + (variant.projections - 1) * kv_dim
    return variant.projections * cfg.d_model
