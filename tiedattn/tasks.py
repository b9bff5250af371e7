"""Synthetic tasks as a data source: multi-query associative recall (MQAR) and five list tasks.

A task replaces the text corpus: `TaskBatches.get(step)` is a pure function of (seed, step), so a
resumed run replays the run that was never stopped, exactly as data.Batches does for text; the
held-out set is fixed by (task, seq_len) alone, so every seed and variant is scored on the same
examples. Targets are -100 (ignored by cross-entropy) everywhere except the answer tokens, so the
trainer's loss and accuracy are measured on answers only.

MQAR (Arora et al. 2023, "Zoology", `multiquery_ar`): a sequence starts with num_kv_pairs
key-value pairs (keys drawn from 1..V/2-1, values from V/2..V-1, each without replacement), then
every key is queried once at an even offset of the rest; the rest is uniform noise. The target at a
query is its value (the value itself never appears in the input after the query). Query offsets
follow zoology's power law p(g) ~ g^(a-1), a = 0.01 (most queries soon after the pairs), or are
uniform.

List tasks, in causal form `x_1 .. x_L SEP y_1 .. y_L` over values 0..V-2 (SEP = V-1), loss on
y only:
    copy     y = x
    reverse  y = x reversed
    sort     y = x sorted ascending
    swap     y = x with adjacent pairs swapped (x_2 x_1 x_4 x_3 ...)
    sub      y_i = (x_i - x_1) mod (V-1)   (each element minus the first)
The paper names the five tasks without a definition we could check; swap and sub are our
definitions, chosen so that each needs attention to a position other than the one being copied.
"""

from __future__ import annotations

import numpy as np
import torch

from tiedattn.config import (
    COLUMNS,
    LIST_TASKS,
    MODEL_DEFAULTS,
    N_BUCKETS,
    SPEC_SKIP,
    TASKS,
    TRAIN_DEFAULTS,
    TaskConfig,
    task_config,
    task_row,
)

# TaskConfig and its names live in config.py (torch-free, for the orchestrator); imported from here before.
__all__ = [
    "COLUMNS",
    "IGNORE",
    "LIST_TASKS",
    "MODEL_DEFAULTS",
    "N_BUCKETS",
    "SPEC_SKIP",
    "TASKS",
    "TRAIN_DEFAULTS",
    "TaskBatches",
    "TaskConfig",
    "examples",
    "lists",
    "mqar",
    "position_buckets",
    "task_config",
    "task_row",
    "val_set",
]

IGNORE = -100  # F.cross_entropy's default ignore_index: no loss, no accuracy
_VAL_SALT = 0x5EED  # the held-out set's stream: never a (seed, step) stream of training


def mqar(cfg: TaskConfig, seq_len: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n MQAR examples: (inputs, targets), each (n, seq_len) int64; targets IGNORE except at queries."""
    V, k, T = cfg.vocab_size, cfg.num_kv_pairs, seq_len
    half = V // 2
    keys = rng.random((n, half - 1)).argsort(axis=1)[:, :k] + 1  # distinct keys in 1..half-1
    values = rng.random((n, V - half)).argsort(axis=1)[:, :k] + half  # distinct values in half..V-1
    x = rng.integers(0, V, (n, T))  # noise everywhere that is not a pair or a query
    x[:, 0 : 2 * k : 2], x[:, 1 : 2 * k : 2] = keys, values
    slots = (T - 2 * k) // 2  # a query sits at position 2k + 2g, g in 0..slots-1
    g = np.arange(1, slots + 1, dtype=np.float64)
    logp = (cfg.power_a - 1) * np.log(g) if cfg.query_dist == "power" else np.zeros(slots)
    gaps = np.argsort(-(logp + rng.gumbel(size=(n, slots))), axis=1)[:, :k]  # k distinct slots ~ p (Gumbel top-k)
    qpos = 2 * k + 2 * gaps  # (n, k)
    rows = np.arange(n)[:, None]
    x[rows, qpos] = keys
    y = np.full((n, T), IGNORE, dtype=np.int64)
    y[rows, qpos] = values  # predicted at the query token itself
    return x, y


def lists(cfg: TaskConfig, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n examples of a list task: (inputs, targets), each (n, 2L); targets IGNORE on the input half."""
    L, K = cfg.list_len, cfg.vocab_size - 1  # values 0..K-1, SEP = K
    x = rng.integers(0, K, (n, L))
    if cfg.name == "copy":
        out = x
    elif cfg.name == "reverse":
        out = x[:, ::-1]
    elif cfg.name == "sort":
        out = np.sort(x, axis=1)
    elif cfg.name == "swap":
        idx = np.arange(L) ^ 1  # 1 0 3 2 ...; an odd L keeps its last element in place
        out = x[:, np.minimum(idx, L - 1)]
    else:  # sub
        out = (x - x[:, :1]) % K
    seq = np.concatenate([x, np.full((n, 1), K), out], axis=1)  # (n, 2L + 1)
    targets = seq[:, 1:].copy()
    targets[:, :L] = IGNORE  # positions 0..L-1 predict x_2..x_L and SEP; position L (SEP) predicts y_1
    return seq[:, :-1], targets


def examples(cfg: TaskConfig, seq_len: int, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = mqar(cfg, seq_len, n, rng) if cfg.name == "mqar" else lists(cfg, n, rng)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64)), torch.from_numpy(np.ascontiguousarray(y))


class TaskBatches:
    """Fresh examples every step: batch(step) is drawn from default_rng((seed, step)), like data.Batches."""

    def __init__(self, cfg: TaskConfig, seq_len: int, batch_size: int, seed: int) -> None:
        self.cfg, self.seq_len, self.batch_size, self.seed = cfg, seq_len, batch_size, seed

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return examples(self.cfg, self.seq_len, self.batch_size, np.random.default_rng((self.seed, step)))

    def epochs(self, tokens_consumed: int) -> float:
        """Never-repeating examples: no pass over a finite set (0 keeps 'repeats_data' false)."""
        return 0.0


def val_set(cfg: TaskConfig, seq_len: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed held-out set: cfg.n_val examples from a stream no training step draws, in batches."""
    x, y = examples(cfg, seq_len, cfg.n_val, np.random.default_rng((_VAL_SALT, seq_len, cfg.n_val, 0)))
    return list(zip(x.split(batch_size), y.split(batch_size), strict=True))


def position_buckets(cfg: TaskConfig, seq_len: int) -> torch.Tensor:
    """(seq_len,) bucket of each position for MQAR accuracy by query position: the query region
    2k..T-1 cut into N_BUCKETS equal parts (bucket 0: queries right after the pairs)."""
    start = 2 * cfg.num_kv_pairs
    pos = torch.arange(seq_len)
    return ((pos - start).clamp(min=0) * N_BUCKETS // max(1, seq_len - start)).clamp(max=N_BUCKETS - 1)
