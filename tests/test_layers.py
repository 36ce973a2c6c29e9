"""The package's layering rules, read from the source: an arrow that runs upward fails here."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (lazy imports inside functions too), made absolute."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("folder, package, forbidden", [
    ("wm_gym/encoders", "wm_gym.encoders", ("wm_gym.train",)),    # encoders only encode; training lives in train/
    ("wm_gym", "wm_gym", ("wm_gym.examples", "examples")),        # the core never reaches the examples
    ("envs", "wm_gym.envs", ("torch",)),                           # the sims are numpy only
])
def test_no_import_runs_upward(folder, package, forbidden):
    offenders = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        sub = ".".join([package, *path.relative_to(ROOT / folder).with_suffix("").parts[:-1]])
        for name in imported_modules(path, sub):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from ..train.loop import Trainer\n    import torch.nn\n")
    names = imported_modules(source, "wm_gym.encoders")
    assert "wm_gym.train.loop" in names and "torch.nn" in names
