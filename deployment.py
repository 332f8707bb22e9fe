"""Deployment: models/ -> production_deployment/, as versioned releases behind one atomic pointer.

Layout::

    production_deployment/
        current.json                 the pointer: {"current": <release id>, "previous": [...], ...}
        releases/<release id>/       one folder per release, never changed once it exists
            trainedmodel.pkl trainedmodel.json latestscore.txt latestscore.json
            reference_sample.csv ingestion_record.json ingestedfiles.txt release.json
            (+ the report and diagnostics when fullprocess.py deploys)

A release folder is built under a temporary name, fsynced, and renamed into place; only then is
``current.json`` replaced (temporary file, fsync, ``os.replace``). A crash at any instant leaves the
pointer on the old release or the new one. The API and the pipeline read the release the pointer
names, so the switch is the deploy.

``releases`` in the pointer lists every kept release, newest deploy first; ``current`` is one of
them, and ``previous`` (the kept releases deployed before the current one) is derived from the two.
A rollback only moves ``current``: the release rolled back from stays listed and reachable
(``--rollback --to`` goes forward as well as back). ``served`` lists the releases that served,
newest first: a plain ``--rollback`` returns to the one that served before the current one (also
right after ``--rollback --to``), and another goes one further back. A deploy puts the new release first and keeps
``deployment.keep_releases`` of them; release folders the pointer does not list are deleted, and
the current release is never deleted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from churnlib.clock import utc_now
from churnlib.cli import run_script, script_parser
from churnlib.config import Config
from churnlib.errors import ChurnError, in_step
from churnlib.fsutil import (
    atomic_write_json,
    copy_file_synced,
    fsync_dir,
    read_json,
    remove_stale_temporaries,
    sha256_file,
    temporary_path_for,
    write_bytes_synced,
)
from churnlib.modelstore import (
    MANIFEST_FILE,
    NORMAL_FOLDER,
    METADATA_FILE,
    MODEL_FILE,
    POINTER_FILE,
    REFERENCE_FILE,
    RELEASES_FOLDER,
    SCORE_DETAILS_FILE,
    SCORE_FILE,
    ModelLoadError,
    checked_reference_sample,
    load_model,
    read_pointer,
    release_folder,
)
from churnlib.ingested import INGESTED_LIST_FILE, RECORD_FILE

logger = logging.getLogger(Path(__file__).stem)

MODEL_FILES = (MODEL_FILE, METADATA_FILE, SCORE_FILE, SCORE_DETAILS_FILE, REFERENCE_FILE)
# The releases that served, newest first, kept in the pointer for --rollback (see write_pointer).
MAX_SERVED_HISTORY = 50


class DeploymentError(ChurnError):
    """A deploy or rollback that cannot go ahead; the message says why."""


def check_model_folder(model_folder: Path) -> dict[str, Any]:
    """Return the metadata of the model in ``model_folder`` once it loads and its score is its own."""
    model = load_model(model_folder)
    scores = read_json(model_folder / SCORE_DETAILS_FILE)
    if scores is None or not (model_folder / SCORE_FILE).exists():
        raise DeploymentError(f"{model_folder / SCORE_FILE}: missing; run scoring.py first")
    if scores.get("release_id") != model.release_id:
        raise DeploymentError(
            f"{model_folder / SCORE_DETAILS_FILE}: scores release {scores.get('release_id')}, "
            f"but the model is release {model.release_id}; run scoring.py first"
        )
    try:
        checked_reference_sample(model_folder, model.metadata)
    except ModelLoadError as exc:
        raise DeploymentError(f"{exc}; run training.py again") from None
    return model.metadata


@in_step("deployment")
def deploy_release(
    model_folder: Path,
    deployment_folder: Path,
    *,
    ingested_folder: Path,
    keep_releases: int,
    extra_files: dict[str, bytes] | None = None,
    decision: dict[str, Any] | None = None,
) -> str:
    """Deploy the model in ``model_folder`` as a new release and switch the pointer to it; return its id.

    ``extra_files`` (name -> content) are stored in the release too: the report, the diagnostics.
    """
    metadata = check_model_folder(model_folder)
    release_id = metadata["release_id"]
    releases = deployment_folder / RELEASES_FOLDER
    releases.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(releases)
    remove_stale_temporaries(deployment_folder)
    final = release_folder(deployment_folder, release_id)
    if final.exists():
        load_model(final)  # an earlier, interrupted deploy of the same model: reuse it if it is whole
        logger.info("release %s already built; switching to it", release_id)
    else:
        staging = temporary_path_for(final)
        staging.mkdir()
        try:
            for name in MODEL_FILES:
                copy_file_synced(model_folder / name, staging / name)
            for name in (RECORD_FILE, INGESTED_LIST_FILE):
                if (ingested_folder / name).exists():
                    copy_file_synced(ingested_folder / name, staging / name)
            for name, data in (extra_files or {}).items():
                write_bytes_synced(staging / name, data)
            manifest = {
                "release_id": release_id,
                "created_at": utc_now(),
                "decision": decision,
                "files": {path.name: sha256_file(path) for path in sorted(staging.iterdir())},
            }
            write_bytes_synced(staging / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode())
            fsync_dir(staging)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(releases)
    pointer = read_pointer(deployment_folder)
    # The release serving until now comes right after the new one, wherever a rollback had left it
    # in the list: a rollback returns to it, and the count keeps it before releases rolled away from.
    kept = [] if pointer is None else [pointer["current"], *(r for r in pointer["releases"] if r != pointer["current"])]
    kept = [rid for rid in kept if rid != release_id]
    write_pointer(deployment_folder, release_id, [release_id, *kept][:keep_releases], action="deploy",
                  served=[release_id, *served_history(pointer)])
    logger.info("deployed release %s (pointer %s switched)", release_id, deployment_folder / POINTER_FILE)
    prune_releases(deployment_folder)
    return release_id


def served_history(pointer: dict[str, Any] | None) -> list[str]:
    """Return the releases that served, the current one first, as the pointer records them (``served``)."""
    if pointer is None:
        return []
    # A pointer written before the history was kept: the releases deployed before served before.
    return list(pointer.get("served") or [pointer["current"], *pointer.get("previous", [])])


def write_pointer(deployment_folder: Path, current: str, releases: list[str], *, action: str,
                  served: list[str] | None = None, **details: Any) -> None:
    """Switch the pointer to ``current`` among the kept ``releases`` (newest deploy first), atomically.

    ``served``: the releases that served, ``current`` first (each deploy and each switch adds the
    release switched to); kept only for releases still kept, each run of one release once. A plain
    ``--rollback`` returns along it: to the release that served before the current one.
    """
    if current not in releases:
        releases = [*releases, current]
    previous = releases[releases.index(current) + 1:]
    history: list[str] = []
    for release in served or [current]:
        if release in releases and (not history or history[-1] != release):
            history.append(release)
    history = history[:MAX_SERVED_HISTORY]
    atomic_write_json(deployment_folder / POINTER_FILE,
                      {"current": current, "releases": releases, "previous": previous, "served": history,
                       "switched_at": utc_now(), "action": action, **details})


def prune_releases(deployment_folder: Path, *, keep_releases: int | None = None) -> list[str]:
    """Delete release folders the pointer no longer lists (beyond ``keep_releases`` if given); return their ids.

    The current release is never deleted, wherever it is in the list.
    """
    pointer = read_pointer(deployment_folder)
    if pointer is None:
        return []
    releases = pointer["releases"]
    if keep_releases is not None and len(releases) > keep_releases:
        kept = releases[:keep_releases]
        if pointer["current"] not in kept:
            kept = [*releases[: max(keep_releases - 1, 0)], pointer["current"]]
        write_pointer(deployment_folder, pointer["current"], kept, action=pointer.get("action", "prune"),
                      served=served_history(pointer))
        releases = kept
    keep = {pointer["current"], *releases}
    removed = []
    for folder in sorted((deployment_folder / RELEASES_FOLDER).iterdir()):
        if folder.name.startswith(".") or folder.name in keep:
            continue
        shutil.rmtree(folder)
        removed.append(folder.name)
        # The release's new normal, if a shift was accepted for it, goes with it.
        for normal in (deployment_folder / NORMAL_FOLDER).glob(f"{folder.name}.*"):
            normal.unlink(missing_ok=True)
    if removed:
        logger.info("removed old release(s) beyond deployment.keep_releases: %s", ", ".join(removed))
    return removed


def _releases_on_disk(deployment_folder: Path) -> list[str]:
    """Return the release folders, newest deploy first (by when each one's manifest, its last file, was written)."""
    folder = deployment_folder / RELEASES_FOLDER
    folders = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")] if folder.exists() else []

    def written(release: Path) -> tuple[int, str]:
        try:
            return (release / MANIFEST_FILE).stat().st_mtime_ns, release.name
        except FileNotFoundError:
            return 0, release.name

    return [p.name for p in sorted(folders, key=written, reverse=True)]


def rollback(deployment_folder: Path, *, to: str | None = None) -> tuple[str | None, str]:
    """Point the deployment at another kept release; return (from, to).

    Without ``to``, the release that served before the current one is chosen (the pointer's
    ``served`` history: after a deploy the release it replaced, after ``--rollback --to X`` the
    release that served before X; a second ``--rollback`` goes one further back, as a browser's
    Back button does), skipping any whose model fails its hash check; a pointer written before that
    history was kept: the next release in the list. With ``to``, any kept release: older (back) or
    newer (forward, after a rollback). When the pointer itself is damaged, ``to`` may name any
    release folder: the pointer is written anew, listing the release folders on disk.
    """
    try:
        pointer = read_pointer(deployment_folder)
    except ModelLoadError:
        if to is None:
            raise
        pointer = None
        releases = _releases_on_disk(deployment_folder)
        current = None
        logger.warning("%s is damaged; writing it anew from the release folders", deployment_folder / POINTER_FILE)
    else:
        if pointer is None:
            raise DeploymentError("nothing is deployed, nothing to roll back")
        releases, current = pointer["releases"], pointer["current"]
    history = [r for r in served_history(pointer) if r in releases]
    if to is not None:
        if to == current:
            raise DeploymentError(f"release {to} is the current release already")
        if to not in releases:
            raise DeploymentError(f"release {to} is not among the kept releases: {', '.join(releases)}")
        candidates = [to]
    else:
        candidates = [r for r in history[1:] if r != current]
        if not candidates:
            raise DeploymentError(f"no release kept served before {current}; nothing to roll back to "
                                  f"(kept: {', '.join(releases)}; --rollback --to <id> switches to any of them)")
    target = None
    for candidate in candidates:
        try:
            load_model(release_folder(deployment_folder, candidate))
        except ModelLoadError as exc:
            logger.warning("skipping release %s for rollback: %s", candidate, exc)
            continue
        target = candidate
        break
    if target is None:
        raise DeploymentError(f"no {'such' if to else 'earlier'} release passes its integrity check; nothing to roll back to")
    direction = "rollback" if current is None or releases.index(target) > releases.index(current) else "roll forward"
    if to is None:
        served = history[history.index(target):]  # back along the history: what was undone leaves it
    else:
        served = [target, *history]
    write_pointer(deployment_folder, target, releases, action=direction, rolled_back_from=current, served=served)
    logger.info("%s from release %s to %s", "rolled back" if direction == "rollback" else "rolled forward", current, target)
    return current, target


def list_releases(deployment_folder: Path) -> list[dict[str, Any]]:
    """Return the kept releases, newest deploy first: id, whether current, creation time, algorithm, settings,
    rows, scores."""
    from churnlib.search import settings_text

    pointer = read_pointer(deployment_folder)
    if pointer is None:
        return []
    rows = []
    for release_id in pointer["releases"]:
        folder = release_folder(deployment_folder, release_id)
        manifest = read_json(folder / MANIFEST_FILE, {}) or {}
        metadata = read_json(folder / METADATA_FILE, {}) or {}
        scores = read_json(folder / SCORE_DETAILS_FILE, {}) or {}
        rows.append({
            "release_id": release_id,
            "current": release_id == pointer["current"],
            "created_at": manifest.get("created_at"),
            "algorithm": metadata.get("algorithm"),
            "settings": settings_text(metadata) if metadata else None,
            "training_rows": (metadata.get("training_data") or {}).get("rows"),
            "f1": scores.get("f1"),
            "roc_auc": scores.get("roc_auc"),
            "reason": ((manifest.get("decision") or {}).get("reason")),
        })
    return rows


def format_release_table(rows: list[dict[str, Any]]) -> str:
    """Return the release list as a table for the terminal."""
    if not rows:
        return "no release deployed yet"
    lines = [f"  {'release':<27} {'created':<21} {'algorithm':<20} {'rows':>8} {'F1':>7} {'AUC':>7}  reason"]
    for row in rows:
        f1 = "" if row["f1"] is None else f"{row['f1']:.4f}"
        auc = "" if row["roc_auc"] is None else f"{row['roc_auc']:.4f}"
        lines.append(
            f"{'*' if row['current'] else ' '} {row['release_id']:<27} {row['created_at'] or '?':<21} "
            f"{row['algorithm'] or '?':<20} {row['training_rows'] or '':>8} {f1:>7} {auc:>7}  {row['reason'] or ''}"
        )
        if row.get("settings"):
            lines.append(f"  {'':<27} settings: {row['settings']}")
    lines.append("(* = current)")
    return "\n".join(lines)


def _main(config: Config, args) -> int:
    if args.list:
        print(format_release_table(list_releases(config.paths.deployment)))
    elif args.rollback:
        old, new = rollback(config.paths.deployment, to=args.to)
        action = (read_pointer(config.paths.deployment) or {}).get("action", "rollback")
        print(f"{'rolled forward' if action == 'roll forward' else 'rolled back'}: {old} -> {new}")
        print("every kept release stays listed (deployment.py --list); --rollback --to <id> returns to any of them")
    else:
        release_id = deploy_release(
            config.paths.models,
            config.paths.deployment,
            ingested_folder=config.paths.ingested,
            keep_releases=config.deployment.keep_releases,
            decision={"reason": "deployed by hand with deployment.py"},
        )
        print(f"deployed release {release_id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(
        "Deploy the trained model in the model folder as a new release (the default), "
        "list the kept releases, or switch back (or forward) to another kept release.",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--list", action="store_true",
                        help="list the kept releases, newest deploy first, * marking the current one")
    action.add_argument("--rollback", action="store_true",
                        help="switch to the release that served before the current one (or, with --to, to any kept release)")
    parser.add_argument("--to", metavar="RELEASE_ID",
                        help="with --rollback: the kept release to switch to, older or newer than the current one "
                             "(also when current.json is damaged: then any release folder)")
    args = parser.parse_args(argv)
    if args.to and not args.rollback:
        parser.error("--to needs --rollback")
    # --list and --rollback are incident tools: they need only where the releases are. A deploy, like
    # every other step, refuses a config with any error.
    return run_script(parser, argv, "deployment", _main, lock=lambda args: not args.list,
                      needs=lambda args: ("paths",) if args.list or args.rollback else None)


if __name__ == "__main__":
    sys.exit(main())
