"""One trial: train a model on a token budget, evaluate at log-spaced token counts, checkpoint, resume.

`train(trial)` is the whole loop, visible top to bottom (nanoGPT's train.py). It returns plain data
(a summary dict and per-eval rows) and never raises for a run that merely diverges or is stopped.
The batch at step s is a pure function of (seed, s) (data.Batches), so a checkpoint's data
position is its step, and a resumed run replays exactly the run that was never stopped.

Data parallel: when torch.distributed is initialised (Ray Train's TorchTrainer does it, see
orchestrator/raybackend/ddp.py), rank r of W takes rows [r*B/W, (r+1)*B/W) of the same global
batch and DDP averages the gradients, so the run is the 1-worker run up to summation order; rank 0
alone writes checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import math
import os
import shutil
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from tiedattn.accounting import account, peak_flops
from tiedattn.config import MAX_BATCH, RUNTIME_FIELDS, ConfigError, TrainConfig, Trial, task_row, total_steps
from tiedattn.data import Batches, TokenData, prepare_data, val_batches
from tiedattn.model import GPT
from tiedattn.probes import induction, induction_set, linear_v_coefficients, measure
from tiedattn.tasks import TaskBatches, position_buckets, val_set
from tiedattn.variants import parse_variant

# The configs live in config.py (torch-free, for the orchestrator); imported from here before.
__all__ = [
    "MAX_BATCH",
    "RUNTIME_FIELDS",
    "TrainConfig",
    "Trial",
    "TrialResult",
    "check",
    "eval_steps",
    "lr_at",
    "total_steps",
    "train",
]

# torch.compile: (one-off compile seconds, steady speedup). CPU measured here: d=64 L=2 trains 1.46x
# faster after ~40 s of compiling on 2 busy cores; CUDA: a conservative guess until bench/gpu_check.py
# measures it. The policy compiles when the eager time it would save is twice the compile time. On
# CPU the eager time left is at most what idle cores would take (_CPU_FLOPS_PER_THREAD): cores busy
# with other jobs slow compiling as much as training (under load 12 on 2 cores, a 74-step d=64 run
# timed at 5 s a step compiled by its measured time and took 400 s in all).
_COMPILE_COST = {"cpu": (40.0, 1.46), "cuda": (60.0, 1.3)}
_CPU_FLOPS_PER_THREAD = 3e10  # training FLOP/s of one idle core (the demo sweep: ~3.2e10)
_PROBE_STEPS = 5  # eager steps timed (after the first, which warms up) before deciding to compile
_READ_EVERY = {"cpu": 1, "cuda": 50}  # steps between host reads of the loss: a per-step .item() stalls a GPU


def compile_pays(eager_s_left: float, cuda: bool) -> bool:
    """Compile when eager_s_left * (1 - 1/speedup) > 2 * compile_s (_COMPILE_COST): on CPU, when
    more than ~4 min of eager training remain."""
    compile_s, speedup = _COMPILE_COST["cuda" if cuda else "cpu"]
    return eager_s_left * (1 - 1 / speedup) > 2 * compile_s


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
    world = dist.get_world_size() if dist.is_initialized() else 1
    if trial.train.batch_size % world:
        errs.append(f"batch_size: {trial.train.batch_size} does not split evenly over {world} workers")
    if trial.task is not None:
        errs += trial.task.errors(T, trial.model.vocab_size)
    if data is not None and data.vocab_size > trial.model.vocab_size:
        errs.append(f"vocab_size: {trial.model.vocab_size} is smaller than the tokenizer's {data.vocab_size}")
    if errs:
        raise ConfigError("; ".join(errs))


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


def _digest(obj, crc: int = 0) -> int:
    """CRC32 of a checkpoint's content (tensor bytes and every other value, in order). torch.load
    catches a truncated file (no zip directory) but not flipped bytes inside a tensor: this does."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        return zlib.crc32(t.view(torch.uint8).numpy(), zlib.crc32(f"{t.dtype}{tuple(obj.shape)}".encode(), crc))
    if isinstance(obj, dict):
        for k, v in obj.items():
            crc = _digest(v, zlib.crc32(repr(k).encode(), crc))
        return crc
    if isinstance(obj, (list, tuple)):
        for v in obj:
            crc = _digest(v, crc)
        return crc
    return zlib.crc32(repr(obj).encode(), crc)


