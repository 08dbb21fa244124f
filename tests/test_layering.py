"""The import direction of STYLE.md holds in every module, lazy imports included:
data <- content <- tokenizer <- models <- (training, eval) <- tasks <- run <- serving <- cli.

A module may import its own layer and the layers to its left; nothing imports ``cli`` (the
``reelrec`` console script enters it directly), and ``serving`` and the benchmarks use the
library API."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "reelrec"

#: layer of each top-level part of the package (config and io are shared utilities)
LAYER = {
    "__init__": 0,
    "config": 0,
    "io": 0,
    "progress": 0,
    "data": 1,
    "content": 2,
    "tokenizer": 3,
    "models": 4,
    "training": 5,
    "eval": 5,
    "tasks": 6,
    "run": 7,
    "serving": 8,
    "cli": 9,
}
#: modules whose layer differs from their package's: pure functions that import nothing of
#: reelrec (checked below), usable from every layer
MODULE_LAYER = {"eval.metrics": 0}


def _part(module: str) -> str:
    """``reelrec.data.ctr`` -> ``data``."""
    return module.split(".")[1] if module.count(".") else "__init__"


def layer(module: str) -> int:
    """Layer of a ``reelrec...`` module name."""
    rest = module.split(".", 1)[1] if "." in module else "__init__"
    for name, value in MODULE_LAYER.items():
        if rest == name or rest.startswith(name + "."):
            return value
    return LAYER[_part(module)]


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``reelrec`` import in a file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [(node.lineno, n) for n in names if n == "reelrec" or n.startswith("reelrec.")]
    return found


def test_every_import_points_down_the_layers():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        part = rel.parts[0].removesuffix(".py")
        assert part in LAYER, f"{rel}: new top-level part {part!r}: give it a layer here"
        mine = layer("reelrec." + ".".join(rel.with_suffix("").parts))
        for line, module in imports_of(path):
            if layer(module) > mine:
                bad.append(f"{rel}:{line} (layer {mine}) imports {module} (layer {layer(module)})")
    assert not bad, "imports against the layering of STYLE.md:\n" + "\n".join(bad)


def test_shared_pure_modules_import_nothing_of_reelrec():
    for name in MODULE_LAYER:
        path = SRC.joinpath(*name.split(".")).with_suffix(".py")
        assert imports_of(path) == [], f"{path} must stay free of reelrec imports (layer 0)"


def test_serving_and_benchmarks_use_the_library_not_the_cli():
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for folder in (SRC / "serving", ROOT / "bench")
        for path in sorted(folder.rglob("*.py"))
        for line, module in imports_of(path)
        if module.startswith("reelrec.cli")
    ]
    bad += [
        f"{p.relative_to(ROOT)} names reelrec.cli"
        for folder in (SRC / "serving", ROOT / "bench")
        for p in sorted(folder.rglob("*.py"))
        if "reelrec.cli" in p.read_text(encoding="utf-8")
    ]
    assert not bad, "\n".join(bad)


def test_no_model_family_is_tested_in_the_cli():
    """The CLI asks a model's task; it never branches on the family (issue 20)."""
    flags = (
        "ranking_model",
        "segment_model",
        "alignment_model",
        ".generative",
        "RANKING",
        "GENERATIVE",
    )
    bad = [
        f"{p.relative_to(ROOT)}: {flag}"
        for p in sorted((SRC / "cli").rglob("*.py"))
        for flag in flags
        if flag in p.read_text(encoding="utf-8")
    ]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_wrong_import(tmp_path):
    """The test can fail: a lazy import of the CLI inside a function is found."""
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from reelrec.cli.train import main\n")
    assert imports_of(f) == [(2, "reelrec.cli.train")]
    assert layer("reelrec.cli.train") > layer("reelrec.serving.service")
