"""The :class:`JobArchive`: what the REST API shows of jobs that ended, kept in memory and
in ``DATA_DIR/archive/<job id>.json`` so it survives a JobManager restart.

File format: one JSON object per job, ``{"overview": /jobs/overview entry, "details":
/jobs/<jid>, "exceptions": /jobs/<jid>/exceptions, "vertices": {vertex id:
/jobs/<jid>/vertices/<vid>}}``, written to a temporary file and renamed. At most
``capacity`` jobs are kept (the oldest ended go first, from memory and disk).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class JobArchive:
    def __init__(self, directory: Path, capacity: int = 1000) -> None:
        self.directory = directory
        self.capacity = max(1, capacity)
        self.jobs: dict[str, dict[str, Any]] = {}

    def load(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        docs = []
        for p in self.directory.glob("*.json"):
            try:
                doc = json.loads(p.read_text())
                docs.append((int(doc["overview"].get("end-time", 0)), p.stem, doc))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                log.warning("ignoring unreadable archived job %s", p)
        for _, jid, doc in sorted(docs, key=lambda x: x[0]):
            self.jobs[jid] = doc
        self._trim()

    def add(self, jid: str, doc: dict[str, Any]) -> None:
        self.jobs.pop(jid, None)
        self.jobs[jid] = doc
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self.directory / f".{jid}.json.tmp"
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, self.directory / f"{jid}.json")
        except OSError as e:
            log.warning("cannot archive job %s: %s", jid, e)
        self._trim()

    def _trim(self) -> None:
        while len(self.jobs) > self.capacity:
            jid = next(iter(self.jobs))
            del self.jobs[jid]
            with contextlib.suppress(OSError):
                (self.directory / f"{jid}.json").unlink()

    def get(self, jid: str) -> dict[str, Any] | None:
        return self.jobs.get(jid)
