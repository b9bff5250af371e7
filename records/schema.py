"""The Parquet schemas of trials and evals, and a trial's config row.

The config columns are derived from the config dataclasses (`dataclasses.fields()`), less the
fields declared runtime-only beside them (tiedattn.config.RUNTIME_FIELDS): a field added to
ModelConfig or TrainConfig becomes a column without an edit here. Config columns are known before a
trial starts, so even a failure row has all of them; accounting and outcome columns may be null.
New columns must be nullable, so files written under older schema versions still read (the
column comes back null).
"""

from __future__ import annotations

import dataclasses
import types
import typing

import pyarrow as pa

from tiedattn.config import COLUMNS as TASK_RENAME
from tiedattn.config import N_BUCKETS, RUNTIME_FIELDS, ModelConfig, TaskConfig, TrainConfig, task_row
from tiedattn.data import DataConfig
from tiedattn.variants import parse_variant

SCHEMA_VERSION = 2  # 2: cell_id, shape_id, variant_paper and every config field as columns
_META = {"tiedsweep.schema_version": str(SCHEMA_VERSION)}
_UTC_US = pa.timestamp("us", tz="UTC")
_ARROW = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}
# Model fields written as other columns: the trained context is the train's seq_len column.
_MODEL_SKIP = ("seq_len",)
# The train's token budget is an outcome column (tokens trained), written by the trainer.
_TRAIN_SKIP = (*RUNTIME_FIELDS, "tokens")
# Config columns required since schema 1 (frozen: a field added to a config later becomes a nullable
# column, so files written before it still read and compact).
_REQUIRED = ("variant", "d_model", "n_layer", "n_head", "d_ff", "vocab_size", "seq_len", "pos", "norm", "bias")
_REQUIRED += ("tie_embeddings", "batch_size", "lr", "schedule", "warmup_frac", "cooldown_frac", "cooldown_shape")
_REQUIRED += ("weight_decay", "seed")
_DOCS = {
    "variant": "attention variant: key of the tiedattn registry",
    "d_ff": "MLP width, resolved (4 d_model when not given)",
    "pos": "position encoding",
    "tie_embeddings": "input embedding shared with the output head",
    "init": "weight init: gpt2 (N(0, 0.02)) or pytorch (each module's default); null before it existed",
    "batch_size": "sequences per optimizer step",
    "seq_len": "training context length",
    "lr": "peak learning rate",
    "warmup_frac": "fraction of total steps",
    "cooldown_frac": "fraction of total steps",
    "task": "lm (text) or a synthetic task: mqar|copy|reverse|sort|swap|sub (tiedattn/tasks.py)",
    "task_vocab_size": "tokens the task draws from; null for lm",
    "num_kv_pairs": "mqar: key-value pairs per sequence; null otherwise",
    "query_dist": "mqar: power|uniform query positions; null otherwise",
    "power_a": "mqar: exponent of the power-law query positions; null otherwise",
    "list_len": "list tasks: list length L; null otherwise",
    "n_val": "task: held-out examples; null for lm",
}


def _col(name: str, type_: pa.DataType, doc: str = "", required: bool = False) -> pa.Field:
    # The doc travels in each file's field metadata, so a reader without this repo still gets it.
    return pa.field(name, type_, nullable=not required, metadata={"doc": doc} if doc else None)


def _fields(cls: type, skip: tuple[str, ...], rename: dict[str, str] | None = None) -> list[pa.Field]:
    """One column per dataclass field (named by `rename` where given), its Arrow type from the
    annotation; required only if in _REQUIRED."""
    rename = rename or {}
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        kinds = [a for a in args if a is not type(None)]
        if f.name in skip or len(kinds) != 1 or kinds[0] not in _ARROW:
            continue
        name = rename.get(f.name, f.name)
        out.append(_col(name, _ARROW[kinds[0]], _DOCS.get(name, ""), required=name in _REQUIRED))
    return out


MODEL_COLUMNS = [f.name for f in _fields(ModelConfig, _MODEL_SKIP)]
TRAIN_COLUMNS = [f.name for f in _fields(TrainConfig, _TRAIN_SKIP)]
# The task's columns (tiedattn.config.TaskConfig, name -> task, vocab_size -> task_vocab_size): all
# nullable; a text trial has task "lm" and the others null.
TASK_COLUMNS = [f.name for f in _fields(TaskConfig, (), TASK_RENAME)]

