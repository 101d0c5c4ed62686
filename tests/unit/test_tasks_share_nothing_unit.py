"""Executor-agnostic by construction: the code the tasks run keeps nothing on the local disk and no state in
the process for a later task to find. Every task may run on another host (tests/e2e/test_celery_e2e.py runs
them on two Celery workers that share no disk); their inputs are the staging tables and XCom counts.

The check reads the source: a task module that writes a file (``open``, ``Path.write_text``, ``tempfile``,
``shelve``, ``pickle.dump``, ``os.makedirs``…) or rebinds a module global (``global``) fails here, naming the
line. The modules that run only inside ``airflow api-server`` (the plugin's endpoints and middleware, where
a per-process cache is the point) are not task code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "plugins" / "device_sync"
API_SERVER_ONLY = {"api.py", "plugin.py", "trigger_guard.py"}
WRITING_CALLS = {
    "open", "write_text", "write_bytes", "mkdir", "makedirs", "mkstemp", "mkdtemp", "NamedTemporaryFile",
    "TemporaryFile", "TemporaryDirectory", "SpooledTemporaryFile", "dump", "touch", "symlink_to", "putenv",
}  # fmt: skip
WRITING_MODULES = {"tempfile", "shelve", "pickle", "dbm", "sqlite3"}

TASK_MODULES = sorted(path for path in PACKAGE.glob("*.py") if path.name not in API_SERVER_ONLY)


def findings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Global):
            found.append(f"{where}: global {', '.join(node.names)}")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [alias.name for alias in node.names]
            found += [f"{where}: imports {name}" for name in names if name.split(".")[0] in WRITING_MODULES]
        elif isinstance(node, ast.Call):
            function = node.func
            name = function.id if isinstance(function, ast.Name) else getattr(function, "attr", None)
            if name in WRITING_CALLS:
                found.append(f"{where}: calls {name}()")
    return sorted(found, key=lambda finding: int(finding.split(":")[1]))


def test_the_checks_see_the_task_modules() -> None:
    assert {"tasks.py", "sync.py", "staging.py", "history.py", "metrics.py"} <= {path.name for path in TASK_MODULES}


@pytest.mark.parametrize("path", TASK_MODULES, ids=lambda path: path.name)
def test_task_code_writes_no_local_file_and_keeps_no_module_state(path: Path) -> None:
    assert findings(path) == []


def test_the_check_catches_a_file_handed_between_tasks(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import tempfile\n"
        "RESULT = None\n"
        "def discover():\n"
        "    global RESULT\n"
        "    RESULT = 1\n"
        "    with open('/tmp/devices.csv', 'w') as out:\n"
        "        out.write('x')\n"
        "def resolve(path):\n"
        "    path.write_text('y')\n"
    )
    assert findings(bad) == [
        "bad.py:1: imports tempfile",
        "bad.py:4: global RESULT",
        "bad.py:6: calls open()",
        "bad.py:9: calls write_text()",
    ]
