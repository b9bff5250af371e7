"""Display names (the paper's notation) of variants: read from the variant table in
tiedattn/variants.py (results rows also carry them, as the `variant_paper` column)."""

from __future__ import annotations

from tiedattn.variants import BASELINE, paper_name

display_name = paper_name
__all__ = ["BASELINE", "display_name"]
