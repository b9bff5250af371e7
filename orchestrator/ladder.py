"""Built-in named model shapes that a sweep spec's `size` axis can name.

Non-embedding params N (tiedattn.accounting, baseline QKV, d_ff = 4d, biases, LayerNorm) are in
the comments. Every shape has n_head divisible by 4, so GQA-4 and Q-GQA-4 fit all of them, and an
even head dim, so RoPE fits too.
"""

from __future__ import annotations

LADDER: dict[str, dict[str, int]] = {
    # Tiny CPU shapes: a 1-thread trial runs at ~3e10-6e10 FLOP/s, so a few 100k-token trials a minute.
    "t1": {"d_model": 32, "n_layer": 1, "n_head": 4},  # N = 12.8k
    "t2": {"d_model": 48, "n_layer": 2, "n_head": 4},  # N = 56.6k
    "t3": {"d_model": 64, "n_layer": 2, "n_head": 4},  # N = 100k
    "t4": {"d_model": 96, "n_layer": 3, "n_head": 4},  # N = 336k
    # GPU ladder, GPT-style (head dim 64 from 85M up; 48 and 80 below so that n_head stays a multiple of 4).
    "10M": {"d_model": 384, "n_layer": 6, "n_head": 8},  # N = 10.6M
    "20M": {"d_model": 512, "n_layer": 6, "n_head": 8},  # N = 18.9M
    "40M": {"d_model": 640, "n_layer": 8, "n_head": 8},  # N = 39.4M
    "85M": {"d_model": 768, "n_layer": 12, "n_head": 12},  # N = 85.1M (GPT-2 small)
    "150M": {"d_model": 1024, "n_layer": 12, "n_head": 16},  # N = 151M
    "300M": {"d_model": 1024, "n_layer": 24, "n_head": 16},  # N = 302M (GPT-2 medium)
}