def _previous(path: str) -> str:
    return path.removesuffix(".pt") + ".prev.pt"


def _save(path: str, state: dict, keep_previous: bool = False) -> None:
    """torch.save to a temp file in the same folder, then rename: a reader never sees half a file.
    The file carries a digest of its content (verified by _load); keep_previous moves the last good
    file to <name>.prev.pt first, the fallback when this one turns out unreadable. On any error
    (a full disk) the temp file is removed, so a failure never leaves the space it took behind."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save({**state, "digest": _digest(state)}, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and os.path.exists(path):
            os.replace(path, _previous(path))
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, Exception):  # torch may hide ENOSPC behind its own message: say what is free
            free = shutil.disk_usage(os.path.dirname(path) or ".").free
            raise OSError(f"cannot write checkpoint '{path}' ({free:,} bytes free there): {e}") from e
        raise


def _load(path: str) -> dict:
    """A checkpoint written by _save, on the CPU; ValueError naming the file if it is unreadable or
    its content does not match its digest (files without a digest predate it and are trusted)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, pickle errors, EOFError... for a bad file
        raise ValueError(f"checkpoint '{path}' is unreadable: {str(e).splitlines()[0][:200]}") from e
    digest = saved.pop("digest", None) if isinstance(saved, dict) else None
    if not isinstance(saved, dict) or (digest is not None and digest != _digest(saved)):
        raise ValueError(f"checkpoint '{path}' is corrupt: its content does not match its digest")
    return saved


