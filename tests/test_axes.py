"""Grid axes and cells: d_ff and norm are grid axes, and a shape's label, cell and tuning study
follow every field of it, so sizes that differ only in d_ff are different cells everywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis.verdict import pair
from orchestrator.plan import dry_run_table
from orchestrator.spec import SpecError, Sweep, load_spec
from orchestrator.tune import plan
from tiedattn.accounting import account

SPEC = """
name = "ax"
[data]
corpus = "stdlib"
vocab_size = 512
max_bytes = 1_500_000
{extra}
[grid]
variant = ["QKV", "Q-K=V"]
size = {sizes}
tokens_per_param = [1, 4]
{grid}
"""
TABLES = """[sizes]
narrow = { d_model = 32, n_layer = 1, n_head = 4, d_ff = 64 }
wide = { d_model = 32, n_layer = 1, n_head = 4, d_ff = 256 }
"""
NARROW_WIDE = {"sizes": '["narrow", "wide"]', "extra": TABLES}


def _load(tmp_path: Path, *, sizes: str = '["t1"]', grid: str = "", extra: str = "") -> Sweep:
    path = tmp_path / "ax.toml"
    path.write_text(SPEC.format(sizes=sizes, grid=grid, extra=extra))
    return load_spec(str(path))


def _errors(tmp_path: Path, **kw) -> list[str]:
    with pytest.raises(SpecError) as info:
        _load(tmp_path, **kw)
    return [line.split(": ", 1)[1] for line in info.value.errors]


def _cells(sweep: Sweep) -> dict[str, set[str]]:
    """cell id -> the variants that have a trial in it."""
    out: dict[str, set[str]] = {}
    for st in sweep.trials:
        out.setdefault(st.cell_id, set()).add(st.trial.model.variant)
    return out


def test_sizes_that_differ_only_in_d_ff_are_different_cells(tmp_path):
    sweep = _load(tmp_path, **NARROW_WIDE)
    assert {st.shape_id for st in sweep.trials} == {"d32l1h4f64", "d32l1h4f256"}
    table = dry_run_table(sweep, train_tokens=None, slots=1)
    assert "d32l1h4f64" in table and "d32l1h4f256" in table  # the shape column and the ids show d_ff
    cells = _cells(sweep)
    assert len(cells) == 2 * 2 and all(v == {"baseline", "tied_kv"} for v in cells.values())
    # tuning: one study per (variant, shape), not one for both widths
    assert sweep.tune.sizes == ("d32l1h4f64", "d32l1h4f256")
    studies = [line for line in plan(sweep, str(tmp_path / "r")).splitlines() if line.startswith("  ax-")]
    assert len(studies) == 4 and sum("f64" in s for s in studies) == 2
    # the verdict pairs each width with its own baseline: 4 pairs, none averaged over two widths
    rows = [st.row() for st in sweep.trials]
    cols = {k: np.array([r[k] for r in rows]) for k in ("variant", "cell_id", "tokens_per_param", "seed", "d_ff")}
    cols |= {"sweep": np.full(len(rows), "ax"), "M": cols["tokens_per_param"], "N": np.ones(len(rows))}
    cols |= {"D": np.ones(len(rows)), "loss": np.where(cols["variant"] == "baseline", 2.0, 2.2)}
    pairs = pair(cols, "tied_kv")
    assert pairs.gap.size == 4 and pairs.chose == () and pairs.gap == pytest.approx(0.1)


def test_d_ff_is_a_grid_axis(tmp_path):
    sweep = _load(tmp_path, grid="d_ff = [64, 256]")
    assert len(sweep.trials) == 2 * 2 * 2 and len(_cells(sweep)) == 2 * 2
    widths = {st.trial.model.d_ff: account(st.trial.model).params_non_embedding for st in sweep.trials}
    assert set(widths) == {64, 256} and widths[64] < widths[256]
    assert {st.shape_id for st in sweep.trials} == {"d32l1h4f64", "d32l1h4f256"}
    assert "grid.d_ff[0]: must be >= 1, got 0" in _errors(tmp_path, grid="d_ff = [0]")
    both = _errors(tmp_path, **NARROW_WIDE, grid="d_ff = [64]")
    assert {f"sizes.{n}.d_ff: also set in grid.d_ff: keep one" for n in ("narrow", "wide")} <= set(both)
    twice = _errors(tmp_path, grid="d_ff = [64]", extra="[model]\nd_ff = 96")
    assert "grid.d_ff: also set in [model]: keep one" in twice


def test_norm_is_a_grid_axis(tmp_path):
    sweep = _load(tmp_path, grid='norm = ["layernorm", "rmsnorm"]')
    assert {st.trial.model.norm for st in sweep.trials} == {"layernorm", "rmsnorm"}
    assert {st.shape_id for st in sweep.trials} == {"d32l1h4f128", "d32l1h4f128-rmsnorm"}
    assert len(_cells(sweep)) == 2 * 2
    bad = _errors(tmp_path, grid='norm = ["batchnorm"]')
    assert "grid.norm[0]: must be 'layernorm' or 'rmsnorm', got 'batchnorm'" in bad


def test_matched_params_keep_the_cell_of_the_shape_asked_for(tmp_path):
    sweep = _load(tmp_path, extra='[budget]\nmatch = "params"')
    tied = [st for st in sweep.trials if st.trial.model.variant == "tied_kv"]
    assert all(st.trial.model.d_ff > 128 for st in tied)  # widened to the baseline's params
    assert all(v == {"baseline", "tied_kv"} for v in _cells(sweep).values()) and len(_cells(sweep)) == 2
    assert {st.shape_id for st in sweep.trials} == {"d32l1h4f128"}
