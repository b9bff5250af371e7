"""Analysis of sweep results: scaling-law fits, the tied-vs-baseline verdict, plots and report.

Data flows tables (the only module that reads files) -> fit / verdict (pure) -> plots -> report.
"""

from __future__ import annotations


class AnalysisError(ValueError):
    """The data cannot answer the question asked; the message is one line for the user."""
