"""What may import what (docs/architecture.md): ``rlcore`` is the leaf everything stands on."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RLCORE = sorted((REPO / "rlcore").rglob("*.py"))
FORBIDDEN = ("algorithms", "rewards", "actors", "launch", "ray", "vllm")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_importing_every_rlcore_module_pulls_in_no_plugin_role_launcher_ray_or_vllm():
    modules = [module_name(p) for p in RLCORE]
    script = (f"import importlib, json, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
              f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(FORBIDDEN)!r}))))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
    assert len(modules) >= 10  # the walk really found rlcore's modules


def imported_roots(source: str) -> set[str]:
    """Top-level packages named by any import statement, at any depth (inside functions too)."""
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", RLCORE, ids=lambda p: str(p.relative_to(REPO)))
def test_no_rlcore_source_imports_them(path):
    assert imported_roots(path.read_text()) & set(FORBIDDEN) == set()


def test_the_static_check_sees_imports_inside_functions():
    source = "def f():\n    from rewards.l1 import x\n    import ray.util\n"
    assert imported_roots(source) == {"rewards", "ray"}
