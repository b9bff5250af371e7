"""`tiedsweep tokenize CORPUS --out DIR`: a corpus tokenized on Ray Data, one shard per source file.

The driver lists and orders the files (tiedattn.data.shard_plan) and trains the BPE tokenizer once,
on the sample the single-process path trains on (or copies the given tokenizer.json). Ray Data then
tokenizes the files in parallel on every node with a pool of `workers` actors, each loading the
tokenizer once and splitting documents by hash exactly as tiedattn.data does
(tiedattn.data.tokenize_file). Each shard is <n>.train.bin + <n>.val.bin (uint16 when the vocab
fits, else uint32), written under a temp name and renamed. manifest.json, written last, lists the
shards in stream order with document and token counts and the corpus fingerprint; a sweep reads
DIR with corpus = "tokenized:DIR" (tiedattn.data.load_tokenized), mapping the shards, never loading
them. DIR must be storage that every node writes to and every trial reads from.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import ray

from tiedattn.data import MANIFEST, DataConfig, DataError, make_tokenizer, shard_plan, tokenize_file, tokenizer_info

FORMAT = 1  # manifest layout


class _TokenizeFiles:
    """A Ray Data actor: loads nothing until called, then tokenizes each file of a batch into its shard."""

    def __init__(self, cfg: DataConfig, out: str) -> None:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per actor: Ray Data's pool is the parallelism
        self.cfg, self.out = cfg, Path(out)

    def __call__(self, batch: dict) -> dict:
        rows = []
        for shard, *source in zip(batch["shard"], batch["path"], batch["rel"], batch["kind"], strict=True):
            prefix = str(self.out / "shards" / f"{int(shard):06d}")
            counts = tokenize_file(self.cfg, tuple(map(str, source)), self.out / "tokenizer.json", prefix)
            rows.append({"shard": int(shard), **counts})
        return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def tokenize(cfg: DataConfig, out: str, workers: int = 2, address: str | None = None) -> dict:
    """Tokenize cfg's corpus into out/ with `workers` Ray Data actors (on the cluster at `address`, else
    the Ray already initialised or a local one); returns the manifest."""
    fingerprint, sources = shard_plan(cfg)
    root = Path(out).expanduser().resolve()
    (root / "shards").mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)  # a folder without a manifest is never read as finished
    tmp = root / "tokenizer.json.tmp"
    tmp.write_text(make_tokenizer(cfg, sources))
    os.replace(tmp, root / "tokenizer.json")
    if not ray.is_initialized():
        # "local": a fresh Ray here, never one that another process started on this machine
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)
    items = [{"shard": i, "path": s.path, "rel": s.rel, "kind": s.kind} for i, s in enumerate(sources)]
    counts = (
        ray.data.from_items(items, override_num_blocks=len(items))
        .map_batches(
            _TokenizeFiles,
            fn_constructor_kwargs={"cfg": cfg, "out": str(root)},
            batch_size=1,
            concurrency=workers,
            num_cpus=1,
        )
        .take_all()
    )
    counts.sort(key=lambda r: r["shard"])
    docs = {s: sum(int(r[f"{s}_docs"]) for r in counts) for s in ("train", "val")}
    if not all(docs.values()):
        raise DataError(f"corpus: '{cfg.corpus}' gives {docs['train']} training and {docs['val']} validation "
                        "documents: need at least one of each (raise val_fraction)")  # fmt: skip
    shards = [
        {
            "source": src.rel,
            "train_file": f"shards/{i:06d}.train.bin",
            "val_file": f"shards/{i:06d}.val.bin",
            **{k: int(r[k]) for k in ("train_tokens", "val_tokens", "train_docs", "val_docs")},
        }
        for i, (src, r) in enumerate(zip(sources, counts, strict=True))
    ]
    manifest = {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "corpus": cfg.corpus,
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("corpus", "cache_dir", "max_bytes")},
        "tokenizer": "tokenizer.json",
        **tokenizer_info(root / "tokenizer.json"),
        "documents": docs,
        "tokens": {s: sum(x[f"{s}_tokens"] for x in shards) for s in ("train", "val")},
        "shards": shards,
    }
    tmp = root / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, root / MANIFEST)
    return manifest
