"""The package's data files: its SQL (``include/sql``), stage files (``include/config``) and runbook.

They are package data under ``device_sync/include/``: the wheel's build copies the repository's top-level
``include/sql`` and ``include/config`` there, and in the checkout ``plugins/device_sync/include`` is a symbolic
link to the top-level ``include/``. So this one lookup (``importlib.resources``) finds them whether the package
is installed from the wheel (MWAA, Astro, an image, a bare DAGs folder) or run from the repository, whatever
the working directory. The runbook, ``docs/runbook.md``, is ``device_sync/runbook.md`` the same way (the wheel
holds a copy; in the checkout ``plugins/device_sync/runbook.md`` is a symbolic link to it).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

INCLUDE = files("device_sync") / "include"


def sql_text(name: str) -> str:
    """The text of ``include/sql/<name>``."""
    return (INCLUDE / "sql" / name).read_text(encoding="utf-8")


def stage_file(stage: str) -> Path:
    """The stage file ``include/config/<stage>.env`` as a file system path (pydantic-settings reads paths)."""
    return Path(str(INCLUDE / "config" / f"{stage}.env"))


def runbook() -> str:
    """The operator's runbook (``docs/runbook.md``), Markdown: the DAG's ``doc_md``."""
    return (files("device_sync") / "runbook.md").read_text(encoding="utf-8")
