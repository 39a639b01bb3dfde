"""The layers of stabfw (ARCHITECTURE §3): every import, function-local ones included.

Each module of ``stabfw/`` imports only from its own layer or the layers below it::

    errors, _util  <  core  <  run  <  analysis  <  reporting  <  experiments  <  cli

(the package ``stabfw/__init__`` is the public facade above them all). Nothing imports in a
cycle; no module imports another module's private ``_name``; the framework never imports
a domain; domains import only ``core``, ``errors``, ``run.policies`` and ``_util`` and never
each other; heavy libraries stay inside the domains. Modelled on sktime's
``test_cross_module_imports.py``, but deferred imports count like any other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["errors", "_util", "core", "run", "analysis", "reporting", "experiments", "cli"]
RANK = {"errors": 0, "_util": 0, "core": 1, "run": 2, "analysis": 3, "reporting": 4,
        "experiments": 5, "cli": 6}
DOMAIN_MAY_IMPORT = ("stabfw.core", "stabfw.errors", "stabfw.run.policies", "stabfw._util")
HEAVY = ("torch", "diffusers", "gymnasium", "sktime", "sklearn", "statsmodels")
LAZY = ("torch", "ray")  # the framework may import these inside the function that needs them


def _modules() -> dict[str, Path]:
    """Every module of stabfw/ and domains/ (as stabfw.domains) by its dotted name."""
    out = {}
    for folder, prefix in (("stabfw", "stabfw"), ("domains", "stabfw.domains")):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([prefix, *parts])] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, int, list[str]]]:
    """``(imported module, line, names)`` of every import statement, nested ones included."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for a in node.names:
                sub = f"{target}.{a.name}"
                # "from pkg import submodule" imports the submodule
                found.append((sub, node.lineno, []) if sub in MODULES
                             else (target, node.lineno, [a.name]))
    return found


def _internal_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for target, _, _ in _imports(m):
            if target in MODULES and target != m:
                edges[m].add(target)
    return edges


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if module == "stabfw":
        return "facade"
    if parts[1] == "domains":
        return "domains"
    return parts[1] if parts[1] in RANK else None


def test_every_module_has_a_layer():
    unplaced = [m for m in MODULES if _layer(m) is None]
    assert not unplaced, f"modules outside the layers of ARCHITECTURE §3: {unplaced}"


def test_no_import_cycles_function_local_imports_included():
    edges = _internal_edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in edges:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_each_layer_imports_only_from_the_layers_below():
    bad = []
    for m in MODULES:
        layer = _layer(m)
        if layer in ("facade", "domains"):
            continue
        for target, line, _ in _imports(m):
            if not target.startswith("stabfw"):
                continue
            t_layer = _layer(target) if target in MODULES else None
            if t_layer == "domains":
                bad.append(f"{m}:{line} imports a domain ({target})")
            elif t_layer == "facade":
                bad.append(f"{m}:{line} imports the stabfw facade; import the module itself")
            elif t_layer in RANK and RANK[t_layer] > RANK[layer]:
                bad.append(f"{m}:{line} ({layer}) imports {target} ({t_layer}), a higher layer")
    assert not bad, "\n".join(bad)


def test_domains_import_only_core_errors_policies_and_util_and_never_each_other():
    bad = []
    for m in MODULES:
        if _layer(m) != "domains":
            continue
        own = ".".join(m.split(".")[:3])  # stabfw.domains.<name>
        for target, line, _ in _imports(m):
            if not target.startswith("stabfw"):
                continue
            if target.startswith("stabfw.domains"):
                other = ".".join(target.split(".")[:3])
                if other != own and target != "stabfw.domains":
                    bad.append(f"{m}:{line} imports another domain ({target})")
            elif not target.startswith(DOMAIN_MAY_IMPORT):
                bad.append(f"{m}:{line} imports {target}; domains may import only "
                           f"{', '.join(DOMAIN_MAY_IMPORT)}")
    assert not bad, "\n".join(bad)


def test_no_module_imports_a_private_name_of_another():
    bad = []
    for m in MODULES:
        tree = ast.parse(MODULES[m].read_text(encoding="utf-8"))
        imported_modules: dict[str, str] = {}
        for target, line, names in _imports(m):
            for n in names:
                if n.startswith("_") and not n.startswith("__") and target != m:
                    bad.append(f"{m}:{line} imports {target}.{n}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(m, node)
                for a in node.names:
                    if f"{target}.{a.name}" in MODULES:
                        imported_modules[a.asname or a.name] = f"{target}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in MODULES and a.asname:
                        imported_modules[a.asname] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in imported_modules and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                bad.append(f"{m}:{node.lineno} reaches for "
                           f"{imported_modules[node.value.id]}.{node.attr}")
    assert not bad, "\n".join(bad)


def test_heavy_libraries_stay_in_the_domains():
    bad = []
    for m in MODULES:
        if _layer(m) == "domains":
            continue
        tree = ast.parse(MODULES[m].read_text(encoding="utf-8"))
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) \
                else [_resolve(m, node)]
            for name in names:
                root = name.split(".")[0]
                if root in HEAVY and root not in LAZY:
                    bad.append(f"{m}:{node.lineno} imports {name} (only domains may)")
                elif root in LAZY and id(node) in top_level:
                    bad.append(f"{m}:{node.lineno} imports {root} at module level")
    assert not bad, "\n".join(bad)


def test_pyproject_lists_every_package_and_no_top_level_domains():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = {m for m in MODULES if _is_package(m)}
    assert listed == found, f"pyproject packages differ: missing {found - listed}, " \
                            f"extra {listed - found}"
    assert not any(p == "domains" or p.startswith("domains.") for p in listed)
    assert cfg["package-dir"] == {"stabfw.domains": "domains"}


def test_domains_import_only_as_stabfw_domains(tmp_path):
    code = ("import importlib.util, stabfw.domains.gaussian as g; "
            "print(importlib.util.find_spec('domains') is None, g.__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["True", "stabfw.domains.gaussian"]


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_exist(layer):
    assert any(_layer(m) == layer for m in MODULES)
