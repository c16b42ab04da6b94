"""The library never imports the CLI: everything a command does can be called from Python without typer."""

from __future__ import annotations

import ast
from pathlib import Path

import tunesmith

PACKAGE = Path(tunesmith.__file__).parent


def cli_imports(path: Path) -> list[str]:
    """`line: statement` for each import of tunesmith.cli in the file (top level or inside a function)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        if any(name == "tunesmith.cli" or name.startswith("tunesmith.cli.") for name in names):
            found.append((node.lineno, ast.unparse(node)))
    return [f"{line}: {code}" for line, code in sorted(found)]


def test_library_does_not_import_the_cli():
    offenders = {
        str(path.relative_to(PACKAGE)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        # __main__.py is the command itself (`python -m tunesmith`, what `accelerate launch` runs), as the console script is
        if path.relative_to(PACKAGE).parts[0] not in ("cli", "__main__.py") and (lines := cli_imports(path))
    }
    assert not offenders, f"library modules import tunesmith.cli (move the code into the library): {offenders}"


def test_the_check_sees_an_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from tunesmith.cli.main import console\nfrom tunesmith import cli\nimport tunesmith.clip\n")
    assert cli_imports(module) == ["2: from tunesmith.cli.main import console", "3: from tunesmith import cli"]
