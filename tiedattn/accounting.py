"""Exact parameter, FLOP and KV-cache accounting for a ModelConfig, without allocating the model.

Conventions (tested against `sum(p.numel())` of the real model for every variant):
- params_total = every learned tensor once (a tied output layer shares the embedding).
- params_non_embedding = total - token embedding - position table - untied output layer
  (Kaplan et al. 2020's N, the N of the scaling-law fits).
- params_attention = the attention sublayers (fused qkv projection, output projection, and
  the per-head a, b of linear_v).
- Training FLOPs per token = 6 * (matmul weights, output layer included) + 12 * n_layer * d * T:
  2 FLOPs per multiply-add forward, 4 backward; attention scores QK^T and AV cost 2 * 2 * T * d
  per layer forward over the full T x T matrix (PaLM's MFU convention; causal kernels may skip
  the upper half). Norms, biases and elementwise work are not counted.
- KV-cache bytes per token = n_layer * cached tensors (2 for K and V, 1 for K only)
  * kv heads * head_dim * bytes per element (bf16 = 2 by default).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from tiedattn.config import ModelConfig
from tiedattn.variants import parse_variant, qkv_out_features

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


@dataclass(frozen=True)
class Accounting:
    params_total: int
    params_non_embedding: int
    params_attention: int
    flops_per_token: float  # training (forward + backward)
    kv_bytes_per_token: int
    n_kv_head: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _linear(n_in: int, n_out: int, bias: bool) -> int:
    return n_in * n_out + (n_out if bias else 0)


def attention_params(cfg: ModelConfig) -> int:
    """One layer's attention: d x qkv_out (+bias) + d x d output (+bias) + H per per-head scalar (linear_v: 2H)."""
    variant = parse_variant(cfg.variant)
    n = _linear(cfg.d_model, qkv_out_features(variant, cfg), cfg.bias) + _linear(cfg.d_model, cfg.d_model, cfg.bias)
    return n + len(variant.spec.head_params) * cfg.n_head


@functools.lru_cache(maxsize=4096)  # a sweep repeats each (variant, shape, seq_len) over budgets and seeds
def account(cfg: ModelConfig, dtype: str = "bf16") -> Accounting:
    cfg.validate()
    variant = parse_variant(cfg.variant)
    d, L, V = cfg.d_model, cfg.n_layer, cfg.vocab_size
    norm = d * (2 if cfg.norm == "layernorm" and cfg.bias else 1)
    mlp = _linear(d, cfg.ff, cfg.bias) + _linear(cfg.ff, d, cfg.bias)
    attn = attention_params(cfg)
    non_embedding = L * (2 * norm + attn + mlp) + norm  # + final norm
    embedding = V * d + (cfg.seq_len * d if cfg.pos == "learned" else 0) + (0 if cfg.tie_embeddings else V * d)
    matmul_weights = L * (d * qkv_out_features(variant, cfg) + d * d + 2 * d * cfg.ff) + V * d
    n_kv = variant.n_kv_head(cfg.n_head)
    return Accounting(
        params_total=non_embedding + embedding,
        params_non_embedding=non_embedding,
        params_attention=L * attn,
        flops_per_token=float(6 * matmul_weights + 12 * L * d * cfg.seq_len),
        kv_bytes_per_token=L * variant.cached * n_kv * cfg.head_dim * DTYPE_BYTES[dtype],
        n_kv_head=n_kv,
    )


def training_flops(cfg: ModelConfig, seq_len: int, tokens: int) -> float:
    """C = flops_per_token at the training context seq_len x tokens."""
    return account(dataclasses.replace(cfg, seq_len=seq_len)).flops_per_token * tokens


def match_params(cfg: ModelConfig, reference: str = "baseline") -> ModelConfig:
    """Widen (or narrow) d_ff so non-embedding params match `reference` of the same shape.

    Each unit of d_ff costs n_layer * (2d + bias) params, so the change is
    round((N_ref - N) / (n_layer * (2d + bias))); the residual mismatch is below one such unit,
    far under 1% for any shape with d_ff >= 8.
    """
    target = account(dataclasses.replace(cfg, variant=reference)).params_non_embedding
    own = account(cfg).params_non_embedding
    per_unit = cfg.n_layer * (2 * cfg.d_model + (1 if cfg.bias else 0))
    return dataclasses.replace(cfg, d_ff=max(1, cfg.ff + round((target - own) / per_unit)))


# Dense bf16 tensor-core peaks (vendor datasheets, no sparsity), matched against
# torch.cuda.get_device_name() in this order: the first substring that occurs wins.
PEAK_TFLOPS_BF16 = {
    "GH200": 989.0,
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,  # SXM
    "B200": 2250.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
}


def peak_flops(device_name: str) -> float | None:
    """A device's dense bf16 peak in FLOP/s from PEAK_TFLOPS_BF16; None when the name is not listed."""
    return next((t * 1e12 for k, t in PEAK_TFLOPS_BF16.items() if k in device_name), None)
