"""The package's structure: experiments share kits and never import one another."""

from __future__ import annotations

import ast
from pathlib import Path

import escapelab.experiments as experiments_pkg
from escapelab.experiments import EXPERIMENTS

EXPERIMENTS_DIR = Path(experiments_pkg.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    """Every module an escapelab source file imports (absolute names)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # a relative import: resolve it against the package
                package = path.parent.relative_to(EXPERIMENTS_DIR.parents[1]).parts
                base = ".".join(package[: len(package) - node.level + 1])
                names.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                names.add(node.module)
    return names


def _experiment_modules() -> set[str]:
    """The modules that define a registered experiment."""
    return {type(e).__module__ for e in EXPERIMENTS.values()}


def test_every_registered_experiment_lives_in_its_own_module() -> None:
    modules = _experiment_modules()
    assert len(modules) == len(EXPERIMENTS)
    assert all(m.count(".") == 2 and m.startswith("escapelab.experiments.") for m in modules)


def test_no_module_in_experiments_imports_an_experiment_module() -> None:
    experiment_modules = _experiment_modules()
    offenders = []
    for path in sorted(EXPERIMENTS_DIR.rglob("*.py")):
        if path.name == "__init__.py" and path.parent == EXPERIMENTS_DIR:
            continue  # the registry imports every experiment, by design
        rel = path.relative_to(EXPERIMENTS_DIR.parents[1]).with_suffix("")
        own = ".".join(rel.parts)
        for name in _imported_modules(path):
            if name in experiment_modules and name != own:
                offenders.append(f"{own} imports {name}")
    assert offenders == []


def test_the_checker_sees_an_import_between_experiments(tmp_path: Path) -> None:
    """The scan above must be able to fail: a file importing width_sweep is caught."""
    bad = EXPERIMENTS_DIR / "kits" / "teacher_student.py"
    fake = tmp_path / "fake.py"
    fake.write_text(
        bad.read_text() + "\nfrom escapelab.experiments.width_sweep import WidthSweep\n"
    )
    assert "escapelab.experiments.width_sweep" in _imported_modules(fake)
    assert "escapelab.experiments.width_sweep" in _experiment_modules()


def test_theory_and_library_layers_never_import_experiments() -> None:
    root = EXPERIMENTS_DIR.parent
    for sub in ("nets", "optim", "problems", "landscape", "tickets", "theory", "data"):
        for path in (root / sub).rglob("*.py"):
            imported = _imported_modules(path)
            assert not any(n.startswith("escapelab.experiments") for n in imported), path
