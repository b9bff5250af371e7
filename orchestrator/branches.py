"""Many token budgets from one run: a warmup-stable-decay trunk and one cooldown branch per budget.

For budgets D_1 < ... < D_k of one (variant, shape, seed, lr, ...), an independent WSD run of
budget D_i has steps_i = D_i / (batch * T) and holds the peak lr until its cooldown starts at
    s_i = steps_i - round(cooldown_frac * steps_i)
(tiedattn.train.lr_at). Before s_i it is the same run for every budget, since the batch at a step
is a pure function of (seed, step) and the warmup is absolute (warmup_tokens, shared). So one trunk
trains to max(s_i) at constant lr, saving branch-<s_i>.pt on the way, and branch i starts from
that checkpoint (model, optimizer, step) and runs only its cooldown: its result row is the one the
independent run would give. Compute: the trunk's max(s_i) steps plus sum(steps_i - s_i), against
sum(steps_i) for independent runs.

The trunk's id leaves its length out, so extending the grid with a larger budget extends the
trunk (resumed from its last checkpoint) instead of starting over. A smaller budget than any before
changes the shared warmup (that of the smallest budget, unless [train] warmup_tokens fixes it), and
with it every id of the group: set warmup_tokens to keep a ladder open at both ends.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from orchestrator.spec import RUNTIME_FIELDS, SweepTrial, content_hash
from tiedattn.accounting import training_flops


def branch_step(tokens: int, tokens_per_step: int, cooldown_frac: float) -> int:
    steps = tokens // tokens_per_step
    return steps - round(cooldown_frac * steps)


def plan_branches(trials: list[SweepTrial]) -> list[SweepTrial]:
    """Group the role="branch" trials by everything but their budget; add one trunk per group."""
    groups: dict[str, list[SweepTrial]] = defaultdict(list)
    out = [t for t in trials if t.role != "branch"]
    for t in (t for t in trials if t.role == "branch"):
        key = {k: x for k, x in dataclasses.asdict(t.trial.train).items() if k not in (*RUNTIME_FIELDS, "tokens")}
        groups[content_hash({"model": dataclasses.asdict(t.trial.model), "train": key,
                             "data": t.corpus_fingerprint or dataclasses.asdict(t.trial.data), "n": t.n_basis,
                             "basis": t.tokens_basis, "match": t.match})].append(t)  # fmt: skip
    for digest, branches in groups.items():
        first = branches[0]
        tcfg, mcfg = first.trial.train, first.trial.model
        per_step = tcfg.batch_size * tcfg.seq_len
        steps = sorted({branch_step(b.trial.train.tokens, per_step, tcfg.cooldown_frac) for b in branches})
        trunk_tokens = steps[-1] * per_step
        trunk_train = dataclasses.replace(tcfg, tokens=trunk_tokens, cooldown_frac=0.0, save_at_steps=tuple(steps))
        m = mcfg
        trunk = dataclasses.replace(
            first,
            trial_id=f"trunk-{m.variant}-{m.label}-s{tcfg.seed}-{digest}",
            trial=dataclasses.replace(first.trial, train=trunk_train),
            tokens_per_param=0.0,  # not a budget of its own
            flops=training_flops(m, tcfg.seq_len, trunk_tokens),
            role="trunk",
        )
        out.append(trunk)
        for b in branches:
            step = branch_step(b.trial.train.tokens, per_step, tcfg.cooldown_frac)
            cooldown_share = 1 - step * per_step / b.trial.train.tokens
            out.append(dataclasses.replace(b, depends_on=trunk.trial_id, branch_step=step,
                                           flops=b.flops * cooldown_share))  # fmt: skip
    return out
