"""One trial: train a model on a token budget, evaluate at log-spaced token counts, checkpoint, resume.

`train(trial)` is the whole loop, visible top to bottom (nanoGPT's train.py). It returns plain data
(a summary dict and per-eval rows) and never raises for a run that merely diverges or is stopped.
The batch at step s is a pure function of (seed, s) (data.Batches), so a checkpoint's data
position is its step, and a resumed run replays exactly the run that was never stopped.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from tiedattn.accounting import account
from tiedattn.attention import parse_variant
from tiedattn.data import Batches, DataConfig, TokenData, prepare_data, val_batches
from tiedattn.model import GPT, ConfigError, ModelConfig
from tiedattn.probes import induction, induction_set, linear_v_coefficients, measure
from tiedattn.tasks import TaskBatches, TaskConfig, position_buckets, task_row, val_set


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
    compile: bool = False  # torch.compile (CUDA)
    threads: int | None = None  # torch threads; None keeps torch's default (Ray sets OMP per task)

    def errors(self) -> list[str]:
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
            ("eval_tokens", self.eval_tokens >= 1, ">= 1"),
            ("warmup_tokens", self.warmup_tokens is None or self.warmup_tokens >= 0, ">= 0"),
        ):
            if not ok:
                errs.append(f"{name}: must be {rule}, got {getattr(self, name)}")
        return errs


# Fields that never change a result (left out of trial ids and of the results columns); `tokens` is
# the budget, set by the orchestrator from tokens_per_param, and written as an outcome column.
RUNTIME_FIELDS = ("checkpoint_every_s", "save_at_steps", "device", "compile", "threads")


@dataclass(frozen=True)
class Trial:
    model: ModelConfig
    train: TrainConfig
    data: DataConfig = field(default_factory=DataConfig)
    workdir: str | None = None  # checkpoints live here; None = no checkpoints
    init_from: str | None = None  # WSD branch: start from this trunk checkpoint (model, optimizer, step)
    task: TaskConfig | None = None  # a synthetic task (tiedattn/tasks.py) instead of `data`'s text; None = LM


@dataclass
class TrialResult:
    status: str  # completed | diverged | interrupted | failed
    summary: dict
    evals: list[dict]


def check(trial: Trial, data: TokenData | None = None) -> None:
    """Raise ConfigError naming the first field that cannot work, before any training."""
    errs = trial.model.errors() + trial.train.errors()
    T = trial.train.seq_len or trial.model.seq_len
    if T > trial.model.seq_len:
        kind = "learned position table" if trial.model.pos == "learned" else "model context (rope cache)"
        errs.append(f"seq_len: {T} exceeds the {kind} of {trial.model.seq_len}")
    tc = trial.train
    if not errs and tc.warmup_tokens is not None:
        steps = total_steps(tc, T)
        warmup = math.ceil(tc.warmup_tokens / (tc.batch_size * T))
        decay_from = steps - round(tc.cooldown_frac * steps) if tc.schedule == "wsd" else steps
        if warmup > decay_from:
            errs.append(f"warmup_tokens: {warmup} warmup steps run past step {decay_from}, where the lr decays")
    if trial.task is not None:
        errs += trial.task.errors(T, trial.model.vocab_size)
    if data is not None and data.vocab_size > trial.model.vocab_size:
        errs.append(f"vocab_size: {trial.model.vocab_size} is smaller than the tokenizer's {data.vocab_size}")
    if errs:
        raise ConfigError("; ".join(errs))


def total_steps(cfg: TrainConfig, seq_len: int) -> int:
    return max(1, math.ceil(cfg.tokens / (cfg.batch_size * seq_len)))


def lr_at(step: int, steps: int, cfg: TrainConfig, seq_len: int) -> float:
    """Learning rate for optimizer step `step` (0-based) of `steps`.

    warmup: lr * (step + 1) / W for step < W.
    cosine: lr * (f + (1 - f) * (1 + cos(pi * p)) / 2), p = (step - W) / (steps - W), f = min_lr_frac.
    wsd:    lr until the cooldown's first step S = steps - round(cooldown_frac * steps), then
            lr * (1 - p) ("linear", to min_lr_frac) or lr * (1 - sqrt(p)) ("1-sqrt"), p = (step - S + 1) / (steps - S).
    """
    tokens_per_step = cfg.batch_size * seq_len
    if cfg.warmup_tokens is not None:
        warmup = math.ceil(cfg.warmup_tokens / tokens_per_step)
    else:
        warmup = round(cfg.warmup_frac * steps)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "cosine":
        p = (step - warmup) / max(1, steps - warmup)
        return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))
    start = steps - round(cfg.cooldown_frac * steps)
    if step < start:
        return cfg.lr
    p = (step - start + 1) / max(1, steps - start)
    if cfg.cooldown_shape == "linear":
        return cfg.lr * (1 - (1 - cfg.min_lr_frac) * p)
    return cfg.lr * (1 - math.sqrt(p))


def eval_steps(steps: int, n: int) -> list[int]:
    """Steps after which to evaluate: n log-spaced points from ~1% of training to the last step."""
    points = np.geomspace(max(1.0, steps / 100), steps, n) if n > 1 else np.array([steps])
    return sorted({round(float(s)) for s in points} | {steps})


def _optimizer(model: GPT, cfg: TrainConfig, fused: bool) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]  # matrices (embedding included)
    no_decay = [p for p in model.parameters() if p.dim() < 2]  # biases, norms, linear_v's a and b
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, fused=fused)


def _save(path: str, state: dict) -> None:
    """torch.save to a temp file in the same folder, then rename: a reader never sees half a file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(
    trial: Trial,
    *,
    stop: Callable[[int], bool] | None = None,
    progress: Callable[[dict], None] | None = None,
    on_eval: Callable[[dict], None] | None = None,
) -> TrialResult:
    """Run (or resume) one trial. `stop(step)` returning True checkpoints and ends it as interrupted;
    `on_eval(row)` sees each validation eval as it happens (a tuner reports and prunes with it)."""
    t_start = time.time()
    mcfg, tcfg = trial.model, trial.train
    check(trial)
    task = trial.task
    data = prepare_data(trial.data) if task is None else None
    check(trial, data)
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if tcfg.device == "auto" else tcfg.device
    cuda = device.startswith("cuda")
    T = tcfg.seq_len or mcfg.seq_len
    steps = total_steps(tcfg, T)
    tokens_per_step = tcfg.batch_size * T
    acct = account(mcfg)
    flops_per_token = account(dataclasses.replace(mcfg, seq_len=T)).flops_per_token

    torch.manual_seed(tcfg.seed)
    model = GPT(mcfg).to(device)
    optimizer = _optimizer(model, tcfg, fused=cuda)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)

    step_fn = torch.compile(model) if tcfg.compile else model
    if task is None:
        train_batches = Batches(data.train, T, tcfg.batch_size, tcfg.seed)
        val = val_batches(data.val, T, tcfg.batch_size, tcfg.eval_tokens)
        probe = induction_set(data.vocab_size, T)
    else:
        train_batches, val = TaskBatches(task, T, tcfg.batch_size, tcfg.seed), val_set(task, T, tcfg.batch_size)
    buckets = position_buckets(task, T) if task is not None and task.name == "mqar" else None
    evals_at = set(eval_steps(steps, tcfg.n_evals))

    # State that a checkpoint carries besides weights and optimizer.
    state = {"step": 0, "evals": [], "loss_sum": 0.0, "loss_n": 0, "wall_s": 0.0, "resumed_from": None}
    ckpt = os.path.join(trial.workdir, "checkpoint.pt") if trial.workdir else None
    if trial.workdir:
        os.makedirs(trial.workdir, exist_ok=True)
    source = ckpt if ckpt and os.path.exists(ckpt) else trial.init_from
    if source:
        saved = torch.load(source, map_location=device, weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng_cpu"].cpu())  # map_location moved it to the device
        state.update(saved["state"])
        if source == trial.init_from:  # a branch keeps the trunk's step and history, not its clock
            state.update(wall_s=0.0, evals=[e for e in state["evals"] if e["step"] <= state["step"]])
        state["resumed_from"] = state["step"]
    start_step, seg_start = state["step"], time.time()

    def checkpoint(path: str | None) -> None:
        if path:
            wall = state["wall_s"] + time.time() - seg_start
            _save(
                path,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng_cpu": torch.get_rng_state(),
                    "state": {**state, "wall_s": wall},
                },
            )

    status, error, last_ckpt = "completed", None, time.time()
    diverge_loss = 1.5 * math.log(mcfg.vocab_size)  # 50% worse than a uniform guess: exploded
    while state["step"] < steps:
        step = state["step"]
        if stop is not None and stop(step):
            status = "interrupted"
            break
        lr = lr_at(step, steps, tcfg, T)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = train_batches.get(step)
        with autocast():
            _, loss = step_fn(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss.item()
        if not math.isfinite(loss_value) or (loss_value > diverge_loss and step > steps // 10):
            status, error = "diverged", f"loss {loss_value:.4g} at step {step + 1} (threshold {diverge_loss:.3g})"
            break
        state["step"] = step + 1
        state["loss_sum"] += loss_value
        state["loss_n"] += 1
        if state["step"] in evals_at:
            state["evals"].append(
                {
                    "step": state["step"],
                    "tokens": state["step"] * tokens_per_step,
                    "train_loss": state["loss_sum"] / state["loss_n"],
                    **measure(model, val, device, autocast, buckets, recall=task is None),
                    **(induction(model, probe, device, autocast) if task is None else {}),
                    **linear_v_coefficients(model),
                    "lr": lr,
                }
            )
            state["loss_sum"], state["loss_n"] = 0.0, 0
            if on_eval is not None:
                on_eval(state["evals"][-1])
        if state["step"] in tcfg.save_at_steps:
            checkpoint(os.path.join(trial.workdir, f"branch-{state['step']}.pt") if trial.workdir else None)
        if state["step"] in evals_at or time.time() - last_ckpt > tcfg.checkpoint_every_s:
            checkpoint(ckpt)
            last_ckpt = time.time()
        if progress is not None:
            progress(
                {
                    "step": state["step"],
                    "steps": steps,
                    "loss": loss_value,
                    "lr": lr,
                    "tokens_per_s": (state["step"] - start_step) * tokens_per_step / (time.time() - seg_start),
                }
            )
    if status == "interrupted":
        checkpoint(ckpt)

    seg_s = time.time() - seg_start
    tokens = state["step"] * tokens_per_step
    last = state["evals"][-1] if state["evals"] and status == "completed" else None
    summary = {
        "status": status,
        "variant": parse_variant(mcfg.variant).name,
        **{f: getattr(mcfg, f) for f in ("d_model", "n_layer", "n_head", "vocab_size", "pos", "norm", "bias")},
        "d_ff": mcfg.ff,
        "n_kv_head": acct.n_kv_head,
        "tie_embeddings": mcfg.tie_embeddings,
        "seq_len": T,
        **task_row(task),
        **{
            f: getattr(tcfg, f)
            for f in (
                "batch_size",
                "lr",
                "schedule",
                "warmup_frac",
                "cooldown_frac",
                "cooldown_shape",
                "weight_decay",
                "seed",
            )
        },
        "params_total": acct.params_total,
        "params_non_embedding": acct.params_non_embedding,
        "params_attention": acct.params_attention,
        "kv_bytes_per_token": acct.kv_bytes_per_token,
        "flops_per_token": flops_per_token,
        "tokens": tokens,
        "flops": flops_per_token * tokens,
        "epochs": train_batches.epochs(tokens),
        "repeats_data": train_batches.epochs(steps * tokens_per_step) > 1.0,
        "final_train_loss": last["train_loss"] if last else math.nan,
        "final_val_loss": last["val_loss"] if last else math.nan,
        "final_val_accuracy": last["val_accuracy"] if last else math.nan,
        "steps": state["step"],
        "resumed_from_step": state["resumed_from"],
        "tokens_per_s": (state["step"] - start_step) * tokens_per_step / max(seg_s, 1e-9),
        "wall_s": state["wall_s"] + (time.time() - t_start),
        "corpus_fingerprint": data.fingerprint if data is not None else task.fingerprint,
        "device": device,
        "error": error,
    }
    return TrialResult(status, summary, list(state["evals"]))
