"""`tiedsweep tokenize` on real Ray Data: the same tokens and split as the single-process path."""

from __future__ import annotations

import json
import os
import sysconfig

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.raybackend.tokenize import tokenize
from tiedattn.data import Batches, DataConfig, corpus_fingerprint, prepare_data, val_batches

pytestmark = pytest.mark.slow


def _corpus(root) -> str:
    """Real text in all three containers: 24 stdlib modules as text files, 40 as JSONL rows, 40 as Parquet rows."""
    lib = sysconfig.get_paths()["stdlib"]
    texts = [
        open(os.path.join(lib, n), encoding="utf-8").read()[:6000] for n in sorted(os.listdir(lib)) if n.endswith(".py")
    ]
    folder = root / "corpus"
    (folder / "docs").mkdir(parents=True)
    for i, text in enumerate(texts[:24]):
        (folder / "docs" / f"{i}.py").write_text(text)
    with open(folder / "rows.jsonl", "w") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in [*texts[24:44], "", *texts[44:64]])  # an empty row too
    pq.write_table(pa.table({"text": texts[64:104]}), folder / "rows.parquet")
    return str(folder)


def test_ray_data_tokenize_matches_single_process(tmp_path, local_ray):
    cfg = DataConfig(corpus=_corpus(tmp_path), vocab_size=320, val_fraction=0.2, cache_dir=str(tmp_path / "cache"))
    single = prepare_data(cfg)
    manifest = tokenize(cfg, str(tmp_path / "tok"), workers=2)
    sharded = prepare_data(DataConfig(corpus=f"tokenized:{tmp_path / 'tok'}"))

    assert len(manifest["shards"]) == 26 and manifest["dtype"] == "uint16"
    assert (
        manifest["fingerprint"]
        == single.fingerprint
        == corpus_fingerprint(DataConfig(corpus=f"tokenized:{tmp_path / 'tok'}"))
    )
    assert (
        (sharded.n_train_docs, sharded.n_val_docs)
        == (single.n_train_docs, single.n_val_docs)
        == tuple(manifest["documents"].values())
    )
    assert sharded.n_val_docs > 0 and (sharded.vocab_size, sharded.eot_id) == (single.vocab_size, single.eot_id)
    for split in ("train", "val"):
        a, b = getattr(single, split), getattr(sharded, split)
        assert len(a) == len(b) == manifest["tokens"][split]
        assert np.array_equal(np.asarray(a), b[:]), split
    # Batches read the shards by memory map, across shard boundaries: the same batches as the single file.
    for step in (0, 7):
        for x, y in zip(
            Batches(single.train, 64, 8, 0).get(step), Batches(sharded.train, 64, 8, 0).get(step), strict=True
        ):
            assert np.array_equal(x, y)
    assert all(
        np.array_equal(a[0], b[0])
        for a, b in zip(val_batches(single.val, 32, 4, 512), val_batches(sharded.val, 32, 4, 512), strict=True)
    )