def _resume(ckpt: str | None, init_from: str | None) -> tuple[dict | None, str | None, str | None]:
    """(checkpoint state or None, the file it came from, what was recovered or None). The trial's own
    checkpoint first, then the one before it, then init_from (a branch's trunk) or a fresh start. A bad
    file is renamed <name>.bad, so a later save never rotates it into the fallback slot."""
    problems = []
    for path in [ckpt, _previous(ckpt)] if ckpt else []:
        if os.path.exists(path):
            try:
                saved = _load(path)
            except ValueError as e:
                problems.append(str(e))
                os.replace(path, path + ".bad")
                continue
            return saved, path, "; ".join([*problems, f"resumed from '{path}'"]) if problems else None
    saved = _load(init_from) if init_from else None  # a bad trunk checkpoint fails the branch, naming it
    restart = f"restarted from '{init_from}'" if init_from else "restarted from step 0"
    return saved, init_from, "; ".join([*problems, restart]) if problems else None


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
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    rows = slice(rank * tcfg.batch_size // world, (rank + 1) * tcfg.batch_size // world)  # this rank's share
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

    wrapped = DistributedDataParallel(model) if world > 1 else model  # averages gradients over ranks
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
    state["compiled"] = bool(tcfg.compile)
    ckpt = os.path.join(trial.workdir, "checkpoint.pt") if trial.workdir else None
    if trial.workdir:
        os.makedirs(trial.workdir, exist_ok=True)
        # A writer killed mid-save (SIGKILL, a lost node) leaves its temp file, as large as a checkpoint;
        # one trainer has a workdir at a time (the driver's lease), so any temp file here is a dead one's.
        for left in glob.glob(os.path.join(glob.escape(trial.workdir), "*.pt.tmp-*")):
            with contextlib.suppress(OSError):
                os.unlink(left)
    saved, source, recovered = _resume(ckpt, trial.init_from)
    if recovered:
        warnings.warn(f"trial {trial.workdir}: {recovered}", stacklevel=2)
    if saved:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng_cpu"])
        state.update(saved["state"])
        if source == trial.init_from:  # a branch keeps the trunk's step and history, not its clock
            state.update(wall_s=0.0, evals=[e for e in state["evals"] if e["step"] <= state["step"]])
        state["resumed_from"] = state["step"]
    if tcfg.compile is not None:  # an explicit setting wins over what the checkpoint ran with
        state["compiled"] = tcfg.compile
    step_fn = torch.compile(wrapped) if state["compiled"] else wrapped
    start_step, seg_start = state["step"], time.time()

    def checkpoint(path: str | None) -> None:
        if path and rank == 0:
            wall = state["wall_s"] + time.time() - seg_start
            _save(
                path,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng_cpu": torch.get_rng_state(),
                    "state": {**state, "wall_s": wall},
                },
                keep_previous=path == ckpt,
            )

    status, error, last_ckpt = "completed", None, time.time()
    diverge_loss = 1.5 * math.log(mcfg.vocab_size)  # 50% worse than a uniform guess: exploded
    read_every = _READ_EVERY["cuda" if cuda else "cpu"]
    pending = torch.zeros(3, device=device)  # (sum of step losses since the last read, last loss, stop)
    probe_at = start_step + 1 + _PROBE_STEPS if tcfg.compile is None and not state["compiled"] else -1
    last_read, read_at = start_step, {*evals_at, *tcfg.save_at_steps, steps}  # besides every read_every steps
    while state["step"] < steps:
        step = state["step"]
        if world == 1 and stop is not None and stop(step):  # W > 1: agreed on at the next read
            status = "interrupted"
            break
        if step == start_step + 1:
            probe_t0 = time.time()
        elif step == probe_at:  # compile when the eager time left repays it (compile_pays)
            if cuda:
                torch.cuda.synchronize()
            eager_s_left = (time.time() - probe_t0) / _PROBE_STEPS * (steps - step)
            if not cuda:
                idle_rate = _CPU_FLOPS_PER_THREAD * torch.get_num_threads() * world
                eager_s_left = min(eager_s_left, flops_per_token * tokens_per_step * (steps - step) / idle_rate)
            pays = torch.tensor(float(compile_pays(eager_s_left, cuda)), device=device)
            if world > 1:
                dist.broadcast(pays, 0)  # every rank compiles, or none
            if pays.item():
                step_fn, state["compiled"] = torch.compile(wrapped), True
        lr = lr_at(step, steps, tcfg, T)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = train_batches.get(step)
        x, y = x[rows], y[rows]
        with autocast():
            _, loss = step_fn(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        pending[0] += loss.detach()
        pending[1] = loss.detach()
        state["step"] = step + 1
        if state["step"] % read_every and state["step"] not in read_at:
            continue  # no host read this step: the GPU runs ahead
        if world > 1:
            pending[2] = float(stop is not None and stop(step + 1))
            dist.all_reduce(pending)  # mean loss over ranks; stop if any rank was asked to
            pending[:2] /= world
        loss_sum, loss_value, stop_now = pending.tolist()
        pending.zero_()
        if not math.isfinite(loss_sum) or (loss_value > diverge_loss and step > steps // 10):
            status, error = "diverged", f"loss {loss_value:.4g} at step {step + 1} (threshold {diverge_loss:.3g})"
            break
        state["loss_sum"] += loss_sum
        state["loss_n"] += state["step"] - last_read
        last_read = state["step"]
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
        if stop_now:
            status = "interrupted"
            break
    if status == "interrupted":
        state["loss_sum"] += pending[0].item()  # steps since the last read (world 1 stops at any step)
        state["loss_n"] += state["step"] - last_read
        checkpoint(ckpt)

    seg_s = time.time() - seg_start
    tokens = state["step"] * tokens_per_step
    last = state["evals"][-1] if state["evals"] and status == "completed" else None
    tokens_per_s = (state["step"] - start_step) * tokens_per_step / max(seg_s, 1e-9)
    peak = tcfg.peak_tflops * 1e12 if tcfg.peak_tflops else None
    peak = peak or (peak_flops(torch.cuda.get_device_name(device)) if cuda else None)
    peak = peak * world if peak else None  # one device per worker
    summary = {
        "status": status,
        "variant": parse_variant(mcfg.variant).name,
        **{f: getattr(mcfg, f) for f in ("d_model", "n_layer", "n_head", "vocab_size", "pos", "norm", "bias")},
        "d_ff": mcfg.ff,
        "n_kv_head": acct.n_kv_head,
        "tie_embeddings": mcfg.tie_embeddings,
        "init": mcfg.init,
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
        "checkpoint_recovered": recovered,
        "tokens_per_s": tokens_per_s,
        "flops_per_s": flops_per_token * tokens_per_s,
        "mfu": flops_per_token * tokens_per_s / peak if peak else None,
        "compiled": state["compiled"],
        "workers": world,
        "wall_s": state["wall_s"] + (time.time() - t_start),
        "corpus_fingerprint": data.fingerprint if data is not None else task.fingerprint,
        "device": device,
        "error": error,
    }
    return TrialResult(status, summary, list(state["evals"]))
