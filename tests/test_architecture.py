"""The layers contract: which part of the package may import which (README, Architecture).

From the bottom up: core, checks and errors; data and models; store; train and evaluate;
studies and report; cli. A module may import its own layer and the layers below it, never
one above; train and evaluate never import each other, nor do data and models.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "defdistill"

# top-level part of the package -> (layer rank, group); a part may import a lower rank, or its own group
LAYERS = {
    "core": (0, "core"),
    "checks": (0, "core"),
    "errors": (0, "core"),
    "data": (1, "data"),
    "models": (1, "models"),
    "store": (2, "store"),
    "train": (3, "train"),
    "evaluate": (3, "evaluate"),
    "studies": (4, "studies"),
    "report": (4, "studies"),
    "cli": (5, "cli"),
    "__main__": (5, "cli"),
}


def part_of(module: str) -> str:
    """`defdistill.store.runs` -> `store`; the package itself -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(path: Path, package_dir: Path = PACKAGE) -> list[tuple[str, int]]:
    """Every defdistill module `path` imports (top level, functions and TYPE_CHECKING alike)."""
    here = ["defdistill", *path.relative_to(package_dir).with_suffix("").parts]
    if here[-1] == "__init__":
        here = here[:-1]
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "defdistill" or module.startswith("defdistill."):
                targets = [module] if node.module else [f"{module}.{a.name}" for a in node.names]
                found += [(t, node.lineno) for t in targets]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("defdistill")]
    return found


def layering_violations(package_dir: Path = PACKAGE) -> list[str]:
    problems = []
    for path in sorted(package_dir.rglob("*.py")):
        source = "defdistill." + ".".join(path.relative_to(package_dir).with_suffix("").parts)
        source_part = part_of(source)
        if source_part == "__init__":
            continue  # the package's lazy public API re-exports every layer
        rank, group = LAYERS[source_part]
        for target, line in imported_modules(path, package_dir):
            target_part = part_of(target)
            if target_part == "__init__" or target_part == "__version__":
                continue
            if target_part not in LAYERS:
                problems.append(f"{path.name}:{line} imports {target}, which is in no layer")
                continue
            target_rank, target_group = LAYERS[target_part]
            if target_group != group and target_rank >= rank:
                problems.append(
                    f"{source} (line {line}) imports {target}: {source_part} may not use {target_part}"
                )
    return problems


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    parts -= {"__init__", "__pycache__"}
    assert parts <= set(LAYERS), f"give these a layer in LAYERS: {sorted(parts - set(LAYERS))}"


def test_no_module_imports_a_layer_above_it_or_beside_it() -> None:
    assert layering_violations() == []


def test_the_layer_check_catches_upward_and_sideways_imports(tmp_path: Path) -> None:
    fake = tmp_path / "defdistill"
    for folder, text in {
        "store": "from ..evaluate.attacks import ATTACKS\n",  # upward
        "train": "from ..evaluate import metrics\n",  # sideways
        "evaluate": "from ..store.runs import load_run\nfrom .metrics import wilson\n",  # allowed
    }.items():
        (fake / folder).mkdir(parents=True)
        (fake / folder / "mod.py").write_text(text)
    problems = layering_violations(fake)
    assert len(problems) == 2, problems
    assert any("store may not use evaluate" in p for p in problems)
    assert any("train may not use evaluate" in p for p in problems)


def test_subpackages_say_what_they_own() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 80, f"{init.parent.name}/__init__.py needs a paragraph on what it owns"


def test_importing_the_package_loads_neither_torch_nor_foolbox() -> None:
    import subprocess
    import sys

    code = (
        "import sys, defdistill; print(sorted(m for m in ('torch', 'foolbox', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
