"""The layout of the repository: no import cycles, no upward imports, a short top level, the README's Python
example runs, and every subpackage is shipped by ``pyproject.toml``."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("score_mri", "models", "op", "configs")  # the installed packages

# Rank of each part: a module may import its own part or a part of lower rank, nothing else.
RANK = {
    "op": 0, "configs": 0, "models": 0.5,
    "score_mri.errors": 0.8, "score_mri.paths": 1, "score_mri.metrics": 1, "score_mri.perf": 1,
    "score_mri.process_group": 1, "score_mri.sde": 1, "score_mri.utils": 1, "score_mri.config": 1,
    "score_mri.physics": 2,
    "score_mri.samplers": 3,
    "score_mri.io": 4,
    "score_mri.recon": 5,
    "score_mri.api": 6, "score_mri.training": 6,
    "score_mri.cli": 7,
    "score_mri": 8,
}


def module_files() -> dict[str, Path]:
    """Dotted name -> file of every module of the installed packages."""
    out = {}
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (also inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for t in targets:
            while t and t not in modules and "." in t:
                t = t.rpartition(".")[0]
            if name.startswith(t + "."):
                continue  # a module's own package is already being imported (e.g. a lazy ``import models``)
            if t in modules or t.split(".")[0] in TOP_LEVEL:
                found.add(t)
    return found


TOP_LEVEL = {p.stem for p in REPO.glob("*.py")}


def part(name: str) -> str:
    """The entry of :data:`RANK` a module belongs to (longest prefix)."""
    best = max((p for p in RANK if name == p or (p != "score_mri" and name.startswith(p + "."))), key=len,
               default=None)
    assert best is not None, f"{name} belongs to no part: add it to RANK in tests/test_layout.py"
    return best


def graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_no_import_cycles() -> None:
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m in g and m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_upward_imports() -> None:
    bad = []
    for name, targets in graph().items():
        for t in targets:
            if t.split(".")[0] in TOP_LEVEL:
                bad.append(f"{name} imports the top-level module {t}")
                continue
            a, b = part(name), part(t)
            if a != b and RANK[b] >= RANK[a]:
                bad.append(f"{name} ({a}, rank {RANK[a]}) imports {t} ({b}, rank {RANK[b]})")
    assert not bad, "\n".join(bad)


def test_no_private_names_imported_across_modules() -> None:
    modules = module_files()
    bad = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ROOTS:
                bad += [f"{name}: from {node.module} import {a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")
                        and f"{node.module}.{a.name}" not in modules]  # a package's own private module is fine
    assert not bad, "\n".join(bad)


def test_top_level_is_short() -> None:
    files = sorted(p.name for p in REPO.glob("*.py"))
    assert len(files) <= 14, files
    for required in ("sampling.py", "sde_lib.py", "fastmri_utils.py", "utils.py", "main_fastmri.py",
                     "inference_real.py", "inference_single-coil.py", "inference_multi-coil_SSOS.py",
                     "inference_multi-coil_hybrid.py", "inference_multi-coil_SENSE.py"):
        assert required in files, required


def test_every_subpackage_is_shipped() -> None:
    text = (REPO / "pyproject.toml").read_text()
    listed = set(re.findall(r'"([A-Za-z_.]+)"', text.split("packages = [", 1)[1].split("]", 1)[0]))
    packages = {".".join(p.parent.relative_to(REPO).parts) for root in ROOTS for p in (REPO / root).rglob("__init__.py")}
    assert packages <= listed, f"not in pyproject.toml: {sorted(packages - listed)}"


def readme_python_example() -> str:
    """The README's Python example: the first ```python block under 'Python API'."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs() -> None:
    code = readme_python_example()
    assert len([line for line in code.splitlines() if line.strip() and not line.lstrip().startswith("#")]) <= 3
    check = code + "\nimport numpy as np\nassert np.isfinite(result.image).all() and result.network_calls > 0\n"
    proc = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("script", ["inference_real.py", "main_fastmri.py"])
def test_scripts_are_thin(script: str) -> None:
    assert len((REPO / script).read_text().splitlines()) <= 20
