"""Corpus -> byte-level BPE -> cached token stream -> packed, deterministic batches.

A corpus is the running Python's standard library (the default: always present, ~31 MB of .py), a
folder or glob of text files (one document per file), or JSONL / Parquet shards with a `text`
column (one document per row, as FineWeb and SlimPajama ship). It is tokenized once into a memmap
per (corpus fingerprint, tokenizer); later calls, from any process, only map the files.

A corpus too large for one process is tokenized once by `tiedsweep tokenize CORPUS --out DIR` (Ray
Data, orchestrator/raybackend/tokenize.py) into shards plus a manifest; `corpus = "tokenized:DIR"`
then maps those shards, in manifest order, as one stream: the same tokens and split as here.
"""

from __future__ import annotations

import fcntl
import functools
import glob
import gzip
import hashlib
import json
import os
import sys
import sysconfig
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

if TYPE_CHECKING:
    import torch

EOT = "<|endoftext|>"
_KINDS = {".txt": "text", ".md": "text", ".rst": "text", ".py": "text"}
_KINDS |= {".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".parquet": "parquet"}  # a document per row
_SUFFIXES = " ".join(_KINDS)
_EOT_NAMES = (EOT, "<|end_of_text|>", "</s>", "<eos>")  # GPT-2/NeoX, Llama 3, Llama 2/T5, Gemma
_BPE_SAMPLE_BYTES = 8_000_000  # stdlib, vocab 4096: trains + tokenizes 12 MB in ~6 s on 2 cores
_ENCODE_DOCS = 1024  # documents per encode_batch call: a few MB of FineWeb text
_FORMAT = 1  # bump when the split or packing rules change, so old caches are not reused
# Cache check at every open: exact sizes, and blake2b of the whole file up to 64 MiB (~0.25 s at the
# ~280 MB/s measured on this 2-core machine), above that of 64 blocks of 64 KiB spread over it
# (~11 ms for 4 MiB): a 20 GB FineWeb cache would take ~70 s to hash in full for every trial.
_VERIFY_WHOLE, _VERIFY_BLOCKS, _VERIFY_BLOCK = 64 << 20, 64, 64 << 10
TOKENIZED = "tokenized:"  # corpus = "tokenized:DIR": shards written by `tiedsweep tokenize`


class DataError(ValueError):
    """Bad corpus or tokenizer input; the message starts with the offending field."""


@dataclass(frozen=True)
class DataConfig:
    corpus: str = "stdlib"  # "stdlib" | folder | glob | .txt/.md/.rst/.py/.jsonl/.jsonl.gz/.parquet | "tokenized:DIR"
    tokenizer: str = "bpe"  # "bpe": train byte-level BPE with vocab_size; else a path to tokenizer.json
    vocab_size: int = 4096  # used only for tokenizer == "bpe"
    max_bytes: int | None = None  # cap on corpus text: documents in a seeded order until the cap; None = all
    val_fraction: float = 0.02  # by document; at least one document either side
    split_seed: int = 0  # fixes the document order (for max_bytes) and the validation documents
    cache_dir: str | None = None  # None -> $TIEDSWEEP_CACHE or ~/.cache/tiedsweep

    def errors(self) -> list[str]:
        """Every reason these settings cannot work without reading a file, each naming its field."""
        errs = []
        if self.tokenizer == "bpe" and self.vocab_size < 257:
            errs.append(f"vocab_size: must be >= 257 for a BPE (256 bytes + end-of-text), got {self.vocab_size}")
        if self.max_bytes is not None and self.max_bytes <= 0:
            errs.append(f"max_bytes: must be > 0 (or left out for the whole corpus), got {self.max_bytes}")
        if not 0 < self.val_fraction <= 0.5:
            errs.append(f"val_fraction: must be in (0, 0.5], got {self.val_fraction}")
        return errs


DATA_RUNTIME_FIELDS = ("cache_dir",)  # where the tokens are cached, not which tokens: left out of trial ids


@dataclass(frozen=True, eq=False)  # eq=False: comparing memmaps elementwise is never what is meant
class TokenData:
    train: np.ndarray  # 1-D memmap (or Shards of memmaps) of token ids, training documents each followed by eot
    val: np.ndarray  # same for validation documents
    vocab_size: int  # the tokenizer's vocab size (a model's vocab must be >= this)
    eot_id: int
    fingerprint: str  # == corpus_fingerprint(cfg)
    tokenizer_path: str
    n_train_docs: int
    n_val_docs: int


@dataclass(frozen=True)
class _Source:
    path: str
    rel: str  # relative to the corpus root: survives moving the corpus
    kind: str  # "text" | "jsonl" | "parquet"

    @property
    def key(self) -> str:
        """Names the same documents whatever the container, so JSONL and Parquet split alike."""
        return self.rel if self.kind == "text" else self.rel.removesuffix(".gz").rsplit(".", 1)[0]


def _kind(path: str) -> str | None:
    return next((kind for suffix, kind in _KINDS.items() if path.endswith(suffix)), None)


def _walk(root: str, skip: tuple[str, ...] = ()) -> list[str]:
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in skip)
        found += [os.path.join(folder, n) for n in sorted(names) if not n.startswith(".") and _kind(n)]
    return found


