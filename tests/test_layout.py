"""The package's layering: no import cycle among ``grace`` modules (imports inside functions
count too), and the library below the book's machinery."""

import ast
import re
from pathlib import Path

import grace

PACKAGE = Path(grace.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Module -> the ``grace`` modules it imports anywhere in its body."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("grace"):
                found |= {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
                found |= {node.module} & modules.keys()
        graph[name] = found - {name}
    return graph


def test_no_import_cycle():
    graph = imports()
    assert "grace.train" in graph["grace.book.notebooks"]  # the walk sees imports at all
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            assert state.get(target) != "open", "import cycle: " + " -> ".join(
                path[path.index(target) :] + [target]
            )
            if target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_only_the_cli_imports_the_book_machinery():
    users = {
        module
        for module, targets in imports().items()
        if not module.startswith("grace.book") and any(t.startswith("grace.book") for t in targets)
    }
    assert users == {"grace.cli"}


def test_one_module_draws_tokens():
    """Encoding and training sample through one seeded sampler (grace.rationale): no other
    module calls ``multinomial``, ``generate`` or draws random numbers of its own."""
    draws = re.compile(r"multinomial\(|\.generate\(|torch\.rand(n|int|_like)?\(|exponential_\(")
    drawing = {
        module_name(path)
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and draws.search(ast.unparse(node.func) + "(")
    }
    assert drawing == {"grace.rationale"}
