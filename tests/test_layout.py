"""The code's shape: parts that stand alone import nothing of each other."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def test_the_simulator_imports_nothing_of_the_runner_but_the_shared_module() -> None:
    files = sorted((ROOT / "runner" / "simulator").glob("*.py"))
    assert len(files) > 10
    for path in files:
        for module in _imports(path):
            if module == "runner" or module.startswith("runner."):
                assert module.startswith(("runner.simulator", "runner.shared")), f"{path.name} imports {module}"
