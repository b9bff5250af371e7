"""Shared fixtures: one small real-text corpus (the Python stdlib's own sources), tokenized once."""

from __future__ import annotations

import os

import pytest
import ray

from tiedattn.data import DataConfig

# Tiny, so the whole suite fits in ~10 minutes on 2 cores: 1.5 MB of stdlib sources, a 512-token BPE.
TINY_VOCAB = 512


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    path = os.environ.get("TIEDSWEEP_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    os.environ["TIEDSWEEP_CACHE"] = path  # Ray workers started by tests inherit it
    return path


@pytest.fixture(scope="session")
def tiny_data(cache_dir) -> DataConfig:
    return DataConfig(corpus="stdlib", vocab_size=TINY_VOCAB, max_bytes=1_500_000, cache_dir=cache_dir)


@pytest.fixture(scope="session")
def local_ray(cache_dir):
    """One embedded Ray for the in-process tests; the runner and TaskPool reuse an initialized Ray."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"TIEDSWEEP_CACHE": cache_dir}})  # fmt: skip
    yield
    ray.shutdown()