def _sources(corpus: str) -> list[_Source]:
    return list(_stdlib_sources()) if corpus == "stdlib" else _listed(corpus)


@functools.cache
def _stdlib_sources() -> tuple[_Source, ...]:
    """The running Python's standard library, listed once per process: it does not change under the
    interpreter, and a dry run checks, fingerprints and maps it (~40 ms a listing, 2 cores)."""
    return tuple(_listed("stdlib"))


def _listed(corpus: str) -> list[_Source]:
    path = os.path.expanduser(corpus)
    if corpus == "stdlib":
        # site-/dist-packages hold whatever happens to be installed, not the standard library
        skip = ("site-packages", "dist-packages", "__pycache__")
        files = [p for p in _walk(sysconfig.get_paths()["stdlib"], skip) if p.endswith(".py")]
    elif any(c in corpus for c in "*?["):
        matched = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
        if not matched:
            raise DataError(f"corpus: glob '{corpus}' matches no files")
        files = [p for p in matched if _kind(p)]
    elif os.path.isdir(path):
        files = _walk(path)
    elif os.path.isfile(path):
        if not _kind(path):
            raise DataError(f"corpus: unsupported file type '{corpus}' (expected {_SUFFIXES})")
        files = [path]
    else:
        raise DataError(f"corpus: no such file or folder '{corpus}'")
    if not files:
        raise DataError(f"corpus: no text documents found in '{corpus}' (looked for {_SUFFIXES})")
    root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in files])
    return [_Source(p, os.path.relpath(os.path.abspath(p), root), _kind(p) or "") for p in files]


def _check(cfg: DataConfig) -> list[_Source]:
    """Every check that needs no tokenizing, so bad input fails before any work."""
    if cfg.tokenizer == "bpe" and cfg.vocab_size < 257:
        raise DataError(f"vocab_size: must be >= 257 (256 byte symbols + {EOT}), got {cfg.vocab_size}")
    if cfg.tokenizer != "bpe" and not os.path.isfile(os.path.expanduser(cfg.tokenizer)):
        raise DataError(f"tokenizer: no such file '{cfg.tokenizer}'")
    if cfg.max_bytes is not None and cfg.max_bytes <= 0:
        raise DataError(f"max_bytes: must be positive or None, got {cfg.max_bytes}")
    if not 0 < cfg.val_fraction <= 0.5:
        raise DataError(f"val_fraction: must be in (0, 0.5], got {cfg.val_fraction}")
    return _check_sources(cfg)


def corpus_errors(cfg: DataConfig) -> list[str]:
    """Every reason cfg's files cannot give a token stream, found without tokenizing, each naming its
    field: a tokenizer file that is missing or does not load, a corpus that cannot be read, fewer
    than 2 documents within max_bytes (one is held out). For a spec's checks, before anything runs."""
    errs = []
    if cfg.tokenizer != "bpe":
        path = os.path.expanduser(cfg.tokenizer)
        try:
            if not os.path.isfile(path):
                raise DataError(f"tokenizer: no such file '{cfg.tokenizer}'")
            _open_tokenizer(path)  # ~0.1 s for a 50k vocab
        except DataError as e:
            errs.append(str(e))
    if cfg.corpus.startswith(TOKENIZED):
        return errs  # tokenized shards: corpus_fingerprint reads their manifest
    try:
        sources = _check_sources(cfg)
        n = sum(1 for _ in islice(_documents(cfg, sources), 2))  # stops at the second document
    except DataError as e:
        return [*errs, str(e)]
    if n < 2 and cfg.max_bytes is not None:
        errs.append(f"max_bytes: {cfg.max_bytes:,} bytes of '{cfg.corpus}' hold {n} non-empty document(s); "
                    "training needs at least 2 (one is held out for validation)")  # fmt: skip
    elif n < 2:
        errs.append(f"corpus: '{cfg.corpus}' has {n} non-empty document(s); training needs at least 2")
    return errs


