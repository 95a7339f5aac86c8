"""The package's layers, read from its source: no import cycle, and nothing below the command
line imports argparse or the command line itself (issue 27).

Every import counts, wherever it is written: at the top, inside a function (the lazy imports
that keep start-up short), under TYPE_CHECKING. A lazy import still makes a cycle, only a
hidden one: cli -> run -> cli held together for two releases that way.
"""

from __future__ import annotations

import ast
from pathlib import Path

import jailshim

PACKAGE = Path(jailshim.__file__).resolve().parent
# the command line: the only modules that may import argparse (and that nothing imports);
# manpage generates jailshim.8 and the completion from cli's table at build time (issue 31)
COMMAND_LINE = {"jailshim.cli", "jailshim.__main__", "jailshim.manpage"}


def modules(root: Path) -> dict[str, Path]:
    """Module name -> file, for every .py file of the package at ``root``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(name: str, path: Path) -> set[str]:
    """What module ``name`` (at ``path``) imports, anywhere in its source: the modules named,
    and for ``from X import Y`` also X.Y (Y may be a submodule)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


def graph(root: Path) -> tuple[dict[str, set[str]], list[str]]:
    """(module -> the package's modules it imports, the upward imports found)."""
    found = modules(root)
    edges: dict[str, set[str]] = {}
    upward: list[str] = []
    for name, path in found.items():
        names = imported(name, path)
        if name not in COMMAND_LINE:
            upward += [f"{name} imports {n}" for n in sorted(names) if n == "argparse"]
            upward += [f"{name} imports {n}" for n in sorted(names & COMMAND_LINE)]
        edges[name] = {n for n in names if n in found and n != name}
    return edges, upward


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


# The layers, top first (docs/ARCHITECTURE.md draws them): a module may import its own layer
# and those below it, never one above. A module not named here is in "engine".
LAYERS: tuple[tuple[str, set[str]], ...] = (
    ("command line", {"cli", "__main__", "manpage"}),
    (
        "commands",
        {
            *("run", "ready", "check", "teardown", "doctor", "explain"),
            *("doctor_all", "fleet", "fleet_formats"),
        },
    ),
    ("spec building", {"specs"}),
    ("adapters", {"daemons", "daemon_registry"}),
    ("hand-over", {"handover", "supervisor", "init_options"}),
    ("engine", set()),  # plan, apply, prepare, state, spec, files, devices, jail/, verify/
    ("base", {"", "errors", "numbers", "options", "logs", "log", "stopsignals"}),
)


def layer_of(module: str) -> int:
    """The index in LAYERS of ``module`` (0 is the top); a package's modules are its layer's."""
    name = module.removeprefix("jailshim").removeprefix(".")
    top = name.split(".", 1)[0]
    for index, (_, names) in enumerate(LAYERS):
        if name in names or top in names:
            return index
    return [title for title, _ in LAYERS].index("engine")


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Each import of a module in a layer above the importer's."""
    return [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {other} ({LAYERS[layer_of(other)][0]})"
        for module, others in sorted(edges.items())
        for other in sorted(others)
        if layer_of(other) < layer_of(module)
    ]


def test_no_module_imports_a_layer_above_its_own() -> None:
    edges, _ = graph(PACKAGE)
    assert upward(edges) == []


def test_no_import_cycle() -> None:
    edges, _ = graph(PACKAGE)
    assert cycles(edges) == []


def test_nothing_below_the_command_line_imports_it_or_argparse() -> None:
    _, up = graph(PACKAGE)
    assert up == []


def test_the_walker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    """The walker itself: a cycle closed by an import inside a function, and a relative
    upward import of the command line, are both found (else the two tests above prove
    nothing)."""
    package = tmp_path / "jailshim"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text("import argparse\nfrom jailshim import low\n")
    (package / "low.py").write_text("def f():\n    from jailshim import mid\n")
    (package / "mid.py").write_text("import jailshim.low\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "deep.py").write_text(
        "def g():\n    from .. import cli\n    import argparse\n"
    )
    edges, upward = graph(package)
    assert cycles(edges) == [["jailshim.low", "jailshim.mid"]]
    assert upward == [
        "jailshim.sub.deep imports argparse",
        "jailshim.sub.deep imports jailshim.cli",
    ]
