"""Variants, model and accounting: tied projections are one tensor, counts equal numel."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch

from tiedattn.accounting import account, match_params
from tiedattn.attention import parse_variant
from tiedattn.model import GPT, ConfigError, ModelConfig

VARIANTS = [
    "baseline",
    "tied_kv",
    "tied_qk",
    "tied_qkv",
    "gqa2",
    "mqa",
    "tied_kv_gqa2",
    "tied_kv_mqa",
    "linear_v",
    "v_q_minus_k",
]
SMALL = ModelConfig(d_model=32, n_layer=2, n_head=4, vocab_size=64, seq_len=16)


@pytest.mark.parametrize(
    ("alias", "canonical", "paper"),
    [
        ("QKV", "baseline", "QKV"),
        ("Q-K=V", "tied_kv", "Q-K=V"),
        ("q=k-v", "tied_qk", "Q=K-V"),
        ("Q=K=V", "tied_qkv", "Q=K=V"),
        ("GQA-4", "gqa4", "GQA-4"),
        ("MQA", "mqa", "MQA"),
        ("gqa1", "mqa", "MQA"),
        ("Q-GQA-4", "tied_kv_gqa4", "Q-GQA-4"),
        ("Q-MQA", "tied_kv_mqa", "Q-MQA"),
        ("V=aQ+bK", "linear_v", "V=aQ+bK"),
        ("V=Q-K", "v_q_minus_k", "V=Q-K"),
    ],
)
def test_paper_aliases(alias, canonical, paper):
    v = parse_variant(alias)
    assert (v.name, v.paper) == (canonical, paper)
    assert parse_variant(v.name) == v


def test_unknown_variant_names_the_field():
    with pytest.raises(ValueError, match=r"^variant: unknown 'qkvz'"):
        parse_variant("qkvz")


@pytest.mark.parametrize("variant", VARIANTS)
def test_accounting_equals_numel(variant):
    for pos, norm, bias, tie in itertools.product(
        ["rope", "learned"], ["layernorm", "rmsnorm"], [True, False], [True, False]
    ):
        cfg = dataclasses.replace(SMALL, variant=variant, pos=pos, norm=norm, bias=bias, tie_embeddings=tie)
        model = GPT(cfg)
        acct = account(cfg)
        assert acct.params_total == sum(p.numel() for p in model.parameters()), cfg
        attn = sum(p.numel() for n, p in model.named_parameters() if ".attn." in n)
        assert acct.params_attention == attn
        embed = model.wte.weight.numel() + (model.wpe.weight.numel() if model.wpe is not None else 0)
        embed += 0 if tie else model.lm_head.weight.numel()
        assert acct.params_non_embedding == acct.params_total - embed


@pytest.mark.parametrize("variant", VARIANTS)
def test_tied_projections_are_the_same_tensor(variant):
    model = GPT(dataclasses.replace(SMALL, variant=variant))
    attn = model.blocks[0].attn
    q, k, v = attn.project(torch.randn(2, 8, SMALL.d_model))
    family = parse_variant(variant).family
    assert (v is k) == (family in ("tied_kv", "tied_kv_gqa", "tied_qkv"))
    assert (q is k) == (family in ("tied_qk", "tied_qkv"))
    assert q.shape == (2, 4, 8, 8)
    assert k.shape[1] == v.shape[1] == parse_variant(variant).n_kv_head(4)
    if family == "linear_v":  # init a = 0, b = 1: starts as v = k
        assert torch.equal(v, k) and v is not k
    if family == "v_q_minus_k":
        assert torch.allclose(v, q - k)


def test_kv_cache_and_flops():
    base = dataclasses.replace(SMALL, d_model=256, n_head=8, n_layer=4, seq_len=128)
    hd = 32
    for variant, per_layer in [
        ("baseline", 2 * 8),
        ("tied_kv", 8),
        ("tied_qk", 2 * 8),
        ("tied_qkv", 8),
        ("gqa2", 2 * 2),
        ("tied_kv_gqa2", 2),
        ("tied_kv_mqa", 1),
        ("linear_v", 16),
    ]:
        acct = account(dataclasses.replace(base, variant=variant))
        assert acct.kv_bytes_per_token == 4 * per_layer * hd * 2  # bf16
    assert account(base, dtype="fp32").kv_bytes_per_token == 2 * account(base).kv_bytes_per_token
    # 6 * matmul weights + 12 * L * d * T, by hand for the baseline (bias and norm params excluded).
    d, L, V, T, ff = 256, 4, 64, 128, 1024
    assert account(base).flops_per_token == 6 * (L * (3 * d * d + d * d + 2 * d * ff) + V * d) + 12 * L * d * T
    assert account(dataclasses.replace(base, variant="tied_qkv")).flops_per_token < account(base).flops_per_token


@pytest.mark.parametrize("variant", VARIANTS)
def test_match_params_within_one_percent(variant):
    cfg = dataclasses.replace(SMALL, variant=variant, d_model=128, n_head=8, n_layer=3)
    target = account(dataclasses.replace(cfg, variant="baseline")).params_non_embedding
    matched = match_params(cfg)
    assert abs(account(matched).params_non_embedding / target - 1) < 0.01
    if variant != "baseline" and account(cfg).params_non_embedding < target:
        assert matched.ff > cfg.ff


def _scores(cfg: ModelConfig, idx: torch.Tensor, zero_positions: bool = False) -> torch.Tensor:
    """Layer 0's pre-mask scores q k^T, (H, T, T)."""
    torch.manual_seed(0)
    model = GPT(cfg)
    x, rope = model.wte(idx), None
    if model.wpe is not None:
        x = x + (0 if zero_positions else model.wpe(torch.arange(idx.shape[1])))
    else:
        rope = (model.rope_cos, model.rope_sin)
    q, k, _ = model.blocks[0].attn.project(model.blocks[0].ln1(x), rope)
    return (q @ k.transpose(-1, -2))[0].detach()