def _check_sources(cfg: DataConfig) -> list[_Source]:
    """The corpus's files, each checked as far as can be without reading it all."""
    sources = _sources(cfg.corpus)
    for s in sources:
        if s.kind == "parquet":
            try:
                schema = pq.read_schema(s.path)
            except (OSError, pa.ArrowException) as e:
                raise DataError(f"corpus: cannot read Parquet file '{s.path}': {e}") from None
            if "text" not in schema.names:
                cols = ", ".join(schema.names)
                raise DataError(f"corpus: Parquet file '{s.path}' has no 'text' column (columns: {cols})")
            t = schema.field("text").type
            if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
                raise DataError(f"corpus: Parquet file '{s.path}' has a 'text' column of type {t}, not string")
        elif s.kind == "jsonl":
            next(_read(s), None)  # parses the first record: catches gzip, encoding and field errors
    return sources


def _file_hash(path: str | Path) -> str:
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()[:16]


def _fingerprint(cfg: DataConfig, sources: list[_Source]) -> str:
    stdlib = cfg.corpus == "stdlib"
    # stdlib: the Python version pins the sources, and an mtime (a reinstall, a copied venv) would
    # change every trial id without changing a token. Elsewhere mtime stands for an edit of the file.
    files = sorted((s.rel, (st := os.stat(s.path)).st_size, 0 if stdlib else st.st_mtime_ns) for s in sources)
    tok = {"bpe": cfg.vocab_size} if cfg.tokenizer == "bpe" else {"file": _file_hash(cfg.tokenizer)}
    python = sys.version if stdlib else None  # a new Python ships different sources
    spec = {"format": _FORMAT, "files": files, "python": python, "tokenizer": tok}
    spec |= {field: getattr(cfg, field) for field in ("max_bytes", "val_fraction", "split_seed")}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def corpus_fingerprint(cfg: DataConfig) -> str:
    """16 hex chars naming the token stream cfg yields; stats files only (~30 ms for stdlib)."""
    if cfg.corpus.startswith(TOKENIZED):
        return read_manifest(cfg.corpus.removeprefix(TOKENIZED))["fingerprint"]
    return _fingerprint(cfg, _check(cfg))


def _read(src: _Source) -> Iterator[str | None]:
    """The texts of one source file, one per document (None for a null row)."""
    if src.kind == "text":
        yield (
            Path(src.path).read_bytes().decode("utf-8", errors="replace")
        )  # a few stdlib tests are deliberately latin-1
    elif src.kind == "jsonl":
        try:
            with (gzip.open if src.path.endswith(".gz") else open)(src.path, "rt", encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        yield _jsonl_text(src.path, n, line)
        except (OSError, EOFError, UnicodeDecodeError) as e:
            raise DataError(f"corpus: cannot read JSONL file '{src.path}': {e}") from None
    else:
        try:
            for batch in pq.ParquetFile(src.path).iter_batches(batch_size=1024, columns=["text"]):
                yield from batch.column(0).to_pylist()
        except (OSError, pa.ArrowException) as e:
            raise DataError(f"corpus: cannot read Parquet file '{src.path}': {e}") from None


def _jsonl_text(path: str, n: int, line: str) -> str | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"corpus: '{path}' line {n}: invalid JSON ({e.msg})") from None
    if not isinstance(row, dict) or "text" not in row:
        raise DataError(f"corpus: '{path}' line {n}: no 'text' field")
    if row["text"] is not None and not isinstance(row["text"], str):
        raise DataError(f"corpus: '{path}' line {n}: 'text' is {type(row['text']).__name__}, not a string")
    return row["text"]


