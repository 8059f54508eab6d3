"""The device's store of pushed models: receive, verify, install, keep the previous, roll back.

    STATE_DIR/incoming/{push_id}/manifest.json   a transfer in progress (survives restarts)
                                /data              the file being reassembled (sparse)
                                /have              indices of the chunks written, 4 bytes each
    MODEL_DIR/deployed/{name}/{version}.{format}   installed versions: the current and the previous
    MODEL_DIR/deployed/{name}.json                 which version is current, which was before,
                                                   the highest release installed (anti-rollback)
    MODEL_DIR/deployed/{name}.{format}             a symlink to the current version, for applications

Installing is two atomic renames: the verified file into its version's name, then the
pointer file; a crash between them leaves the old version current and a stray file
that the next install removes.  A rollback rewrites the pointer to the previous version.
Nothing here runs a model: the daemon runs the smoke benchmark in a worker process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
from dataclasses import dataclass
from typing import Any, Optional

import msgspec

from agent.common.errors import UsageError
from agent.common.files import child_path, write_bytes_atomic, write_text_atomic
from agent.protocol.push import Manifest, PushError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Installed:
    name: str
    version: str
    path: str
    previous: Optional[str]  # the version now kept as the fallback


class ModelStore:
    """Whether a manifest is signed for this device is the receiver's question
    (``agent.device.trust``); the store checks what only it knows: sizes, space, releases."""

    def __init__(self, model_dir: str, state_dir: str, max_bytes: int) -> None:
        self.deployed = os.path.join(model_dir, "deployed")
        self.incoming = os.path.join(state_dir, "incoming")
        self.max_bytes = max_bytes

    # -- receiving ------------------------------------------------------------------

    def known(self, manifest: Manifest) -> bool:
        """A transfer of this very push is in progress (the manifest came again: a retry)."""
        existing = self._manifest(manifest.push_id)
        return existing is not None and existing.same_push(manifest)

    def offer(self, manifest: Manifest) -> list[int]:
        """Accept a manifest (decoded, so well formed, and trusted: the receiver checked its
        seal) within the device's limits; the chunk indices still missing (all of them for a
        new push, fewer for a resumed one).

        PushError says why a manifest is refused; nothing is written then.
        """
        self.check_release(manifest)
        if manifest.size > self.max_bytes:
            raise PushError(
                f"push {manifest.push_id}: {manifest.size} bytes is over this device's limit "
                f"of {self.max_bytes} (models.max_bytes)"
            )
        directory = self._dir(manifest.push_id)
        existing = self._manifest(manifest.push_id)
        if existing is not None and not existing.same_push(manifest):
            raise PushError(f"push {manifest.push_id}: a different manifest already uses this push_id")
        if existing is None:
            self._supersede(manifest)
            os.makedirs(self.incoming, exist_ok=True)
            if manifest.size * 2 > shutil.disk_usage(self.incoming).free:  # the transfer + the installed copy
                raise PushError(f"push {manifest.push_id}: {manifest.size} bytes do not fit on this device")
            os.makedirs(directory, exist_ok=True)
            with open(os.path.join(directory, "data"), "wb") as fh:
                fh.truncate(manifest.size)
            open(os.path.join(directory, "have"), "wb").close()
            write_bytes_atomic(os.path.join(directory, "manifest.json"), msgspec.json.encode(manifest),
                               what="push manifest")  # fmt: skip
        have = self._have(manifest.push_id)
        return [i for i in range(manifest.chunks) if i not in have]

    def check_release(self, manifest: Manifest) -> None:
        """PushError if ``manifest`` is not a newer release of its model than every one this
        device installed (anti-rollback); a manifest without a release number passes."""
        if manifest.release is None:
            return
        highest = (self.current(manifest.name) or {}).get("release")
        if isinstance(highest, int) and manifest.release <= highest:
            raise PushError(
                f"push {manifest.push_id}: release {manifest.release} of {manifest.name} is not newer "
                f"than release {highest} already installed here; an older model goes back as a new push "
                "(a new release)"
            )

    def add_chunk(self, push_id: str, index: int, data: bytes) -> Optional[Manifest]:
        """Write one chunk; the manifest once every chunk is in, else None.  PushError for a
        chunk of an unknown push, an index out of range, a wrong length or digest."""
        manifest = self._manifest(push_id)
        if manifest is None:
            raise PushError(f"chunk {index} of push {push_id}: no manifest was accepted for this push")
        if not 0 <= index < manifest.chunks:
            raise PushError(f"chunk {index} of push {push_id}: the push has chunks 0-{manifest.chunks - 1}")
        if len(data) != manifest.chunk_size(index):
            wanted = manifest.chunk_size(index)
            raise PushError(f"chunk {index} of push {push_id} is {len(data)} bytes; it should be {wanted}")
        if not manifest.digest_ok(index, data):
            raise PushError(f"chunk {index} of push {push_id} is not the signed one (its digest differs)")
        directory = self._dir(push_id)
        have = self._have(push_id)
        if index not in have:
            with open(os.path.join(directory, "data"), "r+b") as fh:
                fh.seek(index * manifest.chunk_bytes)
                fh.write(data)
            # The index is recorded after its bytes: a chunk listed in "have" is on disk.
            with open(os.path.join(directory, "have"), "ab") as fh:
                fh.write(struct.pack("<I", index))
            have.add(index)
        return manifest if len(have) == manifest.chunks else None

    def missing(self, push_id: str) -> Optional[list[int]]:
        manifest = self._manifest(push_id)
        if manifest is None:
            return None
        have = self._have(push_id)
        return [i for i in range(manifest.chunks) if i not in have]

    def discard(self, push_id: str) -> None:
        shutil.rmtree(self._dir(push_id), ignore_errors=True)

    def pending(self) -> list[Manifest]:
        """Transfers in progress (after a restart, they resume when the manifest comes again)."""
        if not os.path.isdir(self.incoming):
            return []
        found = [self._manifest(p) for p in sorted(os.listdir(self.incoming))]
        return [m for m in found if m is not None]

    # -- installing -----------------------------------------------------------------

    def install(self, push_id: str) -> Installed:
        """Verify size and sha256 of the complete transfer and make it the current version.

        PushError (and the transfer discarded) when the bytes are not the signed ones; the
        current version is untouched then.
        """
        manifest = self._manifest(push_id)
        if manifest is None:
            raise PushError(f"push {push_id}: nothing was received for it")
        data = os.path.join(self._dir(push_id), "data")
        try:
            size = os.path.getsize(data)
            digest = hashlib.sha256()
            with open(data, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            if size != manifest.size:
                raise PushError(f"push {push_id}: received {size} bytes; the manifest says {manifest.size}")
            if digest.hexdigest() != manifest.sha256:
                raise PushError(
                    f"push {push_id}: the received bytes' sha256 is not the signed one (a chunk was altered)"
                )
            self.check_release(manifest)  # a newer one may have been installed meanwhile
            versions = self._path(self.deployed, manifest.name, "model name")
            os.makedirs(versions, exist_ok=True)
            target = self._path(versions, f"{manifest.version}.{manifest.format}", "model version")
            os.replace(data, target)
        except PushError:
            self.discard(push_id)
            raise
        pointer = self.current(manifest.name) or {}
        previous = pointer.get("current")
        if previous and previous.get("version") == manifest.version:
            previous = pointer.get("previous")  # the same version again: keep the older fallback
        entry = {"version": manifest.version, "format": manifest.format, "sha256": manifest.sha256,
                 "push_id": push_id, "file": os.path.relpath(target, self.deployed),
                 "release": manifest.release}  # fmt: skip
        releases = [r for r in (manifest.release, pointer.get("release")) if isinstance(r, int)]
        self._point(manifest.name, entry, previous, max(releases) if releases else None)
        self.discard(push_id)
        self._prune(manifest.name)
        logger.info("installed %s version %s", manifest.name, manifest.version)
        return Installed(manifest.name, manifest.version, target, previous["version"] if previous else None)

    def rollback(self, name: str) -> Optional[str]:
        """Make the previous version current again (the failed one is deleted); the version
        now current, or None when there was no previous one (the model is then removed)."""
        pointer = self.current(name)
        if pointer is None:
            return None
        previous = pointer.get("previous")
        failed = pointer.get("current") or {}
        if previous:
            self._point(name, previous, None, pointer.get("release"))
        else:
            for path in (self._pointer(name), self._link(name, failed.get("format", ""))):
                if os.path.lexists(path):
                    os.unlink(path)
        if failed.get("file") and (not previous or failed.get("file") != previous.get("file")):
            with_path = os.path.join(self.deployed, failed["file"])
            if os.path.exists(with_path):
                os.unlink(with_path)
        logger.warning("rolled %s back to %s", name, previous["version"] if previous else "nothing")
        return previous["version"] if previous else None

    def current(self, name: str) -> Optional[dict[str, Any]]:
        """The pointer for ``name``: {"current": {...}, "previous": {...} or None}."""
        try:
            with open(self._pointer(name), encoding="utf-8") as fh:
                pointer = json.load(fh)
        except (OSError, ValueError):
            return None
        return pointer if isinstance(pointer, dict) else None

    def path_of(self, entry: dict[str, Any]) -> str:
        return os.path.join(self.deployed, entry["file"])

    # -- helpers --------------------------------------------------------------------

    @staticmethod
    def _path(directory: str, name: str, what: str) -> str:
        # Ids and names are checked when their message is decoded (letters, digits, '.', '_',
        # ':', '-', starting with a letter or digit); checked again here, where they become paths.
        try:
            return child_path(directory, name, what)
        except UsageError as err:
            raise PushError(str(err)) from None

    def _dir(self, push_id: str) -> str:
        return self._path(self.incoming, push_id.replace(":", "_"), "push id")

    def _pointer(self, name: str) -> str:
        return self._path(self.deployed, f"{name}.json", "model name")

    def _link(self, name: str, fmt: str) -> str:
        return self._path(self.deployed, f"{name}.{fmt}", "model name")

    def _manifest(self, push_id: str) -> Optional[Manifest]:
        try:
            with open(os.path.join(self._dir(push_id), "manifest.json"), "rb") as fh:
                return msgspec.json.decode(fh.read(), type=Manifest)
        except (OSError, msgspec.DecodeError):
            return None

    def _have(self, push_id: str) -> set[int]:
        try:
            with open(os.path.join(self._dir(push_id), "have"), "rb") as fh:
                raw = fh.read()
        except OSError:
            return set()
        usable = len(raw) - len(raw) % 4  # a torn last write is a chunk not yet had
        return {i for (i,) in struct.iter_unpack("<I", raw[:usable])}

    def _supersede(self, manifest: Manifest) -> None:
        """A new push of a model replaces an unfinished older push of the same model."""
        for other in self.pending():
            if other.name == manifest.name and other.push_id != manifest.push_id:
                logger.info("push %s supersedes the unfinished push %s", manifest.push_id, other.push_id)
                self.discard(other.push_id)

    def _point(self, name: str, current: dict[str, Any], previous: Optional[dict[str, Any]],
               release: Optional[int]) -> None:  # fmt: skip
        """Make ``current`` the version in use; ``release``: the highest release ever installed."""
        pointer = {"current": current, "previous": previous, "release": release}
        write_text_atomic(self._pointer(name), json.dumps(pointer), what="model pointer")
        link = self._link(name, current["format"])
        tmp = link + ".new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(current["file"], tmp)
        os.replace(tmp, link)
        if previous and previous.get("format") != current["format"]:
            stale = self._link(name, previous["format"])
            if os.path.lexists(stale):
                os.unlink(stale)

    def _prune(self, name: str) -> None:
        """Keep the current and the previous version's files; remove older ones."""
        pointer = self.current(name) or {}
        keep = {e["file"] for e in (pointer.get("current"), pointer.get("previous")) if e}
        versions = os.path.join(self.deployed, name)
        for file in os.listdir(versions):
            rel = os.path.join(name, file)
            if rel not in keep:
                os.unlink(os.path.join(versions, file))
