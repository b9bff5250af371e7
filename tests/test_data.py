"""tiedattn.data on real text: the stdlib sources and the Python reference manual's prose."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import sysconfig
import time
from pathlib import Path
from pydoc_data.topics import topics  # ~80 sections of the language reference, ~470 kB of English

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tiedattn.data import (
    EOT,
    Batches,
    DataConfig,
    DataError,
    TokenData,
    corpus_fingerprint,
    load_tokenizer,
    prepare_data,
    val_batches,
)

TOPICS = sorted(topics.items())


def docs_of(data: TokenData, stream: np.ndarray) -> list[str]:
    """Decode a packed stream back into its documents, split at eot."""
    tok = load_tokenizer(data)
    ends = np.flatnonzero(np.asarray(stream) == data.eot_id)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tok.decode(stream[s:e].tolist()) for s, e in zip(starts, ends, strict=True)]


@pytest.fixture(scope="module")
def stdlib(tmp_path_factory: pytest.TempPathFactory) -> tuple[DataConfig, TokenData]:
    cfg = DataConfig(max_bytes=2_000_000, vocab_size=512, cache_dir=str(tmp_path_factory.mktemp("cache")))
    return cfg, prepare_data(cfg)


def write_topics(folder: Path) -> None:
    """The reference manual as a folder: .txt and .md files, one nested, plus files to ignore."""
    (folder / "ref").mkdir(parents=True)
    for i, (name, text) in enumerate(TOPICS):
        (folder / ("ref" if i % 3 == 0 else ".") / f"{name}.{'md' if i % 2 else 'txt'}").write_text(text)
    (folder / "notes.csv").write_text("a,b\n1,2\n")  # not a text suffix
    (folder / ".hidden.txt").write_text("not a document")


def test_stdlib_packs_whole_files_with_eot_and_disjoint_splits(stdlib: tuple[DataConfig, TokenData]) -> None:
    _, data = stdlib
    assert data.train.dtype == np.uint16 and data.vocab_size == 512
    assert load_tokenizer(data).token_to_id(EOT) == data.eot_id
    assert data.train[-1] == data.val[-1] == data.eot_id  # every document ends in eot, no padding
    train, val = docs_of(data, data.train), docs_of(data, data.val)
    assert (len(train), len(val)) == (data.n_train_docs, data.n_val_docs)
    assert data.n_val_docs >= 1 and not set(train) & set(val)
    root = Path(sysconfig.get_paths()["stdlib"])
    files = {p.read_bytes().decode("utf-8", errors="replace") for p in root.rglob("*.py")}
    assert all(doc in files for doc in train + val)  # each document is one whole source file
    sizes = [len(doc.encode()) for doc in train + val]
    assert sum(sizes) >= 2_000_000 > sum(sizes) - max(sizes)  # stopped at the first doc past the cap


def test_second_prepare_is_a_cache_hit(stdlib: tuple[DataConfig, TokenData]) -> None:
    cfg, data = stdlib
    t0 = time.perf_counter()
    again = prepare_data(cfg)
    assert time.perf_counter() - t0 < 1.0
    assert np.array_equal(again.train, data.train) and np.array_equal(again.val, data.val)
    assert (again.fingerprint, again.tokenizer_path) == (data.fingerprint, data.tokenizer_path)
    assert isinstance(again.train, np.memmap)
    assert not [p for p in os.listdir(cfg.cache_dir) if p.endswith(".tmp")]


def test_fingerprint_is_stable_and_tracks_files_and_fields(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    assert corpus_fingerprint(DataConfig()) == corpus_fingerprint(DataConfig(cache_dir=str(tmp_path)))
    assert time.perf_counter() - t0 < 2.0
    write_topics(tmp_path / "c")
    cfg = DataConfig(corpus=str(tmp_path / "c"))
    fp = corpus_fingerprint(cfg)
    assert len(fp) == 16 and fp == corpus_fingerprint(cfg)
    for field in ({"split_seed": 1}, {"vocab_size": 300}, {"val_fraction": 0.1}, {"max_bytes": 10_000}):
        assert corpus_fingerprint(DataConfig(corpus=cfg.corpus, **field)) != fp
    with (tmp_path / "c" / "ref" / f"{TOPICS[0][0]}.txt").open("a") as f:
        f.write("one more line\n")
    assert corpus_fingerprint(cfg) != fp


def test_folder_of_txt_and_md(tmp_path: Path) -> None:
    write_topics(tmp_path / "c")
    cfg = DataConfig(corpus=str(tmp_path / "c"), vocab_size=300, val_fraction=0.1, cache_dir=str(tmp_path))
    data = prepare_data(cfg)
    docs = docs_of(data, data.train) + docs_of(data, data.val)
    assert sorted(docs) == sorted(text for _, text in TOPICS)  # all of them, hidden and .csv skipped
    assert data.vocab_size == 300 and data.n_val_docs >= 1
    other = prepare_data(DataConfig(**{**cfg.__dict__, "split_seed": 1}))
    assert set(docs_of(other, other.val)) != set(docs_of(data, data.val))


def test_jsonl_and_parquet_shards_give_the_same_tokens(tmp_path: Path, stdlib: tuple[DataConfig, TokenData]) -> None:
    texts = [text for _, text in TOPICS]
    halves = [["", *texts[:40]], texts[40:]]  # an empty row is skipped, but keeps its row number
    (tmp_path / "j").mkdir()
    (tmp_path / "p").mkdir()
    with open(tmp_path / "j" / "shard0.jsonl", "w") as f:
        f.writelines(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(halves[0]))
    with gzip.open(tmp_path / "j" / "shard1.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in halves[1])
    for i, half in enumerate(halves):
        pq.write_table(pa.table({"text": half, "n": range(len(half))}), tmp_path / "p" / f"shard{i}.parquet")
    tokenizer = stdlib[1].tokenizer_path  # a tokenizer.json given as a path
    runs = {
        corpus: prepare_data(DataConfig(corpus=corpus, tokenizer=tokenizer, cache_dir=str(tmp_path)))
        for corpus in (str(tmp_path / "j"), str(tmp_path / "p"), str(tmp_path / "p" / "*.parquet"))
    }
    first = runs[str(tmp_path / "j")]
    assert first.tokenizer_path == tokenizer and first.vocab_size == stdlib[1].vocab_size
    assert first.n_train_docs + first.n_val_docs == len(texts)
    for data in runs.values():
        assert np.array_equal(data.train, first.train) and np.array_equal(data.val, first.val)
    assert sorted(docs_of(first, first.train) + docs_of(first, first.val)) == sorted(texts)


def test_every_split_gets_a_document_and_one_document_is_too_few(tmp_path: Path) -> None:
    for i, (_, text) in enumerate(TOPICS[:3]):
        (tmp_path / f"{i}.txt").write_text(text)
    data = prepare_data(DataConfig(corpus=str(tmp_path), vocab_size=300, cache_dir=str(tmp_path / "cache")))
    assert (data.n_train_docs, data.n_val_docs) == (2, 1)  # no hash fell under 0.02: one doc moved over
    docs = docs_of(data, data.train) + docs_of(data, data.val)
    assert sorted(docs) == sorted(text for _, text in TOPICS[:3])  # the move left both streams whole
    with pytest.raises(DataError, match=r"corpus: .* too small: 1 non-empty documents"):
        prepare_data(DataConfig(corpus=str(tmp_path / "0.txt"), cache_dir=str(tmp_path / "cache")))


def _prepare_and_stat(args: tuple[str, str]) -> tuple[str, int]:
    data = prepare_data(DataConfig(corpus=args[0], vocab_size=300, cache_dir=args[1]))
    return data.fingerprint, os.stat(data.train.filename).st_ino


def test_concurrent_prepares_tokenize_once(tmp_path: Path) -> None:
    write_topics(tmp_path / "c")
    with multiprocessing.get_context("fork").Pool(3) as pool:
        seen = pool.map(_prepare_and_stat, [(str(tmp_path / "c"), str(tmp_path / "cache"))] * 3)
    assert len(set(seen)) == 1  # one fingerprint, one train file: nobody rewrote another's cache
    assert not [p for p in os.listdir(tmp_path / "cache") if p.endswith(".tmp")]


def test_batches_are_a_pure_function_of_seed_and_step(stdlib: tuple[DataConfig, TokenData]) -> None:
    tokens = stdlib[1].train
    a, b = Batches(tokens, 64, 8, seed=0), Batches(tokens, 64, 8, seed=0)
    in_order = [a.get(s) for s in range(4)]
    backwards = [b.get(s) for s in reversed(range(4))][::-1]
    for (x, y), (x2, y2) in zip(in_order, backwards, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
        assert x.shape == y.shape == (8, 64) and x.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token
    assert not torch.equal(Batches(tokens, 64, 8, seed=1).get(0)[0], in_order[0][0])
    assert a.epochs(a.n_windows * 64) == 1.0


def test_batches_cover_each_window_once_per_epoch_across_boundaries() -> None:
    tokens = np.arange(10 * 32 + 5, dtype=np.uint16)  # positions as tokens: rows show their window
    b = Batches(tokens, seq_len=32, batch_size=3, seed=7)
    assert b.n_windows == 10
    starts = [int(x[0]) for step in range(10) for x in b.get(step)[0]]  # 30 windows: 3 epochs
    assert all(s % 32 == 0 for s in starts)
    assert [sorted(starts[e * 10 : e * 10 + 10]) for e in range(3)] == [list(range(0, 320, 32))] * 3
    assert starts[:10] != starts[10:20]  # a fresh order each epoch
    assert torch.equal(Batches(tokens, 32, 3, seed=7).get(3)[0], b.get(3)[0])  # step 3 spans epochs 0-1
    assert b.epochs(10 * 3 * 32) == 3.0  # 10 steps of 3 rows of 32 tokens: three epochs
    with pytest.raises(DataError, match="corpus: only 32 tokens, fewer than one sequence of 33"):
        Batches(tokens[:32], seq_len=32, batch_size=3, seed=0)


def test_val_batches_are_the_stream_in_order(stdlib: tuple[DataConfig, TokenData]) -> None:
    val = stdlib[1].val
    batches = val_batches(val, seq_len=16, batch_size=4, max_tokens=16 * 10)
    assert [x.shape[0] for x, _ in batches] == [4, 4, 2]
    x = torch.cat([x for x, _ in batches]).flatten()
    y = torch.cat([y for _, y in batches]).flatten()
    assert torch.equal(x, torch.from_numpy(val[:160].astype(np.int64)))
    assert torch.equal(y, torch.from_numpy(val[1:161].astype(np.int64)))
    with pytest.raises(DataError, match="corpus: too small: 16 validation tokens < one sequence of 17"):
        val_batches(val[:16], seq_len=16, batch_size=4, max_tokens=1000)


def test_bad_input_fails_with_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.parquet").write_bytes(b"this is not parquet at all")
    pq.write_table(pa.table({"body": ["x"], "url": ["y"]}), tmp_path / "notext.parquet")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    (tmp_path / "first.jsonl").write_text('{"body": "no text"}\n')
    (tmp_path / "a.csv").write_text("a\n")
    cases = {
        str(tmp_path / "nope"): f"corpus: no such file or folder '{tmp_path / 'nope'}'",
        str(tmp_path / "empty"): f"corpus: no text documents found in '{tmp_path / 'empty'}' "
        r"\(looked for .txt .md .rst .py .jsonl .jsonl.gz .parquet\)",
        str(tmp_path / "*.zip"): "corpus: glob .* matches no files",
        str(tmp_path / "a.csv"): "corpus: unsupported file type",
        str(tmp_path / "bad.parquet"): f"corpus: cannot read Parquet file '{tmp_path / 'bad.parquet'}': .+",
        str(tmp_path / "notext.parquet"): r"has no 'text' column \(columns: body, url\)",
        str(tmp_path / "first.jsonl"): "first.jsonl' line 1: no 'text' field",
    }
    for corpus, message in cases.items():
        for call in (corpus_fingerprint, prepare_data):
            with pytest.raises(DataError, match=message):
                call(DataConfig(corpus=corpus, cache_dir=str(tmp_path / "cache")))
    with pytest.raises(DataError, match=r"bad.jsonl' line 2: invalid JSON"):  # found while reading
        prepare_data(DataConfig(corpus=str(tmp_path / "bad.jsonl"), cache_dir=str(tmp_path / "cache")))
    bad_fields = {
        "tokenizer: no such file '/no/tokenizer.json'": {"tokenizer": "/no/tokenizer.json"},
        "vocab_size: must be >= 257": {"vocab_size": 100},
        r"val_fraction: must be in \(0, 0.5\]": {"val_fraction": 0.0},
        "max_bytes: must be positive": {"max_bytes": 0},
    }
    for message, field in bad_fields.items():
        with pytest.raises(DataError, match=message):
            prepare_data(DataConfig(cache_dir=str(tmp_path / "cache"), **field))
    (tmp_path / "tok.json").write_text("{}")
    with pytest.raises(DataError, match="tokenizer: cannot load"):
        prepare_data(DataConfig(tokenizer=str(tmp_path / "tok.json"), cache_dir=str(tmp_path / "cache")))