def _unit(seed: int, salt: str, key: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, salt, key): independent of file listing order."""
    digest = hashlib.blake2b(f"{seed}/{salt}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _file_order(cfg: DataConfig, sources: list[_Source]) -> list[_Source]:
    """Files in a seeded order (the stream's order, and a tokenized DIR's shard order)."""
    return sorted(sources, key=lambda s: (_unit(cfg.split_seed, "order", s.key), s.rel))


def _source_documents(cfg: DataConfig, src: _Source) -> Iterator[tuple[bool, str]]:
    """(is_validation, text) of each non-empty document of one file, in file order. A document is
    held out when its own hash falls under val_fraction: a separate salt from the file order, else
    capping bytes would skew the split."""
    for row, text in enumerate(_read(src)):
        if text:
            key = src.key if src.kind == "text" else f"{src.key}#{row}"
            yield _unit(cfg.split_seed, "val", key) < cfg.val_fraction, text


def _documents(cfg: DataConfig, sources: list[_Source]) -> Iterator[tuple[bool, str]]:
    """(is_validation, text) of each non-empty document, until max_bytes.

    Files come in a seeded order; rows keep their order within a shard (FineWeb shards are
    already unordered crawl dumps).
    """
    total = 0
    for src in _file_order(cfg, sources):
        for is_val, text in _source_documents(cfg, src):
            yield is_val, text
            total += len(text.encode())
            if cfg.max_bytes is not None and total >= cfg.max_bytes:
                return


def _train_bpe(cfg: DataConfig, sources: list[_Source]) -> Tokenizer:
    def sample() -> Iterator[str]:  # training documents only: the tokenizer never sees validation text
        seen = 0
        for is_val, text in _documents(cfg, sources):
            if seen >= _BPE_SAMPLE_BYTES:
                return
            if not is_val:
                seen += len(text.encode())
                yield text

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()  # all 256 bytes, so any text encodes without <unk>
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size, special_tokens=[EOT], initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(sample(), trainer)
    return tok


def _open_tokenizer(path: str | Path) -> tuple[Tokenizer, int]:
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for bad JSON
        raise DataError(f"tokenizer: cannot load '{path}': {e}") from None
    eot = next((i for name in _EOT_NAMES if (i := tok.token_to_id(name)) is not None), None)
    if eot is None:
        raise DataError(f"tokenizer: '{path}' has no end-of-text token (looked for {' '.join(_EOT_NAMES)})")
    return tok, eot


class _Sink:
    """A file written under a temp name beside its final one, renamed there only when complete;
    for a token stream, it counts documents and can hand its last one to the other split."""

    def __init__(self, path: Path) -> None:
        self.path, self.n_docs, self.last = path, 0, np.empty(0)
        fd, self.tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        self.file = os.fdopen(fd, "wb")

    def add(self, ids: np.ndarray) -> None:
        self.file.write(ids.tobytes())
        self.n_docs, self.last = self.n_docs + 1, ids

    def pop(self) -> np.ndarray:
        """Take back the last document; call at most once, after the last add."""
        self.file.truncate(self.file.tell() - self.last.nbytes)
        self.n_docs -= 1
        return self.last

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)


def _atomic_write(path: Path, data: bytes) -> None:
    sink = _Sink(path)
    try:
        sink.file.write(data)
        sink.commit()
    except OSError as e:  # a full disk: no temp file left behind, and the message names the file
        raise OSError(e.errno, f"{e.strerror} (writing '{path}')") from e
    finally:
        sink.file.close()
        Path(sink.tmp).unlink(missing_ok=True)


def _checksum(path: str) -> str:
    """blake2b of the whole file, or of _VERIFY_BLOCKS evenly spread blocks when it is larger."""
    size, h = os.path.getsize(path), hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        if size <= _VERIFY_WHOLE:
            while block := f.read(1 << 22):
                h.update(block)
        else:
            for i in range(_VERIFY_BLOCKS):
                f.seek((size - _VERIFY_BLOCK) * i // (_VERIFY_BLOCKS - 1))
                h.update(f.read(_VERIFY_BLOCK))
    return h.hexdigest()


def _verify(prefix: str, meta: dict) -> str | None:
    """What is wrong with a cache's token files (sizes, checksums), or None."""
    files = meta.get("files")
    if not isinstance(files, dict):
        return "its metadata has no sizes and checksums (written before caches were verified)"
    for split in ("train", "val"):
        path, want = f"{prefix}.{split}.bin", files.get(split) or {}
        size = os.path.getsize(path) if os.path.exists(path) else None
        if size != want.get("bytes"):
            return f"'{path}' has {size} bytes, its metadata says {want.get('bytes')}"
        if _checksum(path) != want.get("checksum"):
            return f"'{path}' does not match its checksum"
    return None


