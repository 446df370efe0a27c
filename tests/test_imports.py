"""The layering holds with imports at module top (issue 22 item 5): an AST scan of every gradleak module finds no
import cycle, every function-local import of a gradleak module says why, and a fresh interpreter imports every
module in dependency order."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "gradleak"


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, packages by their ``__init__.py``."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str:
    """The gradleak module an imported name lives in (``gradleak.models.MODELS`` -> ``gradleak.models``)."""
    while name and name not in MODULES:
        name = name.rsplit(".", 1)[0] if "." in name else ""
    return name


def _targets(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    """The gradleak modules an import statement loads; ``from pkg import sub`` resolves to the submodule."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
            parts = package.split(".")
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join(parts + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    return [t for t in (_resolve(n) for n in names if n == "gradleak" or n.startswith("gradleak.")) if t]


def _is_type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _top_level(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports that run when the module loads: at top, or under a top-level ``if``/``try`` (not TYPE_CHECKING)."""
    for node in tree.body:
        if _is_type_checking(node):
            continue
        inner = [node]
        if isinstance(node, ast.If):
            inner = node.body + node.orelse
        elif isinstance(node, ast.Try):
            inner = node.body + [s for h in node.handlers for s in h.body] + node.orelse + node.finalbody
        yield from (n for n in inner if isinstance(n, (ast.Import, ast.ImportFrom)))


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[module] = {t for node in _top_level(tree) for t in _targets(node, module) if t != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _dependency_order(graph: dict[str, set[str]]) -> list[str]:
    """Every module after the modules it imports (depth-first post-order)."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(module: str) -> None:
        if module in seen:
            return
        seen.add(module)
        for dep in sorted(graph[module]):
            visit(dep)
        order.append(module)

    for module in sorted(graph):
        visit(module)
    return order


def _says_why(lines: list[str], lineno: int) -> bool:
    """A comment on the import's line, or on the line above the block of imports it belongs to."""
    if "#" in lines[lineno - 1]:
        return True
    i = lineno - 2
    while i >= 0 and (lines[i].strip().startswith(("from ", "import ")) or lines[i].strip().endswith(",")
                      or lines[i].strip() == ")"):
        i -= 1
    return i >= 0 and lines[i].strip().startswith("#")


def local_imports() -> list[tuple[str, int, bool]]:
    """``(file, line, says why)`` of every import of a gradleak module inside a function; it says why with a
    comment on its line or above its block of imports (what makes a local import a decision rather than a
    hidden cycle)."""
    found = set()
    for module, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        tree = ast.parse("\n".join(lines))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, (ast.Import, ast.ImportFrom)) or not _targets(node, module):
                    continue
                found.add((str(path.relative_to(SRC.parent)), node.lineno, _says_why(lines, node.lineno)))
    return sorted(found)


def _local_imports_without_reason() -> list[str]:
    return [f"{file}:{line}" for file, line, why in local_imports() if not why]


def test_the_scan_sees_every_module_and_resolves_submodule_imports() -> None:
    graph = _graph()
    assert len(graph) > 80 and "gradleak.cli" in graph and "gradleak.models.registry" in graph
    # ``from gradleak.models import lenet`` is an edge to the submodule, ``from gradleak.models import MODELS``
    # to the package: the scan would miss the registry cycle otherwise
    assert "gradleak.models.lenet" in graph["gradleak.models"]
    assert "gradleak.models.registry" in graph["gradleak.models.lenet"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    body = ["def f():", "    # why: x imports this module", "    from gradleak.a import b", "    from gradleak.c import (",
            "        d,", "    )", "    from gradleak.e import f", "    x = 1", "    from gradleak.g import h"]
    assert [_says_why(body, n) for n in (3, 4, 7, 9)] == [True, True, True, False]


def test_no_import_cycle_among_top_level_imports() -> None:
    assert _cycles(_graph()) == []


def test_every_local_import_of_a_gradleak_module_says_why() -> None:
    offenders = _local_imports_without_reason()
    assert not offenders, (f"{len(offenders)} function-local gradleak imports without a comment saying why "
                           f"(lift them to module top, or say why not): {', '.join(offenders)}")


def test_the_command_line_imports_no_command_until_one_runs() -> None:
    code = ("import sys, gradleak.cli; print(sorted(m for m in sys.modules if m.startswith('gradleak.cli.') "
            "or m in ('torch', 'transformers', 'ray', 'flwr')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['gradleak.cli.parser', 'gradleak.cli.status']"


def test_a_fresh_interpreter_imports_every_module_in_dependency_order() -> None:
    order = [m for m in _dependency_order(_graph()) if not m.endswith("__main__")]
    code = ("import importlib, sys\n"
            "for name in sys.argv[1:]:\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except Exception as exc:\n"
            "        sys.exit(f'{name}: {type(exc).__name__}: {exc}')\n")
    done = subprocess.run([sys.executable, "-c", code, *order], capture_output=True, text=True, timeout=240,
                          cwd=SRC.parent)
    assert done.returncode == 0, done.stderr[-2000:]
