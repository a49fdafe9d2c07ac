"""The layers of DESIGN.md, checked on the source: what each room may import, statically and at run time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = {"ray", "optuna", "mlflow"}
COMMANDS = {"search.run", "search.retrain_best", "search.evaluate", "search.inpaint", "search.overfit",
            "search.lr_find", "search.bench.__main__"}
# Room (folder) -> module prefixes no file in it may import.
RULES = {
    "models": FRAMEWORKS | {"search", "studies"},
    "losses": FRAMEWORKS | {"search", "studies"},
    "data": FRAMEWORKS | {"search", "studies"},
    "search/core": FRAMEWORKS | {"studies", "search.tune", "search.tracking", "search.bench", "search.cli"} | COMMANDS,
    "search/tracking": {"ray", "optuna", "studies", "search.tune", "search.bench", "search.cli"} | COMMANDS,
    "search/tune": {"search.bench", "search.cli"} | COMMANDS,
    "search/bench": COMMANDS - {"search.bench.__main__"},
}


def imported_names(path: Path) -> list[str]:
    """Every absolute module an import statement in `path` names, `from a import b` counted as `a` and `a.b`
    (b may be a module). Imports inside functions count too."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return names


def _breaks(name: str, forbidden: set[str]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


@pytest.mark.parametrize("room", sorted(RULES))
def test_rooms_import_only_what_their_layer_allows(room):
    files = [p for p in (ROOT / room).rglob("*.py") if "__main__" not in p.name or room != "search/bench"]
    assert files, f"no Python files in {room}"
    for path in files:
        for name in imported_names(path):
            assert not _breaks(name, RULES[room]), f"{path.relative_to(ROOT)} imports {name}"


def test_the_rule_checker_catches_a_wrong_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from search import evaluate\n    import ray.tune\n")
    names = imported_names(bad)
    assert _breaks("search.evaluate", COMMANDS) and "search.evaluate" in names and "ray.tune" in names
    assert _breaks("ray.tune", RULES["search/core"]) and not _breaks("raytracer", RULES["search/core"])


def test_search_top_level_holds_only_command_entries():
    """The flat room is gone: search/ itself holds the thin command modules and the shared CLI pieces only."""
    top = {p.stem for p in (ROOT / "search").glob("*.py")} - {"__init__"}
    assert top == {c.split(".")[1] for c in COMMANDS if c.count(".") == 1} | {"cli"}
    rooms = {p.name for p in (ROOT / "search").iterdir() if (p / "__init__.py").exists()}
    assert rooms == {"core", "tune", "tracking", "bench"}


@pytest.mark.parametrize("modules, forbidden", [
    (["models", "losses", "data"], FRAMEWORKS | {"search", "studies"}),
    (["search/core"], FRAMEWORKS),
    (["search/tracking"], {"ray", "optuna"}),
])
def test_rooms_load_no_framework_at_run_time(modules, forbidden):
    """Dynamic: importing every module of a room pulls in none of the frameworks it must not touch."""
    names = [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
             for m in modules for p in (ROOT / m).rglob("*.py")]
    code = (f"import sys\nfor m in {names!r}: __import__(m)\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(forbidden)!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", f"importing {modules} loads {out.stdout.strip()}"
