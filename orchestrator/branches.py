"""Many token budgets from one run: a warmup-stable-decay trunk and one cooldown branch per budget.

For budgets D_1 < ... < D_k of one (variant, shape, seed, lr, ...), an independent WSD run of
budget D_i has steps_i = D_i / (batch * T) and holds the peak lr until its cooldown starts at
    s_i = steps_i - round(cooldown_frac * steps_i)
(tiedattn.train.lr_at). Before s_i it is the same run for every budget, since the batch at a step
is a pure function of (seed, step) and the warmup is absolute (warmup_tokens, shared). So one trunk
trains to max(s_i) at constant lr, saving branch-<s_i>.pt on the way, and branch i starts from
that checkpoint (model, optimizer, step) and runs only its cooldown: its result row is the one the
independent run would give. Compute: the trunk's max(s_i) steps plus sum(steps_i - s_i), against
sum(steps_i) for independent runs. A branch's `flops` (what it runs) is its cooldown's share; its
results row's `flops` (what the model cost) is the whole run's, trunk part included.

The trunk's id leaves its length out (records.ids), so extending the grid with a larger budget
extends the trunk (resumed from its last checkpoint) instead of starting over. A branch's id
includes its trunk's. A smaller budget than any before changes the shared warmup (that of the
smallest budget, unless [train] warmup_tokens fixes it), and with it every id of the group: set
warmup_tokens to keep a ladder open at both ends.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from orchestrator.sweep import SweepTrial
from records.ids import TrialIds
from tiedattn.accounting import training_flops


def branch_step(tokens: int, tokens_per_step: int, cooldown_frac: float) -> int:
    steps = tokens // tokens_per_step
    return steps - round(cooldown_frac * steps)


def plan_branches(trials: list[SweepTrial], ids: TrialIds) -> list[SweepTrial]:
    """Group the role="branch" trials by their trunk (everything but their budget); add one trunk per group.

    ids: the TrialIds of the trials' token stream and spec (expand's: a sweep's trials share both).
    """

    def _id(st: SweepTrial, role: str, depends_on: str | None = None) -> str:
        t = st.trial
        return ids.trial(t.model, t.train, st.budget, shape_id=st.shape_id, role=role, depends_on=depends_on,
                         task=t.task)  # fmt: skip

    groups: dict[str, list[SweepTrial]] = defaultdict(list)
    out = [t for t in trials if t.role != "branch"]
    for t in (t for t in trials if t.role == "branch"):
        groups[_id(t, "trunk")].append(t)
    for trunk_id, branches in groups.items():
        first = branches[0]
        tcfg, m = first.trial.train, first.trial.model
        per_step = tcfg.batch_size * tcfg.seq_len
        steps = sorted({branch_step(b.trial.train.tokens, per_step, tcfg.cooldown_frac) for b in branches})
        trunk_tokens = steps[-1] * per_step
        trunk_train = dataclasses.replace(tcfg, tokens=trunk_tokens, cooldown_frac=0.0, save_at_steps=tuple(steps))
        out.append(dataclasses.replace(
            first,
            trial_id=trunk_id,
            trial=dataclasses.replace(first.trial, train=trunk_train),
            tokens_per_param=0.0,  # not a budget of its own
            flops=training_flops(m, tcfg.seq_len, trunk_tokens),
            role="trunk",
            cell_id=trunk_id,  # a cell of its own: analysis leaves trunks out
        ))  # fmt: skip
        for b in branches:
            step = branch_step(b.trial.train.tokens, per_step, tcfg.cooldown_frac)
            cooldown_share = 1 - step * per_step / b.trial.train.tokens
            out.append(dataclasses.replace(b, trial_id=_id(b, "branch", trunk_id), depends_on=trunk_id,
                                           branch_step=step, flops=b.flops * cooldown_share))  # fmt: skip
    return out
