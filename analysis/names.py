"""Display names (the paper's notation) for canonical variant names."""

from __future__ import annotations

import re

BASELINE = "baseline"

_FIXED = {
    "baseline": "QKV",
    "tied_kv": "Q-K=V",
    "tied_qk": "Q=K-V",
    "tied_qkv": "Q=K=V",
    "mqa": "MQA",
    "tied_kv_mqa": "Q-MQA",
    "linear_v": "V=aQ+bK",
    "v_q_minus_k": "V=Q-K",
}
_PATTERNS = ((re.compile(r"tied_kv_gqa(\d+)"), "Q-GQA-{}"), (re.compile(r"gqa(\d+)"), "GQA-{}"))


def display_name(variant: str) -> str:
    """Paper notation for a variant (`tied_kv` -> `Q-K=V`); unknown names are returned as-is."""
    if variant in _FIXED:
        return _FIXED[variant]
    for pattern, template in _PATTERNS:
        match = pattern.fullmatch(variant)
        if match:
            return template.format(match.group(1))
    return variant