TRIALS_SCHEMA = pa.schema(
    [
        _col("trial_id", pa.string(), "<name>-<hash> of the trial config (records.ids)", required=True),
        _col("attempt", pa.int64(), "0-based; a retry or resume is a new attempt", required=True),
        _col("status", pa.string(), "completed|failed|diverged|interrupted", required=True),
        _col("cell_id", pa.string(), "the grid point without variant and lr: the verdict's pair (records.ids)"),
        _col("shape_id", pa.string(), "the shape as the spec asked for it, e.g. d32l1h4f128"),
        _col("variant_paper", pa.string(), "the variant in the paper's notation (Q-K=V, GQA-4, ...)"),
        *_fields(ModelConfig, _MODEL_SKIP),
        _col("n_kv_head", pa.int64(), required=True),
        *_fields(TrainConfig, _TRAIN_SKIP),
        _col("tokens_per_param", pa.float64(), "training tokens / params counted per n_basis", required=True),
        _col("tokens_basis", pa.string(), "baseline|own: whose param count sets the token budget", required=True),
        _col("n_basis", pa.string(), "non_embedding|total: which param count tokens_per_param uses", required=True),
        _col("match", pa.string(), "none|params: d_ff adjusted to match the baseline's params", required=True),
        _col("corpus", pa.string(), required=True),
        _col("corpus_fingerprint", pa.string(), "hash of the tokenized corpus: equal means same data", required=True),
        _col("branch_of", pa.string(), "trunk trial id of a WSD cooldown branch; null otherwise"),
        *_fields(TaskConfig, (), TASK_RENAME),
        _col("params_total", pa.int64()),
        _col("params_non_embedding", pa.int64()),
        _col("params_attention", pa.int64()),
        _col("tokens", pa.int64(), "training tokens: planned, or trained where the run stopped early"),
        _col("flops_per_token", pa.float64(), "training FLOPs per token, forward + backward"),
        _col("flops", pa.float64(), "flops_per_token * tokens: the whole run's, a branch's trunk part included"),
        _col("kv_bytes_per_token", pa.int64(), "inference KV-cache bytes per token, all layers"),
        _col("epochs", pa.float64(), "tokens / corpus tokens"),
        _col("repeats_data", pa.bool_(), "epochs > 1: some data seen twice"),
        _col("final_train_loss", pa.float64(), "null unless completed; NaN allowed when diverged"),
        _col("final_val_loss", pa.float64(), "null unless completed; NaN allowed when diverged"),
        _col("final_val_accuracy", pa.float64(), "token accuracy at the last eval (tasks: answer tokens only)"),
        _col("tokens_per_s", pa.float64()),
        _col("flops_per_s", pa.float64(), "achieved training FLOP/s: flops_per_token * tokens_per_s, all workers"),
        _col("mfu", pa.float64(), "flops_per_s / (workers * device peak); null where the peak is unknown"),
        _col("compiled", pa.bool_(), "trained under torch.compile (runtime choice: not part of the id)"),
        _col("workers", pa.int64(), "data-parallel workers (Ray Train); not part of the id"),
        _col("wall_s", pa.float64()),
        _col("steps", pa.int64(), "optimizer steps taken, counting any before a resume"),
        _col("resumed_from_step", pa.int64(), "checkpoint step this attempt resumed from; null if fresh"),
        _col("checkpoint_recovered", pa.string(), "an unreadable checkpoint was set aside: what and what from"),
        _col("host", pa.string()),
        _col("device", pa.string(), "cpu (fp32) or cuda (bf16 autocast): the precision the trial trained in"),
        _col("git_sha", pa.string()),
        _col("error", pa.string(), "why a failed/diverged/interrupted attempt stopped"),
        _col("started_at", _UTC_US),
        _col("finished_at", _UTC_US),
        _col("schema_version", pa.int32(), required=True),
    ],
    metadata=_META,
)

EVALS_SCHEMA = pa.schema(
    [
        _col("trial_id", pa.string(), required=True),
        _col("attempt", pa.int64(), required=True),
        _col("step", pa.int64(), required=True),
        _col("tokens", pa.int64(), "training tokens seen at this step", required=True),
        _col("train_loss", pa.float64()),
        _col("val_loss", pa.float64()),
        _col("lr", pa.float64(), "learning rate at this step"),
        _col("val_accuracy", pa.float64(), "argmax token accuracy on the validation targets (tasks: answers only)"),
        *(
            _col(f"val_accuracy_pos{i}", pa.float64(), f"mqar: accuracy in quarter {i} of the query region")
            for i in range(N_BUCKETS)
        ),
        _col("recall_loss", pa.float64(), "lm: val loss where the bigram (x_t, y_t) already occurred in context"),
        _col("recall_accuracy", pa.float64(), "lm: accuracy at those in-context recall positions"),
        _col("induction_loss", pa.float64(), "lm: loss on the 2nd copy of a repeated random sequence"),
        _col("induction_accuracy", pa.float64(), "lm: accuracy on that 2nd copy"),
        _col("linear_v_a", pa.string(), "V=aQ+bK: JSON [layer][head] of a; null otherwise"),
        _col("linear_v_b", pa.string(), "V=aQ+bK: JSON [layer][head] of b; null otherwise"),
    ],
    metadata=_META,
)

ENUMS = {
    "status": ("completed", "failed", "diverged", "interrupted"),
    "tokens_basis": ("baseline", "own"),
    "n_basis": ("non_embedding", "total"),
    "match": ("none", "params"),
}


def config_row(
    model: ModelConfig,
    train: TrainConfig,
    data: DataConfig,
    budget: dict,
    *,
    fingerprint: str | None,
    cell_id: str,
    shape_id: str,
    branch_of: str | None = None,
    task: TaskConfig | None = None,
) -> dict:
    """The config columns of a trial's row: every config field (d_ff resolved, seq_len the trained
    context), the budget, the ids, the corpus and the variant in the paper's notation; a synthetic task's
    columns, and its name as the corpus and fingerprint (tiedattn.tasks.task_row)."""
    variant = parse_variant(model.variant)
    row = {c: getattr(model, c) for c in MODEL_COLUMNS} | {c: getattr(train, c) for c in TRAIN_COLUMNS}
    row |= {"d_ff": model.ff, "seq_len": train.seq_len or model.seq_len, "n_kv_head": variant.n_kv_head(model.n_head)}
    row |= {"variant": variant.name, "variant_paper": variant.paper, "cell_id": cell_id, "shape_id": shape_id}
    row |= budget | {"corpus": data.corpus, "corpus_fingerprint": fingerprint, "branch_of": branch_of}
    return row | task_row(task)
