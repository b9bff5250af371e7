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
    recall_loss (text probes)."""
    model.eval()
    loss_sum = correct = count = 0.0
    rec_loss = rec_correct = rec_count = 0.0
    b_correct, b_count = torch.zeros(N_BUCKETS), torch.zeros(N_BUCKETS)
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with autocast():
            logits = model(x)
        nll = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none", ignore_index=IGNORE)  # (B, T)
        keep = y != IGNORE
        hit = (logits.argmax(-1) == y) & keep
        loss_sum += nll.sum().item()
        correct += hit.sum().item()
        count += keep.sum().item()
        if buckets is not None:
            b = buckets.to(device).expand_as(y)
            b_correct += torch.bincount(b[hit], minlength=N_BUCKETS).cpu().float()
            b_count += torch.bincount(b[keep], minlength=N_BUCKETS).cpu().float()
        if recall:
            m = _recall_mask(x, y) & keep
            rec_loss += nll[m].sum().item()
            rec_correct += hit[m].sum().item()
            rec_count += m.sum().item()
    model.train()
    out = {"val_loss": loss_sum / max(count, 1), "val_accuracy": correct / max(count, 1)}
    if buckets is not None:
        pairs = enumerate(zip(b_correct.tolist(), b_count.tolist(), strict=True))
        out |= {f"val_accuracy_pos{i}": c / n if n else math.nan for i, (c, n) in pairs}
    if recall:
        out["recall_loss"] = rec_loss / rec_count if rec_count else math.nan
        out["recall_accuracy"] = rec_correct / rec_count if rec_count else math.nan
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
