"""The one way to save and load a model, and to find the deployed release.

A model is a pickled scikit-learn Pipeline (``trainedmodel.pkl``) next to its metadata
(``trainedmodel.json``) that holds, among the rest, the SHA-256 of the pickle. The pickle is only
unpickled after its hash matched: a changed byte, a truncated file or missing metadata is refused.

The deployed release is named by one pointer file, ``<deployment folder>/current.json``, which
``deployment.py`` replaces atomically. Nothing here imports scikit-learn until a model is unpickled.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from churnlib.errors import ChurnError
from churnlib.fsutil import atomic_write_bytes, atomic_write_json, read_json, sha256_bytes, sha256_file

MODEL_FILE = "trainedmodel.pkl"
METADATA_FILE = "trainedmodel.json"
SCORE_FILE = "latestscore.txt"
SCORE_DETAILS_FILE = "latestscore.json"
REFERENCE_FILE = "reference_sample.csv"
POINTER_FILE = "current.json"
MANIFEST_FILE = "release.json"  # in each release folder: its files' hashes and the decision behind it
RELEASES_FOLDER = "releases"
# In the deployment folder: a release's new normal (drift reference, expected score) once a shift
# was judged harmless: <release id>.json and <release id>.reference.csv.
NORMAL_FOLDER = "normal"


class ModelLoadError(ChurnError):
    """A model that must not be used; the message says which file and why."""


@dataclass
class LoadedModel:
    pipeline: Any
    metadata: dict
    folder: Path

    @property
    def release_id(self) -> str:
        return self.metadata["release_id"]


def save_model(pipeline: Any, metadata: dict, folder: Path) -> dict:
    """Write the model, then its metadata, to ``folder``; return the metadata.

    The metadata gains the model's SHA-256 and size, and a release id ``<trained_at>-<sha256[:8]>``
    unless it has one.
    """
    data = pickle.dumps(pipeline, protocol=5)
    digest = sha256_bytes(data)
    stamp = metadata["trained_at"].replace("-", "").replace(":", "")
    metadata = {
        "release_id": metadata.get("release_id") or f"{stamp}-{digest[:8]}",
        **metadata,
        "model_file": MODEL_FILE,
        "model_sha256": digest,
        "model_bytes": len(data),
    }
    # The pickle goes first: metadata that names a hash is only ever written after the bytes it
    # describes, so a crash between the two leaves a mismatch that load_model refuses.
    atomic_write_bytes(folder / MODEL_FILE, data)
    atomic_write_json(folder / METADATA_FILE, metadata)
    return metadata


def read_metadata(folder: Path) -> dict:
    """Return the model metadata in ``folder``, or raise ModelLoadError."""
    path = folder / METADATA_FILE
    try:
        metadata = read_json(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: unreadable metadata: {exc}") from None
    if metadata is None:
        raise ModelLoadError(f"{path}: metadata file missing")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("model_sha256"), str):
        raise ModelLoadError(f"{path}: metadata has no model_sha256")
    return metadata


def load_model(folder: Path) -> LoadedModel:
    """Return the model in ``folder`` after checking its SHA-256 against its metadata."""
    metadata = read_metadata(folder)
    path = folder / MODEL_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: model file missing") from None
    actual = sha256_bytes(data)
    if actual != metadata["model_sha256"]:
        raise ModelLoadError(
            f"{path}: SHA-256 {actual[:12]}... does not match {metadata['model_sha256'][:12]}... "
            f"in {METADATA_FILE}; the file was changed or truncated"
        )
    try:
        pipeline = pickle.loads(data)
    except Exception as exc:  # a hash match makes this unlikely, but never serve a broken model
        raise ModelLoadError(f"{path}: cannot be unpickled: {exc}") from None
    return LoadedModel(pipeline=pipeline, metadata=metadata, folder=folder)


def checked_reference_sample(folder: Path, metadata: dict) -> Path:
    """Return the model's drift reference sample once its SHA-256 matches the metadata's."""
    reference = metadata.get("reference_sample") or {}
    path = folder / reference.get("file", REFERENCE_FILE)
    try:
        actual = sha256_file(path)
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: reference sample missing") from None
    if actual != reference.get("sha256"):
        raise ModelLoadError(f"{path}: SHA-256 does not match {METADATA_FILE}; the file was changed or is "
                             "from another training run")
    return path


def read_pointer(deployment_folder: Path) -> dict | None:
    """Return the deployment pointer, or None: ``current``, ``releases`` (every kept one, newest first), ``previous``."""
    path = deployment_folder / POINTER_FILE
    advice = (f"point it at a release again with `python deployment.py --rollback --to <id>` (a folder in "
              f"{deployment_folder.name}/{RELEASES_FOLDER}/), or restore it from a backup")
    try:
        pointer = read_json(path, if_damaged=f"it was damaged (a full disk, or an edit by hand?); {advice}")
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    if pointer is None:
        return None
    if not isinstance(pointer, dict) or not isinstance(pointer.get("current"), str):
        raise ModelLoadError(f"{path}: has no current release; {advice}")
    if not isinstance(pointer.get("releases"), list):  # written before the pointer listed every kept release
        pointer["releases"] = [pointer["current"], *pointer.get("previous", [])]
    if pointer["current"] not in pointer["releases"]:
        pointer["releases"].insert(0, pointer["current"])
    return pointer


def read_normal(deployment_folder: Path, release_id: str) -> dict | None:
    """Return the new normal a later tick accepted for a release (its drift reference and calibration), or None."""
    path = deployment_folder / NORMAL_FOLDER / f"{release_id}.json"
    return read_json(path, if_damaged="delete it (and its .reference.csv) to go back to the release's own "
                                      "drift reference and calibration")


def release_folder(deployment_folder: Path, release_id: str) -> Path:
    return deployment_folder / RELEASES_FOLDER / release_id


def current_release_folder(deployment_folder: Path) -> Path | None:
    """Return the folder of the deployed release, or None when nothing is deployed."""
    pointer = read_pointer(deployment_folder)
    if pointer is None:
        return None
    return release_folder(deployment_folder, pointer["current"])


def load_deployed(deployment_folder: Path) -> LoadedModel | None:
    """Return the deployed model (hash-checked), or None when nothing is deployed."""
    folder = current_release_folder(deployment_folder)
    return None if folder is None else load_model(folder)