def _token_dtype(vocab: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab < 2**16 else np.uint32)  # halves the cache for vocabs < 65536


def _encode(docs: Iterator[tuple[bool, str]], tok: Tokenizer, eot: int, train: _Sink, val: _Sink) -> None:
    """Each document's ids followed by eot, into the train or val sink."""
    dtype = _token_dtype(tok.get_vocab_size())
    while chunk := list(islice(docs, _ENCODE_DOCS)):
        encodings = tok.encode_batch([text for _, text in chunk], add_special_tokens=False)
        for (is_val, _), enc in zip(chunk, encodings, strict=True):
            (val if is_val else train).add(np.array([*enc.ids, eot], dtype))


def _tokenize(cfg: DataConfig, sources: list[_Source], tok: Tokenizer, eot: int, prefix: str) -> None:
    vocab = tok.get_vocab_size()
    dtype = _token_dtype(vocab)
    train, val = _Sink(Path(f"{prefix}.train.bin")), _Sink(Path(f"{prefix}.val.bin"))
    try:
        _encode(_documents(cfg, sources), tok, eot, train, val)
        if (n := train.n_docs + val.n_docs) < 2:
            raise DataError(f"corpus: '{cfg.corpus}' too small: {n} non-empty documents, need at least 2")
        if val.n_docs == 0:  # at least one document either side, whatever the hashes say
            val.add(train.pop())
        elif train.n_docs == 0:
            train.add(val.pop())
        train.commit()
        val.commit()
    except OSError as e:  # a full disk: the message names the files (the finally removes them)
        raise OSError(e.errno, f"{e.strerror} (writing '{prefix}.train.bin' and .val.bin)") from e
    finally:
        for sink in (train, val):
            sink.file.close()
            Path(sink.tmp).unlink(missing_ok=True)
    meta = {"dtype": dtype.name, "vocab_size": vocab, "eot_id": eot, "n_train_docs": train.n_docs}
    meta["n_val_docs"] = val.n_docs
    meta["files"] = {
        split: {"bytes": os.path.getsize(f"{prefix}.{split}.bin"), "checksum": _checksum(f"{prefix}.{split}.bin")}
        for split in ("train", "val")
    }
    _atomic_write(Path(f"{prefix}.json"), json.dumps(meta).encode())  # written last: marks the cache done


def shard_plan(cfg: DataConfig) -> tuple[str, list[_Source]]:
    """(fingerprint, files in stream order) for tokenizing cfg's corpus one file per shard."""
    if cfg.max_bytes is not None:
        raise DataError("max_bytes: a sharded corpus is tokenized whole; choose its files instead")
    sources = _check(cfg)
    return _fingerprint(cfg, sources), _file_order(cfg, sources)


def make_tokenizer(cfg: DataConfig, sources: list[_Source]) -> str:
    """The tokenizer JSON: BPE trained on the sample prepare_data trains on, or cfg.tokenizer's file."""
    if cfg.tokenizer == "bpe":
        return _train_bpe(cfg, sources).to_str()
    _open_tokenizer(cfg.tokenizer)
    return Path(cfg.tokenizer).expanduser().read_text()


def tokenizer_info(path: str | Path) -> dict:
    """vocab_size, eot_id and the token dtype of a tokenizer.json."""
    tok, eot = _open_tokenizer(path)
    return {"vocab_size": tok.get_vocab_size(), "eot_id": eot, "dtype": _token_dtype(tok.get_vocab_size()).name}


