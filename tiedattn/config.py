"""The configs of one trial (model, training, task, and the Trial that holds them), torch-free.

They sit here rather than beside the torch code that runs them (model.py, train.py, tasks.py, which
re-export them) so that the orchestrator and the records expand, hash and plan 10^5 trials without
importing torch: ~2.5 s of CPU for every `tiedsweep` command on this project's 2-core machine.
DataConfig stays in data.py, which is torch-free itself. Trial ids hash `dataclasses.asdict` of
these: a field's name, order or default is part of every id (tests/test_records.py pins some).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields

from tiedattn.data import DataConfig
from tiedattn.variants import parse_variant

# --- model ---


class ConfigError(ValueError):
    """A model or training config that cannot work; the message names the field."""


# Upper bounds that catch a typo (an extra zero or three) before a sweep allocates it: each is
# ~8x past the largest models published (d_model 18,432 and 126 layers in Llama 3 405B, 128 heads,
# a 256k vocab in Gemma, 128k-token contexts).
MAX_SHAPE = {"d_model": 1 << 17, "n_layer": 1024, "n_head": 1024, "d_ff": 1 << 19, "vocab_size": 1 << 21,
             "seq_len": 1 << 20}  # fmt: skip


@dataclass(frozen=True)
class ModelConfig:
    variant: str = "baseline"  # canonical name or paper alias, see variants.py
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
    init: str = "gpt2"  # "gpt2" or "pytorch": see model.GPT._init_weights (MQAR trains with "pytorch": MODEL_DEFAULTS)

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
        if self.init not in ("gpt2", "pytorch"):
            errs.append(f"init: must be 'gpt2' or 'pytorch', got '{self.init}'")
        return errs

    def validate(self) -> ModelConfig:
        errs = self.errors()
        if errs:
            raise ConfigError("; ".join(errs))
        return self


# --- training ---

MAX_BATCH = 1 << 20  # sequences per step: 8x the ~128k of the largest published runs (4k x 32k-token)


@dataclass(frozen=True)
class TrainConfig:
    tokens: int  # training budget D; rounded up to whole steps of batch_size * seq_len
    batch_size: int = 16  # sequences per step
    seq_len: int | None = None  # None -> model.seq_len
    lr: float = 3e-3
    schedule: str = "cosine"  # "cosine" (to min_lr_frac of peak) or "wsd" (warmup-stable-decay)
    warmup_frac: float = 0.05  # of the budget, unless warmup_tokens is given
    warmup_tokens: int | None = None  # absolute warmup: WSD branches of different budgets share it
    min_lr_frac: float = 0.1  # cosine floor, and where a WSD cooldown ends with shape "linear"
    cooldown_frac: float = 0.2  # wsd: last 20% of steps decay (Hägele et al. 2024)
    cooldown_shape: str = "1-sqrt"  # wsd: "linear" or "1-sqrt"
    weight_decay: float = 0.1  # matrices only; biases, norms and per-head scalars are not decayed
    grad_clip: float = 1.0
    n_evals: int = 8  # validation evals, log-spaced from ~1% of the budget to the end
    eval_tokens: int = 32_768  # validation tokens per eval (a fixed set)
    checkpoint_every_s: float = 300.0  # also at every eval and when stopped
    save_at_steps: tuple[int, ...] = ()  # WSD trunk: keep a named checkpoint after these steps
    seed: int = 0  # init and batch order
    device: str = "auto"  # "auto" -> cuda if available else cpu
    compile: bool | None = None  # torch.compile; None: when it pays (compile_pays), decided after a few steps
    threads: int | None = None  # torch threads; None keeps torch's default (Ray sets OMP per task)
    peak_tflops: float | None = None  # per device, for mfu; None: accounting.PEAK_TFLOPS_BF16 by device name

    def errors(self) -> list[str]:
        # inf and nan pass `lr > 0`-style checks one way or the other; a non-finite number gets one line
        floats = ("lr", "warmup_frac", "min_lr_frac", "cooldown_frac", "weight_decay", "grad_clip")
        infinite = [f"{name}: must be a finite number, got {getattr(self, name)}" for name in floats
                    if not math.isfinite(getattr(self, name))]  # fmt: skip
        if infinite:
            return infinite + [e for e in self._errors() if e.split(":")[0] not in floats]
        return self._errors()

    def _errors(self) -> list[str]:
        errs = []
        if self.tokens <= 0:
            errs.append(f"tokens: must be > 0, got {self.tokens}")
        if self.batch_size < 1:
            errs.append(f"batch_size: must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            errs.append(f"lr: must be > 0, got {self.lr}")
        if self.schedule not in ("cosine", "wsd"):
            errs.append(f"schedule: must be 'cosine' or 'wsd', got '{self.schedule}'")
        if self.cooldown_shape not in ("linear", "1-sqrt"):
            errs.append(f"cooldown_shape: must be 'linear' or '1-sqrt', got '{self.cooldown_shape}'")
        if not 0 <= self.cooldown_frac <= 1:
            errs.append(f"cooldown_frac: must be in [0, 1], got {self.cooldown_frac}")
        if not 0 <= self.warmup_frac < 1:
            errs.append(f"warmup_frac: must be in [0, 1), got {self.warmup_frac}")
        for name, ok, rule in (  # each would fail (or silently misbehave) mid-run
            ("min_lr_frac", 0 <= self.min_lr_frac <= 1, "in [0, 1]"),
            ("grad_clip", self.grad_clip > 0, "> 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("n_evals", self.n_evals >= 1, ">= 1"),
            ("batch_size", self.batch_size <= MAX_BATCH, f"<= {MAX_BATCH:,} sequences (a typo?)"),
            ("eval_tokens", self.eval_tokens >= 1, ">= 1"),
            ("warmup_tokens", self.warmup_tokens is None or self.warmup_tokens >= 0, ">= 0"),
        ):
            if not ok:
                errs.append(f"{name}: must be {rule}, got {getattr(self, name)}")
        return errs


# Fields that never change a result (left out of trial ids and of the results columns); `tokens` is
# the budget, set by the orchestrator from tokens_per_param, and written as an outcome column.
RUNTIME_FIELDS = ("checkpoint_every_s", "save_at_steps", "device", "compile", "threads", "peak_tflops")


def total_steps(cfg: TrainConfig, seq_len: int) -> int:
    return max(1, math.ceil(cfg.tokens / (cfg.batch_size * seq_len)))


@dataclass(frozen=True)
class Trial:
    model: ModelConfig
    train: TrainConfig
    data: DataConfig = field(default_factory=DataConfig)
    workdir: str | None = None  # checkpoints live here; None = no checkpoints
    init_from: str | None = None  # WSD branch: start from this trunk checkpoint (model, optimizer, step)
    task: TaskConfig | None = None  # a synthetic task (tiedattn/tasks.py) instead of `data`'s text; None = LM


# --- synthetic tasks (tiedattn/tasks.py) ---

LIST_TASKS = ("copy", "reverse", "sort", "swap", "sub")
TASKS = ("mqar", *LIST_TASKS)
N_BUCKETS = 4  # MQAR accuracy per quarter of the query region (positions 2n .. T-1)


@dataclass(frozen=True)
class TaskConfig:
    name: str = "mqar"  # one of TASKS ("lm", text, is the absence of a task: Trial.task = None)
    vocab_size: int = 128  # task tokens; the model's vocab must be >= this. 128 > seq_len 64 (zoology's rule)
    num_kv_pairs: int = 8  # mqar: pairs per sequence; needs seq_len >= 4 x num_kv_pairs
    query_dist: str = "power"  # mqar: "power" (zoology, p(g) ~ g^(a-1)) or "uniform" over query slots
    power_a: float = 0.01  # mqar: zoology's default exponent
    list_len: int = 16  # list tasks: L; a sequence is 2L tokens of input (x, SEP, y without its last token)
    n_val: int = 1024  # held-out examples, fixed per (task, seq_len)

    def errors(self, seq_len: int, model_vocab: int) -> list[str]:
        """Every reason this task cannot run at seq_len with a model of model_vocab tokens."""
        errs = []
        if self.name not in TASKS:
            errs.append(f"task: must be 'lm' or one of {', '.join(TASKS)}, got '{self.name}'")
            return errs
        if self.vocab_size > model_vocab:
            errs.append(f"vocab_size: the model's {model_vocab} is smaller than the task's {self.vocab_size}")
        if self.n_val < 1:
            errs.append(f"n_val: must be >= 1, got {self.n_val}")
        if self.name == "mqar":
            n = self.num_kv_pairs
            if n < 1:
                errs.append(f"num_kv_pairs: must be >= 1, got {n}")
            if seq_len < 4 * n or seq_len % 2:
                errs.append(f"seq_len: mqar needs an even seq_len >= 4 x num_kv_pairs = {4 * n}, got {seq_len}")
            if self.vocab_size // 2 - 1 < n:
                errs.append(f"vocab_size: {self.vocab_size} has {self.vocab_size // 2 - 1} keys, fewer than {n} pairs")
            if self.query_dist not in ("power", "uniform"):
                errs.append(f"query_dist: must be 'power' or 'uniform', got '{self.query_dist}'")
        else:
            if self.list_len < 2:
                errs.append(f"list_len: must be >= 2, got {self.list_len}")
            if seq_len != 2 * self.list_len:
                errs.append(f"seq_len: a list task of list_len {self.list_len} needs seq_len {2 * self.list_len}")
            if self.vocab_size < 3:
                errs.append(f"vocab_size: a list task needs >= 3 (2 values + SEP), got {self.vocab_size}")
        return errs

    @property
    def tag(self) -> str:
        """Short name for trial ids: mqar-kv8, sort-l16."""
        return f"mqar-kv{self.num_kv_pairs}" if self.name == "mqar" else f"{self.name}-l{self.list_len}"

    @property
    def fingerprint(self) -> str:
        """Names the data stream as a corpus fingerprint does: equal means the same examples."""
        return "task-" + hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    def row(self) -> dict:
        """The task's columns of a results row (records.schema derives their types from these fields,
        renamed by COLUMNS): its name and the options it reads (others null); corpus and
        corpus_fingerprint name the task, since it has no text."""
        read = self.identity()
        cols = {COLUMNS.get(f.name, f.name): read.get(f.name) for f in fields(self)}
        return {"corpus": f"task:{self.name}", "corpus_fingerprint": self.fingerprint, **cols}

    def identity(self) -> dict:
        """What changes a result (for trial ids): the options this task reads."""
        d = asdict(self)
        drop = ("list_len",) if self.name == "mqar" else ("num_kv_pairs", "query_dist", "power_a")
        return {k: v for k, v in d.items() if k not in drop}


# TaskConfig field -> results column (records.schema), where the field's own name would collide
# with a text column; the other fields are columns of their own name.
COLUMNS = {"name": "task", "vocab_size": "task_vocab_size"}
# Fields a sweep spec's [data] table does not take as task options: `task` names the task and
# [data] vocab_size is the task's vocab when a task is set (orchestrator/spec.py).
SPEC_SKIP = ("name", "vocab_size")


def task_row(task: TaskConfig | None) -> dict:
    """A results row's task columns: TaskConfig.row(), or task "lm" (text: corpus unchanged, options null)."""
    return task.row() if task is not None else {"task": "lm"}


