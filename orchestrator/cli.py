"""Subcommands of this package (registered by tiedsweep.cli)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    pass