def _asymmetry(s: torch.Tensor) -> float:  # relative: scores at init are ~1e-2 in size
    return ((s - s.transpose(-1, -2)).abs().max() / s.abs().max()).item()


def test_q_equals_k_score_symmetry_learned_vs_rope():
    """q = k makes S = Q Q^T symmetric with learned positions. With RoPE the matrix S_ij = (R_i q_i).(R_j q_j)
    is still a Gram matrix, hence symmetric too, but its content kernel q_a^T R_(j-i) q_b is direction-aware:
    swapping the tokens at two positions changes their score. Learned positions without a position signal
    (zeroed table) keep it unchanged: order-blind."""
    idx = torch.randint(0, SMALL.vocab_size, (1, SMALL.seq_len), generator=torch.Generator().manual_seed(1))
    learned = dataclasses.replace(SMALL, variant="tied_qk", pos="learned")
    rope = dataclasses.replace(SMALL, variant="tied_qk", pos="rope")
    assert _asymmetry(_scores(learned, idx)) < 1e-6
    assert _asymmetry(_scores(rope, idx)) < 1e-5
    baseline = dataclasses.replace(SMALL, variant="baseline", pos="learned")
    assert _asymmetry(_scores(baseline, idx)) > 0.05  # Wq != Wk: no symmetry at all
    i, j = 3, 11
    swapped = idx.clone()
    swapped[0, [i, j]] = idx[0, [j, i]]
    blind_a, blind_b = _scores(learned, idx, zero_positions=True), _scores(learned, swapped, zero_positions=True)
    assert torch.allclose(blind_a[:, j, i], blind_b[:, j, i], atol=1e-7)
    rope_a, rope_b = _scores(rope, idx), _scores(rope, swapped)
    assert (rope_a[:, j, i] - rope_b[:, j, i]).abs().max() > 0.05 * rope_a.abs().max()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_head": 5}, r"n_head: 5 does not divide d_model 32"),
        ({"variant": "gqa3"}, r"variant: 3 kv heads \(gqa3\) do not divide n_head 4"),
        ({"variant": "nope"}, r"variant: unknown 'nope'"),
        ({"pos": "alibi"}, r"pos: must be 'rope' or 'learned'"),
        ({"d_model": 0}, r"d_model: must be >= 1"),
        ({"init": "xavier"}, r"init: must be 'gpt2' or 'pytorch'"),
    ],
)
def test_bad_model_configs(change, message):
    with pytest.raises(ConfigError, match=message):
        GPT(dataclasses.replace(SMALL, **change))


def test_gpt2_init():
    model = GPT(dataclasses.replace(SMALL, n_layer=8))
    assert abs(model.wte.weight.std().item() - 0.02) < 0.003
    assert abs(model.blocks[0].attn.proj.weight.std().item() - 0.02 / 4) < 0.001  # 0.02 / sqrt(2 * 8)


def test_pytorch_init_keeps_each_modules_default():
    model = GPT(dataclasses.replace(SMALL, init="pytorch", tie_embeddings=False))
    assert abs(model.wte.weight.std().item() - 1.0) < 0.1  # nn.Embedding: N(0, 1)
    bound = 1 / math.sqrt(SMALL.d_model)  # nn.Linear: U(+-1/sqrt(fan_in)), biases too
    w, b = model.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.bias
    assert w.abs().max().item() <= bound and abs(w.std().item() - bound / math.sqrt(3)) < 0.01 and b.abs().sum() > 0
