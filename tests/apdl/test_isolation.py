"""apdl is a separate application: it talks to opauth over HTTPS only and imports none of its packages."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

APDL = Path(__file__).resolve().parents[2] / "apdl"
OPAUTH_PACKAGES = {"ca", "certs", "kernel", "operators", "bio", "db", "config", "app", "bootstrap", "oidc",
                   "i18n", "webinput", "migrations", "tests"}


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names.add(str(node.args[0].value).split(".")[0])
    return names


def test_apdl_imports_nothing_from_opauth() -> None:
    files = sorted(APDL.rglob("*.py"))
    assert files, "apdl has no modules"
    offenders = {str(f.relative_to(APDL.parent)): sorted(_imported_top_levels(f) & OPAUTH_PACKAGES) for f in files}
    assert {f: bad for f, bad in offenders.items() if bad} == {}


def test_the_isolation_check_sees_every_import_form(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import ca.keys\nfrom operators import audit\n"
                      "import importlib\nimportlib.import_module('bio.x')\n")
    assert _imported_top_levels(sample) >= {"ca", "operators", "bio"}


def test_the_running_module_loads_nothing_from_opauth(tmp_path: Path) -> None:
    """Importing every apdl module and building the app pulls in no opauth package (checked in a fresh interpreter)."""
    modules = sorted(".".join(f.relative_to(APDL.parent).with_suffix("").parts).removesuffix(".__init__")
                     for f in APDL.rglob("*.py") if "versions" not in f.parts and f.name != "env.py")
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "from apdl.app import create_app\n"
        f"create_app({{'INSTANCE_DIR': {str(tmp_path)!r}}})\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(OPAUTH_PACKAGES)!r})\n"
        "print(','.join(bad))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=APDL.parent, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


AGENT_ALLOWED = {"__future__", "argparse", "contextlib", "http", "json", "ssl", "sys", "time", "typing", "urllib",
                 "smartcard"}


def test_the_card_agent_imports_only_the_standard_library_and_pyscard() -> None:
    """The terminal's agent carries no server code (and so no key handling): stdlib + pyscard only."""
    files = sorted((APDL / "agent").rglob("*.py"))
    assert files
    imported = set().union(*(_imported_top_levels(f) for f in files))
    assert imported <= AGENT_ALLOWED, imported - AGENT_ALLOWED
    assert "apdl" not in imported