def task_config(table: dict, num_kv_pairs: int | None = None) -> TaskConfig | None:
    """A spec's [data] table (and a grid num_kv_pairs) -> TaskConfig; None for task = "lm" (text)."""
    name = table.get("task", "lm")
    if name == "lm":
        return None
    options = {f.name for f in fields(TaskConfig)} - set(SPEC_SKIP)
    kw = {k: v for k, v in table.items() if k in options}
    kw |= {"vocab_size": table["vocab_size"]} if "vocab_size" in table else {}
    kw |= {"num_kv_pairs": num_kv_pairs} if num_kv_pairs is not None else {}
    return TaskConfig(name=name, **kw)


# Model fields a task trains with unless told otherwise (`tiedsweep train --task`; sweeps/recall.toml
# sets the same in [model]); other fields, and tasks not named here, keep ModelConfig's defaults.
# MQAR: PyTorch's default init with an untied output layer (model.GPT._init_weights). Under the text
# models' GPT-2 init (N(0, 0.02), tied), QKV d=64 L=2 H=4 with 8 pairs stays on the plateau where it
# answers with one of the 8 values in context, not the one bound to the key: accuracy 0.15 after 3,000
# steps of 64, and 0.10-0.15 after 800-1,200 steps of 32-64 at lr 3e-3 or 1e-2, with or without weight
# decay, noise tokens, learned positions, 1 head, vocab 32..256 or easier sequences mixed in. Under
# PyTorch's init it leaves the plateau within ~800-1,500 steps of 32. The data are not the cause: on 2
# pairs a minimal GPT written apart learned in 100 steps with PyTorch's init, and stalled at 0.5 with
# N(0, 0.02), as ours does. Zoology also inits with N(0, 0.02) but trains ~10^4 steps of 256-512
# sequences, and its current attention baseline adds a short convolution that does the previous-token
# half of the lookup. The list tasks showed no such gap (sort 0.91 vs 0.90, reverse 0.83 vs 0.73 after
# 400 steps of 64, one seed), so they keep GPT-2's init.
MODEL_DEFAULTS = {"mqar": {"init": "pytorch", "tie_embeddings": False}}
# Defaults for `tiedsweep train --task` without --tokens/--lr/--batch-size. Measured (README): QKV
# d=64 L=2 H=4, 8 pairs, seq_len 64, vocab 128 reaches 0.998 by step 777 and 1.000 at step 1,500:
# 72.6 s wall on 2 idle cores, start-up included.
TRAIN_DEFAULTS = {"steps": 1500, "batch_size": 32, "lr": 3e-3}
