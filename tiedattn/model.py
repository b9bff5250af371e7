"""Pre-LN decoder-only transformer whose attention is one of the variants in attention.py.

Reads top to bottom: config -> MLP -> Block -> GPT. Accounting (params, FLOPs, KV cache) for any
config without allocating the model lives next door in accounting.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tiedattn.attention import Attention, parse_variant, rope_cache


class ConfigError(ValueError):
    """A model or training config that cannot work; the message names the field."""


# Upper bounds that catch a typo (an extra zero or three) before a sweep allocates it: each is
# ~8x past the largest models published (d_model 18,432 and 126 layers in Llama 3 405B, 128 heads,
# a 256k vocab in Gemma, 128k-token contexts).
MAX_SHAPE = {"d_model": 1 << 17, "n_layer": 1024, "n_head": 1024, "d_ff": 1 << 19, "vocab_size": 1 << 21,
             "seq_len": 1 << 20}  # fmt: skip


@dataclass(frozen=True)
class ModelConfig:
    variant: str = "baseline"  # canonical name or paper alias, see attention.py
    d_model: int = 128
    n_layer: int = 2
    n_head: int = 4
    d_ff: int | None = None  # None -> 4 * d_model (GPT-2)
    vocab_size: int = 4096
    seq_len: int = 256  # context length; also the size of the learned position table
    pos: str = "rope"  # "rope" or "learned" (absolute, as in the paper)
    norm: str = "layernorm"  # "layernorm" or "rmsnorm"
    bias: bool = True  # the paper's models use biases
    tie_embeddings: bool = True
    rope_base: float = 10000.0

    @property
    def ff(self) -> int:
        return 4 * self.d_model if self.d_ff is None else self.d_ff

    @property
    def label(self) -> str:
        """The shape as trial ids, tuning studies and tables name it: d{d_model}l{n_layer}h{n_head}f{d_ff},
        with -rmsnorm where the norm is not the default LayerNorm (d32l1h4f128, d32l1h4f128-rmsnorm)."""
        norm = "" if self.norm == "layernorm" else f"-{self.norm}"
        return f"d{self.d_model}l{self.n_layer}h{self.n_head}f{self.ff}{norm}"

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def errors(self) -> list[str]:
        """Every reason this config cannot work, each naming its field ('' when fine)."""
        errs = []
        for name, most in MAX_SHAPE.items():
            value = getattr(self, name)
            if value is None and name == "d_ff":
                continue
            if value < 1:
                errs.append(f"{name}: must be >= 1, got {value}")
            elif value > most:
                errs.append(f"{name}: must be <= {most:,} (a typo? far past any published model), got {value:,}")
        if not (math.isfinite(self.rope_base) and self.rope_base > 1):
            errs.append(f"rope_base: must be a finite number > 1, got {self.rope_base}")
        try:
            variant = parse_variant(self.variant)
        except ValueError as e:
            return [*errs, str(e)]
        if errs:
            return errs
        if self.d_model % self.n_head:
            errs.append(f"n_head: {self.n_head} does not divide d_model {self.d_model}")
        elif self.pos == "rope" and self.head_dim % 2:
            errs.append(f"n_head: rope needs an even head dim, d_model/n_head = {self.head_dim}")
        g = variant.n_kv_head(self.n_head)
        if self.n_head % g:
            errs.append(f"variant: {g} kv heads ({variant.name}) do not divide n_head {self.n_head}")
        if self.pos not in ("rope", "learned"):
            errs.append(f"pos: must be 'rope' or 'learned', got '{self.pos}'")
        if self.norm not in ("layernorm", "rmsnorm"):
            errs.append(f"norm: must be 'layernorm' or 'rmsnorm', got '{self.norm}'")
        return errs

    def validate(self) -> ModelConfig:
        errs = self.errors()
        if errs:
            raise ConfigError("; ".join(errs))
        return self


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.d_model, eps=1e-5)
    return nn.LayerNorm(cfg.d_model, bias=cfg.bias)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.ff, bias=cfg.bias)
        self.proj = nn.Linear(cfg.ff, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1, self.attn = make_norm(cfg), Attention(cfg)
        self.ln2, self.mlp = make_norm(cfg), MLP(cfg)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), rope)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.d_model) if cfg.pos == "learned" else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = make_norm(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        if cfg.pos == "rope":
            cos, sin = rope_cache(cfg.seq_len, cfg.head_dim, cfg.rope_base)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer) so the residual stream's variance
        # does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.proj.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        # GPT-2 init, std 0.02. PyTorch's default N(0, 1) embedding, tied to the output layer, made
        # CPU training 6x slower here (huge initial logits).
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        T = idx.shape[1]
        x = self.wte(idx)  # (B, T, C)
        rope = None
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        else:
            rope = (self.rope_cos, self.rope_sin)
        for block in self.blocks:
            x = block(x, rope)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss
