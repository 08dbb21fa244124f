"""The README's "Python API" block runs verbatim on real data (issue 20)."""

from __future__ import annotations

import json
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_block() -> str:
    """The first ```python block under the README heading "## Python API"."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README has no python block under '## Python API'"
    return blocks[0]


def test_readme_python_api_runs_verbatim(data_root, tmp_path, monkeypatch, capsys):
    code = python_api_block()
    assert 10 <= len([ln for ln in code.splitlines() if ln.strip()]) <= 15
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REELREC_DATA_DIR", str(data_root))
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out.strip().splitlines()
    videos = json.loads(next(ln for ln in out if re.fullmatch(r"\[[\d, ]+\]", ln)))
    assert len(videos) == 10 and len(set(videos)) == 10 and all(isinstance(v, int) for v in videos)
    run = tmp_path / "runs" / "api"
    import pandas as pd

    inter = pd.read_parquet(run / "data" / "interactions.parquet")
    liked_in_train = set(inter.loc[(inter.like == 1) & (inter.split == 0), "item_id"].tolist())
    assert set(videos) <= liked_in_train  # raw ids of the vocabulary, not internal indices
    metrics = json.loads((run / "metrics.json").read_text())
    assert float(out[-1]) == metrics["models"]["sasrec"]["ndcg@10"]
    assert set(metrics["models"]) == {"popularity", "sasrec"}
    assert (run / "report.md").exists()
