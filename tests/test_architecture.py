"""The package layout rules of docs/architecture.md that a linter does not check: sizes and private names.

(The import contracts themselves are `lint-imports` in CI, configured in pyproject.toml.)
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "famegui"
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60
EXEMPT_MARK = "# long:"  # a comment right above a def that says why it is longer


def _sources():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def test_no_file_over_the_limit():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in _sources()}
    long = {name: n for name, n in sizes.items() if n > MAX_FILE_LINES}
    assert not long, f"files over {MAX_FILE_LINES} lines: {long}"


def _long_functions(path: Path) -> list[str]:
    text = path.read_text()
    lines = text.splitlines()
    out = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            length = node.end_lineno - node.lineno + 1
            above = lines[first - 2].strip() if first >= 2 else ""
            if length > MAX_FUNCTION_LINES and not above.startswith(EXEMPT_MARK):
                out.append(f"{path.name}:{node.lineno} {node.name} ({length} lines)")
    return out


def test_no_function_over_the_limit_unless_it_says_why():
    long = [f for p in _sources() for f in _long_functions(p)]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines without a '{EXEMPT_MARK}' comment: {long}"


def _package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def test_no_private_name_is_imported_across_packages():
    bad = []
    for path in _sources():
        here = _module_name(path)
        pkg = here if path.name == "__init__.py" else here.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if not source.startswith("famegui"):
                continue
            for alias in node.names:
                private = alias.name.startswith("_") or any(p.startswith("_") and p != "__init__"
                                                            for p in source.split("."))
                if private and _package_of(source) != _package_of(here):
                    bad.append(f"{here} imports {alias.name} from {source}")
    assert not bad, bad


def test_the_checks_can_fail(tmp_path):
    """The size check does see a long function (guards against a check that never fires)."""
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    f = tmp_path / "probe.py"
    f.write_text(f"def too_long():\n{body}\n")
    assert _long_functions(f), "a 62-line function was not reported"
    f.write_text(f"{EXEMPT_MARK} generated\ndef too_long():\n{body}\n")
    assert not _long_functions(f)


def _tool(name: str) -> str:
    import shutil
    import sys

    here = Path(sys.executable).parent / name  # the venv's own copy first
    found = str(here) if here.exists() else shutil.which(name)
    assert found, f"{name} is not installed (it is in the test extra: pip install -e '.[test]')"
    return found


def test_import_contracts_hold():
    """lint-imports: layers, no Qt in the science, models free of gui/cli, no cycles (pyproject.toml)."""
    import subprocess

    root = PACKAGE.parent
    r = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "0 broken" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


def test_ruff_is_clean():
    import subprocess

    root = PACKAGE.parent
    r = subprocess.run([_tool("ruff"), "check", "famegui", "tests", "scripts"], cwd=root, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:]


# The one explain path (famegui.explanation): nothing else assembles "threshold -> run_method -> check_map ->
# record". Each other call of these is listed with why it is not a user's map.
ONE_OWNER = "explanation.py"
OTHER_CALLS = {
    "run_method": {
        "evaluation/sanity.py": "maps of the randomised copies of the network (the sanity check's own)",
        "bench.py": "times the bare method (no map is kept)",
    },
    "check_map": {},
    "default_cosine_threshold": {
        "evaluation/verification.py": "calibrates a threshold from a pair list (the EER one wins)",
        "methods/face_common.py": "a method's fallback when it is run without a threshold (sanity, bench)",
    },
}


def _calls(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            out.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "")
    return out


def test_one_module_owns_explaining_a_map():
    found = {name: sorted(str(p.relative_to(PACKAGE)) for p in _sources() if name in _calls(p))
             for name in OTHER_CALLS}
    for name, allowed in OTHER_CALLS.items():
        assert ONE_OWNER in found[name], f"{name} is no longer called by {ONE_OWNER}"
        extra = [p for p in found[name] if p != ONE_OWNER and p not in allowed]
        assert not extra, f"{name} is called outside the one explain path ({ONE_OWNER}): {extra}"
