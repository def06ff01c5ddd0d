"""The shape of sftlib: one task seam, no import cycle, no task branches in the stages."""

import ast
import re
from pathlib import Path

from sftlib.config import TASK_OPTIONS, TASKS
from sftlib.tasks import TASK_MODULES, get_task

PACKAGE = Path(__file__).resolve().parents[1] / "sftlib"
STAGES_WITHOUT_TASK_BRANCHES = ("train.py", "pipeline.py", "__main__.py", "data.py",
                                "instruction_data.py", "tokens.py", "live.py", "report.py",
                                "sweep.py", "search.py", "compare.py", "significance.py")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """sftlib module -> the sftlib modules it imports, at module level or inside functions
    (a lazy import still couples the two modules)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_sftlib_has_no_import_cycle():
    graph = import_graph()
    assert "sftlib.tasks.classification" in graph and graph["sftlib.train"]
    assert find_cycle(graph) is None, find_cycle(graph)


def test_data_modules_share_sources_not_each_other():
    graph = import_graph()
    assert "sftlib.instruction_data" not in graph["sftlib.data"]
    assert "sftlib.data" not in graph["sftlib.instruction_data"]
    assert "sftlib.sources" in graph["sftlib.data"] & graph["sftlib.instruction_data"]


def test_stages_do_not_branch_on_the_task():
    branch = re.compile(r"task\s*(==|!=|in)\s*[\"'(]|[\"']instruction[\"']\s*==")
    for name in STAGES_WITHOUT_TASK_BRANCHES:
        source = (PACKAGE / name).read_text()
        assert not branch.search(source), f"{name}: {branch.search(source).group(0)}"


def test_every_task_is_registered_once():
    assert set(TASKS) == set(TASK_OPTIONS) == set(TASK_MODULES)
    for name in TASKS:
        task = get_task(name)
        assert task.name == name and task.notebooks