def tokenize_file(cfg: DataConfig, source: tuple[str, str, str], tokenizer: str | Path, prefix: str) -> dict:
    """One source file (path, rel, kind as shard_plan lists it) -> prefix.train.bin and prefix.val.bin,
    split as prepare_data splits; returns the token and document counts."""
    src = _Source(*source)
    tok, eot = _open_tokenizer(tokenizer)
    train, val = _Sink(Path(f"{prefix}.train.bin")), _Sink(Path(f"{prefix}.val.bin"))
    try:
        _encode(_source_documents(cfg, src), tok, eot, train, val)
        train.commit()
        val.commit()
    finally:
        for sink in (train, val):
            sink.file.close()
            Path(sink.tmp).unlink(missing_ok=True)
    itemsize = _token_dtype(tok.get_vocab_size()).itemsize
    counts = {f"{s}_tokens": os.path.getsize(f"{prefix}.{s}.bin") // itemsize for s in ("train", "val")}
    return counts | {"train_docs": train.n_docs, "val_docs": val.n_docs}


def _prefix(cache: Path, fp: str, tok_path: Path) -> str:
    return f"{cache / fp}-{_file_hash(tok_path)[:8]}"  # an edited tokenizer.json never reuses old ids


def _cached(cache: Path, fp: str, tok_path: Path) -> tuple[TokenData | None, str | None]:
    """(the cache, None), or (None, what is wrong with it: None when there is none yet)."""
    if not tok_path.is_file():
        return None, None
    prefix = _prefix(cache, fp, tok_path)
    try:
        meta = json.loads(Path(f"{prefix}.json").read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as e:
        return None, f"'{prefix}.json' is unreadable ({e})"
    if problem := _verify(prefix, meta):
        return None, problem
    dtype = np.dtype(meta.pop("dtype"))
    meta.pop("files")
    train, val = (np.memmap(f"{prefix}.{s}.bin", dtype, mode="r") for s in ("train", "val"))
    return TokenData(train, val, fingerprint=fp, tokenizer_path=str(tok_path), **meta), None


def prepare_data(cfg: DataConfig) -> TokenData:
    """Validate, then tokenize once per (fingerprint, tokenizer); later calls only memmap the cache.

    Concurrent callers (Ray workers) serialise on a lock file: the first trains the tokenizer and
    tokenizes, the others wait and then map its files. Every file is written to a temp name and
    renamed, so a killed worker never leaves a half-written cache behind. A "tokenized:DIR" corpus
    is only mapped (its tokenizer and split are the manifest's; the other fields are not used).
    """
    if cfg.corpus.startswith(TOKENIZED):
        return load_tokenized(cfg.corpus.removeprefix(TOKENIZED))
    sources = _check(cfg)
    fp = _fingerprint(cfg, sources)
    cache = Path(cfg.cache_dir or os.environ.get("TIEDSWEEP_CACHE") or "~/.cache/tiedsweep")
    cache = cache.expanduser().resolve()  # absolute, so tokenizer_path means the same in every worker
    cache.mkdir(parents=True, exist_ok=True)
    bpe = cfg.tokenizer == "bpe"
    tok_path = cache / f"bpe{cfg.vocab_size}-{fp}.json" if bpe else Path(cfg.tokenizer).expanduser().resolve()
    if (data := _cached(cache, fp, tok_path)[0]) is not None:
        return data
    if not bpe:
        _open_tokenizer(tok_path)  # a broken tokenizer.json fails before anyone waits on the lock
    # the lock file is never deleted: unlinking it would let a late process lock a different inode
    with open(cache / f"{fp}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data, problem = _cached(cache, fp, tok_path)
        if data is None:
            if problem:  # never train on a damaged cache: rebuild it (a wrong result under a valid id)
                warnings.warn(f"token cache: {problem}; rebuilding it", stacklevel=2)
            if bpe and tok_path.is_file():
                try:
                    _open_tokenizer(tok_path)
                except DataError as e:  # our own trained tokenizer, damaged on disk: train it again
                    warnings.warn(f"{e}; training it again", stacklevel=2)
                    tok_path.unlink()
            if bpe and not tok_path.is_file():
                _atomic_write(tok_path, _train_bpe(cfg, sources).to_str().encode())
            tok, eot = _open_tokenizer(tok_path)
            _tokenize(cfg, sources, tok, eot, _prefix(cache, fp, tok_path))
            data, problem = _cached(cache, fp, tok_path)
    assert data is not None, problem
    return data


MANIFEST = "manifest.json"


def read_manifest(folder: str) -> dict:
    path = Path(folder).expanduser() / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"corpus: no {MANIFEST} in '{folder}' (write one with `tiedsweep tokenize`)") from None


class Shards:
    """Token files read as one 1-D array without loading them: len, slices and integer-array
    indexing (all that Batches and val_batches use) over memmaps in manifest order."""

    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = [p for p in parts if len(p)]
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])  # part k holds [starts[k], starts[k+1])
        self.dtype = parts[0].dtype if parts else np.dtype(np.uint16)
        self.size = int(self.starts[-1])
        self.shape = (self.size,)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, stride = index.indices(self.size)
            index = np.arange(start, stop, stride)
        index = np.asarray(index)
        flat = index.ravel()
        part = np.searchsorted(self.starts, flat, side="right") - 1
        out = np.empty(flat.shape, self.dtype)
        for k in np.unique(part):
            mask = part == k
            out[mask] = self.parts[k][flat[mask] - self.starts[k]]
        return out.reshape(index.shape)


