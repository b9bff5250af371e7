"""Identity and records: what a trial is called and where its results live.

Imported by the orchestrator (which writes) and by analysis (which reads); imports only pyarrow,
the standard library and tiedattn's config dataclasses, never ray, the orchestrator or analysis.

    layout.py    the on-disk layout of a results directory (paths, file systems, names)
    ids.py       the one identity function: trial, trunk, branch and tuning-proxy ids; cell and shape ids
    schema.py    the Parquet schemas, derived from the config dataclasses, and a trial's config row
    store.py     atomic writes and the readers of trials and evals (latest attempt, commit marker)
    index.py     a driver's in-memory index of a sweep's results (latest outcome, attempts), refreshed by new names
    manifest.py  versioned sweep manifests (the planned trials of a sweep)
    tuning.py    lr.json, the tuned learning rates, and the rate a trial trains with
"""
