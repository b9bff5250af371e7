"""What an eval measures besides loss: token accuracy, LM probes, and what V = aQ + bK has learned.

Every function here runs at every eval, so each is one pass over a small fixed set:
- `measure`: validation loss and token accuracy over the targets that count (all tokens of text;
  answer tokens of a task). For MQAR also accuracy per query-position bucket; for text also the
  in-context recall score.
- In-context recall (text): the accuracy at positions t whose next token y_t already followed the
  same token earlier in the window (some j < t with x_j = x_t and x_{j+1} = y_t): the bigram
  repeats in context, so an induction-style copy predicts it. Measured on the validation windows
  with the logits `measure` already has, so it costs no extra forward pass.
- `induction`: random token sequences of length T/2 repeated once; loss and accuracy on the second
  copy (its first token excluded: nothing in context predicts it). A model with induction heads
  scores far above chance; a unigram model cannot.
- `linear_v_coefficients`: each layer's learned (a_h, b_h) of v = a_h q + b_h k.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from tiedattn.tasks import IGNORE, N_BUCKETS

INDUCTION_ROWS = 16  # sequences in the induction probe: 16 x T/2 scored tokens
_INDUCTION_SEED = 0x1D0C


def _recall_mask(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, T) True where the bigram (x_t, y_t) occurred at an earlier position j < t in the row."""
    same_x = x[:, :, None] == x[:, None, :]  # (B, t, j)
    same_y = y[:, :, None] == y[:, None, :]
    earlier = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device).tril(-1)
    return (same_x & same_y & earlier).any(-1)


@torch.no_grad()
def measure(
    model: torch.nn.Module,
    batches: list,
    device: str,
    autocast: Callable,
    buckets: torch.Tensor | None = None,
    recall: bool = False,
) -> dict:
    """val_loss and val_accuracy over non-ignored targets; with `buckets` ((T,) bucket per position)
    val_accuracy_pos0..3 (per quarter of the query region); with `recall`, recall_accuracy and
    recall_loss (text probes). The sums stay on the device (one host read at the end); with W
    workers each measures every W-th batch and the sums are all-reduced, so every rank must call it."""
    model.eval()
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    # loss, correct, count, recall loss, recall correct, recall count, bucket correct x N, bucket count x N
    sums = torch.zeros(6 + 2 * N_BUCKETS, dtype=torch.float64, device=device)
    bucket_of = buckets.to(device) if buckets is not None else None
    for x, y in batches[rank::world]:
        x, y = x.to(device), y.to(device)
        with autocast():
            logits = model(x)
        nll = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none", ignore_index=IGNORE)  # (B, T)
        keep = y != IGNORE
        hit = (logits.argmax(-1) == y) & keep
        sums[0:3] += torch.stack([nll.sum(), hit.sum(), keep.sum()]).double()
        if bucket_of is not None:
            b = bucket_of.expand_as(y)
            sums[6 : 6 + N_BUCKETS] += torch.bincount(b[hit], minlength=N_BUCKETS)
            sums[6 + N_BUCKETS :] += torch.bincount(b[keep], minlength=N_BUCKETS)
        if recall:
            m = _recall_mask(x, y) & keep
            sums[3:6] += torch.stack([nll[m].sum(), hit[m].sum(), m.sum()]).double()
    if world > 1:
        dist.all_reduce(sums)
    model.train()
    s = sums.tolist()
    out = {"val_loss": s[0] / max(s[2], 1), "val_accuracy": s[1] / max(s[2], 1)}
    if buckets is not None:
        hits, counts = s[6 : 6 + N_BUCKETS], s[6 + N_BUCKETS :]
        out |= {
            f"val_accuracy_pos{i}": c / n if n else math.nan for i, (c, n) in enumerate(zip(hits, counts, strict=True))
        }
    if recall:
        out["recall_loss"] = s[3] / s[5] if s[5] else math.nan
        out["recall_accuracy"] = s[4] / s[5] if s[5] else math.nan
    return out


def induction_set(vocab_size: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed induction probe: INDUCTION_ROWS rows of a random half-length sequence twice;
    targets only on the second copy after its first token."""
    half = seq_len // 2
    rng = np.random.default_rng((_INDUCTION_SEED, vocab_size, seq_len))
    first = rng.integers(0, vocab_size, (INDUCTION_ROWS, half))
    seq = np.concatenate([first, first, first[:, :1]], axis=1)[:, : seq_len + 1]  # (R, T+1)
    x, y = seq[:, :-1], seq[:, 1:].copy()
    y[:, :half] = IGNORE  # position half-1 predicts the copy's first token: nothing predicts it
    return torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))


def induction(model: torch.nn.Module, probe: tuple, device: str, autocast: Callable) -> dict:
    m = measure(model, [probe], device, autocast)
    return {"induction_loss": m["val_loss"], "induction_accuracy": m["val_accuracy"]}


def linear_v_coefficients(model: torch.nn.Module) -> dict:
    """{'linear_v_a': '[[a_h per head] per layer]', 'linear_v_b': ...} as JSON text for V = aQ + bK
    models, else {}. Text, not Parquet lists: pyarrow's joins (results.read_evals) take no list columns."""
    attns = [m for m in model.modules() if hasattr(m, "v_a")]
    if not attns:
        return {}
    return {
        "linear_v_a": json.dumps([m.v_a.detach().float().cpu().tolist() for m in attns]),
        "linear_v_b": json.dumps([m.v_b.detach().float().cpu().tolist() for m in attns]),
    }
