"""Versioned sweep manifests: DIR/manifests/<sweep>.json, the planned trials of a sweep's latest run.

    {"format": 2, "results_version": 2, "name", "spec_path", "spec_text", "trials": [...]}

The orchestrator serializes its trials into "trials" (every config field) so that `resume` and
`status` need no spec; analysis reads only their ids. A manifest written by another results
version is refused with one line (ResultsVersionError): its trial ids were made by other rules; so
is a manifest that is not JSON or lacks a key (ManifestError, naming the file).
Written atomically (temp file + rename) like everything under DIR.
"""

from __future__ import annotations

import json
import uuid

import pyarrow.fs as pafs

from records.ids import RESULTS_VERSION
from records.layout import manifest_path

FORMAT = 2


class ManifestError(ValueError):
    """A manifest or results file that cannot be used as it is; the message is one line naming the file."""


class ResultsVersionError(ManifestError):
    """Results written by another version of tiedsweep (other id rules); the message is one line."""


def write_manifest_doc(results_dir: str, name: str, spec_path: str, spec_text: str, trials: list[dict]) -> None:
    fs, folder, path = manifest_path(results_dir, name)
    doc = {"format": FORMAT, "results_version": RESULTS_VERSION, "name": name, "spec_path": spec_path}
    doc |= {"spec_text": spec_text, "trials": trials}
    fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/_tmp-{uuid.uuid4().hex}.tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(json.dumps(doc).encode())
    fs.move(tmp, path)


def read_manifest_doc(results_dir: str, name: str) -> dict:
    """The manifest of sweep `name`. FileNotFoundError if none; ResultsVersionError if another
    version of tiedsweep wrote it."""
    fs, _, path = manifest_path(results_dir, name)
    with fs.open_input_stream(path) as f:
        raw = f.read()
    try:
        doc = json.loads(raw)
    except ValueError as e:  # a torn or hand-edited file
        raise ManifestError(f"{path}: not a manifest (invalid JSON: {e}); run the sweep's spec again") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{path}: not a manifest (a JSON {type(doc).__name__}, not an object)")
    found = doc.get("results_version", 1)
    if found != RESULTS_VERSION:
        raise ResultsVersionError(
            f"{path}: written by results version {found}, this tiedsweep reads version {RESULTS_VERSION} "
            "(trial ids changed: shape labels carry d_ff): use a new results directory, or the older tiedsweep"
        )
    if doc.get("format", FORMAT) != FORMAT:
        raise ResultsVersionError(f"{path}: manifest format {doc.get('format')}, this tiedsweep reads format {FORMAT}")
    missing = [k for k in ("name", "spec_path", "spec_text", "trials") if k not in doc]
    if missing or not isinstance(doc["trials"], list):
        raise ManifestError(f"{path}: manifest lacks {', '.join(missing) or 'a list of trials'}; run the sweep's "
                            "spec again to rewrite it")  # fmt: skip
    if bad := [i for i, t in enumerate(doc["trials"]) if not isinstance(t, dict) or "trial_id" not in t]:
        raise ManifestError(f"{path}: trials[{bad[0]}] has no trial_id; run the sweep's spec again to rewrite it")
    return doc


def manifest_ids(results_dir: str, name: str) -> set[str] | None:
    """Trial ids that the latest spec of sweep `name` expands to, or None where it has no manifest."""
    try:
        return {str(t["trial_id"]) for t in read_manifest_doc(results_dir, name)["trials"]}
    except FileNotFoundError:
        return None


def sweeps_in(results_dir: str) -> list[str]:
    """Names of the sweeps that have a manifest in results_dir."""
    fs, folder, _ = manifest_path(results_dir, "x")
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    return sorted(i.base_name[:-5] for i in infos if i.base_name.endswith(".json") and not i.base_name.startswith("_"))
