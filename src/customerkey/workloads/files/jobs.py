"""The files workload's job kinds and their typed payloads."""

from __future__ import annotations

from dataclasses import dataclass

REGISTER_JOB = "files-register"
ROLL_JOB = "files-roll"
PURGE_JOB = "files-purge"
REWRAP_JOBS = (REGISTER_JOB, ROLL_JOB)


@dataclass(frozen=True)
class RewrapPayload:
    """Re-wrap the target files policy's site keys onto generation ``generation_id`` (a
    registration, or a roll of ``key_type`` to ``key_uri``; ``recovery`` when the old
    generations are opened with the availability key)."""

    generation_id: str
    generation_seq: int = 0
    key_type: str | None = None
    key_uri: str | None = None
    recovery: bool = False
