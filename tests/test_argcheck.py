"""Command-line numbers and cluster addresses, checked before anything starts (orchestrator/argcheck.py)."""

from __future__ import annotations

import argparse
import socket
import time

import pytest

from orchestrator.argcheck import at_least, unreachable


def test_numbers_below_their_minimum_exit_2_naming_the_option(capsys):
    parser = argparse.ArgumentParser(prog="tiedsweep run")
    parser.add_argument("--max-concurrent", type=at_least(1), default=None)
    assert parser.parse_args(["--max-concurrent", "3"]).max_concurrent == 3
    for bad, says in (("-1", "must be >= 1, got -1"), ("0", "must be >= 1, got 0"), ("x", "must be an integer")):
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(["--max-concurrent", bad])
        assert stop.value.code == 2
        assert f"argument --max-concurrent: {says}" in capsys.readouterr().err


def test_unreachable_addresses_fail_in_seconds():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert unreachable(f"127.0.0.1:{port}") is None
        assert unreachable(f"ray://127.0.0.1:{port}") is None
    assert "cannot connect to 127.0.0.1" in unreachable(f"127.0.0.1:{port}")  # closed now: refused
    assert unreachable(None) is None and unreachable("auto") is None
    assert "expected HOST:PORT" in unreachable("headnode")
    assert "--address 127.0.0.1:http" in unreachable("127.0.0.1:http")
    start = time.time()
    message = unreachable("192.0.2.123:6379", timeout_s=1.0)  # TEST-NET-1: never answers
    assert message and time.time() - start < 5, message


def test_cli_numbers_and_an_unreachable_address_are_refused_before_anything_is_written(tmp_path, cache_dir, capsys):
    from tests.test_orchestrator import write_spec
    from tiedsweep.cli import main

    spec = write_spec(tmp_path / "s.toml", cache_dir, variants=("QKV",), multipliers=(2,))
    results = tmp_path / "r"
    for flag, value, says in (("--max-concurrent", "-1", ">= 1"), ("--max-concurrent", "0", ">= 1"),
                              ("--max-retries", "-2", ">= 0"), ("--num-cpus", "1.5", "an integer")):  # fmt: skip
        with pytest.raises(SystemExit) as stop:
            main(["run", str(spec), "--results", str(results), flag, value])
        assert stop.value.code == 2 and f"argument {flag}: must be {says}" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    start = time.time()
    assert main(["run", str(spec), "--results", str(results), "--address", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert time.time() - start < 30 and err.count("\n") == 1 and f"127.0.0.1:{port}" in err, err
    assert not results.exists()  # no manifest, no results: the run was refused before anything was written
