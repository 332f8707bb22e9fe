"""What a long-running process (an API worker) serves: the deployed release, swapped in when the
pointer moves, and values recomputed only when the file they come from changes.

Hot reload: ``ReleaseWatcher.current()`` looks at ``production_deployment/current.json`` at most
every ``interval`` seconds. When it names a new release, the release is loaded (the model's
SHA-256 checked, the fast path checked against the pipeline) and swapped in only once it loaded; a
release that fails is never served, the old one stays and the failure is logged. Callers that hold
a release keep it for as long as they use it.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from churnlib.clock import utc_now
from churnlib.dataset import FrozenSchema
from churnlib.fsutil import read_json
from churnlib.modelstore import (
    METADATA_FILE,
    MODEL_FILE,
    POINTER_FILE,
    SCORE_DETAILS_FILE,
    LoadedModel,
    ModelLoadError,
    load_model,
    read_pointer,
    release_folder,
)
from churnlib.pipeline import Predictor, checked_predictor, model_threshold

logger = logging.getLogger(__name__)


@dataclass
class Release:
    release_id: str
    model: LoadedModel
    schema: FrozenSchema
    predictor: Predictor
    scores: dict[str, Any]
    loaded_at: str

    @property
    def threshold(self) -> float:
        """The probability above which this release predicts churn."""
        return model_threshold(self.model.metadata)


def load_release(deployment_folder: Path, release_id: str) -> Release:
    """Return a release loaded from disk: model (SHA-256 checked), checked predictor and scores."""
    folder = release_folder(deployment_folder, release_id)
    model = load_model(folder)
    schema = FrozenSchema.from_dict(model.metadata["schema"])
    scores = read_json(folder / SCORE_DETAILS_FILE) or {}
    return Release(
        release_id=release_id,
        model=model,
        schema=schema,
        predictor=checked_predictor(model, schema),
        scores=scores,
        loaded_at=utc_now(),
    )


class ReleaseWatcher:
    """Holds the release a worker serves and swaps in a new one once it has loaded and verified."""

    def __init__(self, deployment_folder: Path, interval: float):
        self.deployment_folder = deployment_folder
        self.interval = interval
        self.release: Release | None = None
        self.problem: str | None = "no release deployed yet"
        self._checked_at = -math.inf
        self._pointer_signature: tuple | None = None
        self._failed: str | None = None  # the release that failed to load, tried again when its files change
        self._lock = threading.Lock()

    def current(self) -> Release | None:
        """Return the release to serve, looking for a new one at most every ``interval`` seconds."""
        now = time.monotonic()
        if now - self._checked_at >= self.interval and self._lock.acquire(blocking=False):
            try:
                self._checked_at = now
                self._refresh()
            finally:
                self._lock.release()
        return self.release

    def _signature(self) -> tuple:
        """Return what, when it changes, makes the watcher look again: the pointer, and the failed release's files."""
        paths = [self.deployment_folder / POINTER_FILE]
        if self._failed is not None:
            folder = release_folder(self.deployment_folder, self._failed)
            paths += [folder / MODEL_FILE, folder / METADATA_FILE]
        signature = []
        for path in paths:
            try:
                st = os.stat(path)
                signature.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except FileNotFoundError:
                signature.append(None)
        return tuple(signature)

    def _refresh(self) -> None:
        signature = self._signature()
        if signature == self._pointer_signature:
            return
        self._pointer_signature = signature
        try:
            pointer = read_pointer(self.deployment_folder)
        except ModelLoadError as exc:
            self._fail(str(exc))
            return
        if pointer is None:
            if self.release is None:
                self.problem = "no release deployed yet"
            return
        if self.release is not None and pointer["current"] == self.release.release_id:
            # The pointer names what is served (a rollback, a repaired pointer): whatever was wrong is gone.
            self.problem, self._failed = None, None
            self._pointer_signature = self._signature()
            return
        # At start (nothing served yet) fall back to earlier releases if the current one is broken.
        candidates = [pointer["current"]] if self.release is not None else [pointer["current"], *pointer.get("previous", [])]
        for release_id in candidates:
            try:
                release = load_release(self.deployment_folder, release_id)
            except Exception as exc:  # whatever stops a release from loading, it is not served
                self._fail(f"release {release_id} not loaded: {exc}")
                if release_id == pointer["current"]:
                    self._failed = release_id
                    self._pointer_signature = self._signature()
                continue
            previous = self.release.release_id if self.release else None
            self.release = release
            if release_id == pointer["current"]:
                self.problem, self._failed = None, None
                self._pointer_signature = self._signature()
            else:
                self.problem = f"serving {release_id}: {self.problem}"
            logger.info("now serving release %s%s", release_id, f" (was {previous})" if previous else "")
            return

    def _fail(self, message: str) -> None:
        serving = f"; still serving {self.release.release_id}" if self.release else ""
        logger.error("%s%s", message, serving)
        self.problem = message + serving


class FileCache:
    """Recompute a value only when a file changes.

    A change is seen in the file's (inode, mtime, size); with ``version``, a function that reads a
    version from the file cheaply, only a new version means a recomputation (the ingestion record
    is rewritten for many reasons, but only a new data version changes the statistics).
    """

    _UNSET = object()

    def __init__(self, path: Path, compute: Callable[[], Any], version: Callable[[], Any] | None = None):
        self.path = path
        self.compute = compute
        self.version = version
        self._signature: Any = self._UNSET
        self._version: Any = self._UNSET
        self._value: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        try:
            st = os.stat(self.path)
            signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            signature = None
        with self._lock:
            if signature != self._signature:
                version = self.version() if self.version else signature
                if version != self._version:
                    # Remembered only once computed: a read that failed is tried again next time,
                    # and says again why it failed, instead of leaving None behind.
                    self._value = self.compute()
                    self._version = version
                self._signature = signature
            return self._value
