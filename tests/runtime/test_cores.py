"""The one count of usable cores every default number of workers derives from."""

from __future__ import annotations

import os

import pytest

from ccdcal.files.hashing import default_jobs
from ccdcal.runtime.cores import usable_cores


def test_the_cpu_affinity_counts_not_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 5}, raising=False)
    assert usable_cores() == 2
    assert default_jobs() == 4  # hashing threads: two per usable core


def test_without_affinity_the_machine_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert usable_cores() == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert usable_cores() == 1
