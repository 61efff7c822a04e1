"""course_utils 是一个小小的辅助包：读得完的行数，没有互相导入的圈。"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "course_utils"
MAX_LINES = 5000


def _imports() -> dict[str, set[str]]:
    """每个模块导入了包里的哪些模块（包括函数里才导入的）。"""
    found = {}
    for path in PACKAGE.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names |= {node.module.split(".")[0]} if node.module else {alias.name for alias in node.names}
        found[path.stem] = names
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """图里的一个环（模块名的列表，首尾相同）；没有环时返回 None。"""
    state: dict[str, str] = {}

    def visit(node, path):
        state[node] = "active"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "active":
                return path + [nxt]
            if nxt in graph and nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle[cycle.index(cycle[-1]):]
    return None


def test_the_package_stays_small():
    lines = sum(len(path.read_text(encoding="utf-8").splitlines()) for path in PACKAGE.glob("*.py"))
    assert lines <= MAX_LINES, f"course_utils 有 {lines} 行，超过了 {MAX_LINES} 行"


def test_no_module_imports_itself_in_a_circle():
    cycle = find_cycle(_imports())
    assert cycle is None, f"导入成了一个圈：{' -> '.join(cycle)}"


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
