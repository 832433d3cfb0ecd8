"""What reading a sweep's files found, kept between calls and between processes, so that
opening a big sweep again costs a stat of each file instead of parsing it (a 10,000-trial sweep
holds 30,000 YAML files).

An entry is used only while every file it was read from has the same inode, size, mtime and
ctime as when it was read: a file rewritten, replaced, damaged, copied or restored from a
backup is read again. (ctime cannot be set back by `touch` or `os.utime`; an edit in place that
keeps the size within one tick of a coarse file-system clock is what would go unseen, as it
would by make.) The cache lives outside the sweep dir, one file per sweep in
$HPSWEEP_CACHE_DIR (default ~/.cache/hpsweep, or $XDG_CACHE_HOME/hpsweep;
HPSWEEP_CACHE_DIR=off turns it off): reading a sweep never writes into it, a read-only sweep
dir is cached too, and deleting the cache loses nothing.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import pickle
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("hpsweep.results")

# bump when what is kept changes shape: older cache files are then ignored
VERSION = 2
# a sweep's cache file left unchanged this long is removed when another is written
KEEP_UNUSED_S = 30 * 24 * 3600

StatKey = tuple[tuple[int, int, int, int] | None, ...]


def stat_key(paths: Iterable[str]) -> StatKey:
    """Each file's (inode, size, mtime, ctime), None for a missing one."""
    key: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            s = os.stat(path)
        except OSError:
            key.append(None)
            continue
        key.append((s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns))
    return tuple(key)


def cache_dir() -> Path | None:
    chosen = os.environ.get("HPSWEEP_CACHE_DIR")
    if chosen == "off":
        return None
    if chosen:
        return Path(chosen)
    try:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except RuntimeError:  # no home to be found: no cache, the files are read each time
        return None
    return Path(base) / "hpsweep"


class ReadCache:
    """One sweep's entries: (kind, trial dir name, or None for the sweep's own files) ->
    (key, value); a value is used only when the key it was stored with is the key asked for."""

    def __init__(self, sweep: Path) -> None:
        self.sweep = str(sweep.resolve())
        self.file = _cache_file(self.sweep)
        self.entries: dict[tuple[str, str | None], tuple[Any, Any]] = self._load()
        self.changed = False
        # entries for this process alone, too big to be worth keeping in the file
        self.in_memory: dict[tuple[str, str | None], tuple[Any, Any]] = {}

    def _load(self) -> dict[tuple[str, str | None], tuple[Any, Any]]:
        if self.file is None:
            return {}
        gc.disable()  # its passes over the objects being built would double the time
        try:
            with open(self.file, "rb") as f:
                kept = pickle.load(f)
        except FileNotFoundError:
            return {}
        except Exception as e:  # cut short, another version's, not ours: start afresh
            log.debug("read cache %s not used: %s", self.file, e)
            return {}
        finally:
            gc.enable()
        if not isinstance(kept, dict) or kept.get("version") != VERSION:
            return {}
        if kept.get("sweep") != self.sweep:
            return {}  # two sweep paths with one digest: vanishingly rare, never mixed up
        return kept["entries"]

    def get(self, kind: str, name: str | None, key: Any) -> Any:
        """The value kept for `key`, or KeyError."""
        entry = (kind, name)
        kept_key, value = self.entries[entry] if entry in self.entries else self.in_memory[entry]
        if kept_key != key:
            raise KeyError(name)
        return value

    def put(self, kind: str, name: str | None, key: Any, value: Any, keep: bool = True) -> None:
        """`keep`: into the cache file too, not only for this process."""
        if keep:
            self.entries[(kind, name)] = (key, value)
            self.changed = True
        else:
            self.in_memory[(kind, name)] = (key, value)

    def keep_only(self, names: set[str]) -> None:
        """Forget the entries of trial dirs that are gone."""
        gone = [e for e in self.entries if e[1] is not None and e[1] not in names]
        for entry in gone:
            del self.entries[entry]
        self.changed |= bool(gone)

    def save(self) -> None:
        """Write the entries if they changed; a cache that cannot be written is skipped (the
        next call reads the files again), never an error."""
        if self.file is None or not self.changed:
            return
        kept = {"version": VERSION, "sweep": self.sweep, "entries": self.entries}
        partial = self.file.with_name(f"{self.file.name}.{os.getpid()}.tmp")
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as f:
                pickle.dump(kept, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(partial, self.file)  # another process's reader sees old or new, whole
        except OSError as e:
            log.debug("read cache %s not written: %s", self.file, e)
            partial.unlink(missing_ok=True)
            return
        self.changed = False
        _remove_unused(self.file.parent)


def _remove_unused(folder: Path) -> None:
    now = time.time()
    for path in folder.glob("sweep-*.pickle"):
        try:
            if now - path.stat().st_mtime > KEEP_UNUSED_S:
                path.unlink()
        except OSError:
            pass  # another process removed it first


def _cache_file(sweep: str) -> Path | None:
    folder = cache_dir()
    digest = hashlib.sha1(sweep.encode()).hexdigest()[:20]
    return None if folder is None else folder / f"sweep-{digest}.pickle"


_OPEN: dict[str, ReadCache] = {}


def for_sweep(sweep: Path) -> ReadCache:
    """The sweep's cache, read from its file once per process (a notebook that calls
    load_trials again and again reads it once)."""
    resolved = str(sweep.resolve())
    cache = _OPEN.get(resolved)
    if cache is None or cache.file != _cache_file(resolved):
        cache = _OPEN[resolved] = ReadCache(sweep)
    return cache
