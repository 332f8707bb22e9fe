"""Which deployment this is: an id kept in the deployment folder, that the API's ``/health`` reports
and the pipeline compares before it uses any reply of the API at ``api.url``.

A practice set-up beside production (another folder, or a ``cp -r`` of production's) must never take
production's API for its own: ``api.url`` defaults to the same address for both. So each deployment
folder holds ``deployment_id.json``: a random id and the folder it was made for.

Why an id kept in a file, and not one derived from the folder's path: the API may see the folder
at another path than cron does (a container, a bind mount), and must still be recognised. Why the
folder is kept beside it: a copy carries the file along and must not pass for the original. When
the pipeline or ``apicalls.py`` (the writers; the API only reads) finds the file made for another folder, then
if that folder still holds the same id, this is a copy and gets an id of its own; if not, the
deployment was moved (or restored from a backup elsewhere) and stays itself.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from churnlib.fsutil import atomic_write_json, read_json_or_none

logger = logging.getLogger(__name__)

IDENTITY_FILE = "deployment_id.json"
# In the log folder: the other deployment the API at api.url was last found serving, so that the
# warning is logged once, not after every deploy.
SIGHTING_FILE = "api_other_deployment.json"


def _read(folder: Path) -> dict | None:
    identity = read_json_or_none(folder / IDENTITY_FILE)
    if isinstance(identity, dict) and isinstance(identity.get("id"), str) and identity["id"]:
        return identity
    return None


def read_deployment_id(folder: Path) -> str | None:
    """Return the id of the deployment in ``folder``, or None when it has none yet (or a damaged one),
    or when it is a copy not yet given an id of its own: a ``cp -r`` of production must not pass for
    production (``apicalls.py`` would send it the token) before its first deploy."""
    identity = _read(folder)
    if identity is None or _is_copy(folder, identity):
        return None
    return identity["id"]


def _is_copy(folder: Path, identity: dict) -> bool:
    """Whether ``identity`` (read in ``folder``) was made for another folder that still holds the same id."""
    here = os.path.realpath(folder)
    made_for = identity.get("folder")
    if made_for == here or not isinstance(made_for, str) or not made_for:
        return False
    original = _read(Path(made_for))
    return original is not None and original["id"] == identity["id"] and os.path.realpath(made_for) != here


def ensure_deployment_id(folder: Path) -> str:
    """Return the id of the deployment in ``folder``, made (or made anew, for a copy) when needed."""
    here = os.path.realpath(folder)
    identity = _read(folder)
    if identity is not None and identity.get("folder") == here:
        return identity["id"]
    if identity is not None:
        if not _is_copy(folder, identity):
            logger.info("deployment %s was moved from %s; it keeps its id", identity["id"], identity.get("folder"))
            atomic_write_json(folder / IDENTITY_FILE, {"id": identity["id"], "folder": here})
            return identity["id"]
        logger.info("%s is a copy of the deployment in %s: it gets an id of its own", here, identity.get("folder"))
    new_id = secrets.token_hex(8)
    atomic_write_json(folder / IDENTITY_FILE, {"id": new_id, "folder": here})
    return new_id


def first_sighting(log_folder: Path, url: str, reported: str | None) -> bool:
    """Note that the API at ``url`` serves the deployment ``reported``; return whether that is news."""
    sighting = {"url": url, "deployment": reported}
    if read_json_or_none(log_folder / SIGHTING_FILE) == sighting:
        return False
    atomic_write_json(log_folder / SIGHTING_FILE, sighting)
    return True


def forget_sighting(log_folder: Path) -> None:
    """The API at api.url serves this deployment (again): a later mismatch is news again."""
    (log_folder / SIGHTING_FILE).unlink(missing_ok=True)