def load_tokenized(folder: str) -> TokenData:
    """Map the shards of a `tiedsweep tokenize` output folder (manifest.json lists them in stream order)."""
    m = read_manifest(folder)
    root = Path(folder).expanduser().resolve()
    dtype = np.dtype(m["dtype"])

    def split(name: str) -> np.ndarray:
        parts = [np.memmap(root / s[f"{name}_file"], dtype, mode="r") for s in m["shards"] if s[f"{name}_tokens"]]
        return parts[0] if len(parts) == 1 else Shards(parts)  # type: ignore[return-value]

    return TokenData(
        split("train"),
        split("val"),
        vocab_size=m["vocab_size"],
        eot_id=m["eot_id"],
        fingerprint=m["fingerprint"],
        tokenizer_path=str(root / m["tokenizer"]),
        n_train_docs=m["documents"]["train"],
        n_val_docs=m["documents"]["val"],
    )


def load_tokenizer(data: TokenData) -> Tokenizer:
    """The tokenizer that produced data's ids, for decoding samples."""
    return Tokenizer.from_file(data.tokenizer_path)


class Batches:
    """Packed batches: the token stream is cut into windows of seq_len+1 tokens starting at
    multiples of seq_len (x = w[:-1], y = w[1:]); window order is a permutation drawn per epoch
    from np.random.default_rng((seed, epoch)), so batch(step) is a pure function of (seed, step):
    resuming a run needs only the step. Row j of step s is window i = s*B + j of the concatenated
    epoch permutations, so a batch may straddle two epochs.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int) -> None:
        if seq_len < 1 or batch_size < 1:
            raise DataError(f"seq_len, batch_size: must be >= 1, got {seq_len}, {batch_size}")
        self.tokens, self.seq_len, self.batch_size, self.seed = tokens, seq_len, batch_size, seed
        self.n_windows = (len(tokens) - 1) // seq_len  # the last window needs one extra target token
        if self.n_windows == 0:
            raise DataError(f"corpus: only {len(tokens)} tokens, fewer than one sequence of {seq_len + 1}")
        self._perms: dict[int, np.ndarray] = {}  # the current and next epoch: get() never redraws one

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) >= 2:
                del self._perms[min(self._perms)]
            self._perms[epoch] = np.random.default_rng((self.seed, epoch)).permutation(self.n_windows)
        return self._perms[epoch]

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y), each (B, T) int64 on CPU."""
        import torch  # here, not at the top: the orchestrator reads DataConfig without importing torch

        epoch, pos = np.divmod(step * self.batch_size + np.arange(self.batch_size), self.n_windows)
        window = np.empty(self.batch_size, np.int64)
        for e in np.unique(epoch):
            window[epoch == e] = self._perm(int(e))[pos[epoch == e]]
        w = self.tokens[window[:, None] * self.seq_len + np.arange(self.seq_len + 1)]  # (B, T+1)
        w = torch.from_numpy(w.astype(np.int64))
        return w[:, :-1].contiguous(), w[:, 1:].contiguous()

    def epochs(self, tokens_consumed: int) -> float:
        """Passes over the unique training data that tokens_consumed amounts to (> 1: data repeats)."""
        return tokens_consumed / (self.n_windows * self.seq_len)


def val_batches(
    tokens: np.ndarray, seq_len: int, batch_size: int, max_tokens: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed evaluation set: the first max_tokens targets of the val stream (or all of it), in
    windows as in Batches, in stream order. The last batch may hold fewer rows."""
    import torch  # as in Batches.get

    n = (min(len(tokens), max_tokens + 1) - 1) // seq_len
    if n == 0:
        raise DataError(
            f"corpus: too small: {min(len(tokens), max_tokens + 1)} validation tokens < one sequence of "
            f"{seq_len + 1} (raise max_bytes or val_fraction)"
        )
    w = torch.from_numpy(np.asarray(tokens[: n * seq_len + 1]).astype(np.int64))
    windows = w.unfold(0, seq_len + 1, seq_len)  # (n, T+1), overlapping by the one target token
    return [(b[:, :-1].contiguous(), b[:, 1:].contiguous()) for b in windows.split(batch_size)]
