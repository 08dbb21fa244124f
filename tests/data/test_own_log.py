"""Bring your own log: ``reelrec prepare --interactions`` on the 20-row example of
``tests/fixtures/own-log`` (docs/own-data.md) and on broken variants of it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from reelrec.cli.main import main
from reelrec.config import ConfigError
from reelrec.data.own_log import load_own_log, read_column_map
from reelrec.data.readers import DataFormatError
from reelrec.run import Run

EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "own-log"


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A writable copy of the example folder."""
    out = tmp_path / "own-log"
    shutil.copytree(EXAMPLE, out)
    return out


def prepare_args(folder: Path, out: Path, *extra: str) -> list[str]:
    return [
        "prepare",
        "--interactions",
        str(folder / "interactions.csv"),
        "--items",
        str(folder / "videos.csv"),
        "--users",
        str(folder / "users.csv"),
        "--columns",
        str(folder / "columns.yaml"),
        "--out",
        str(out),
        *extra,
    ]


def test_the_documented_example_prepares_trains_and_evaluates(example, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(prepare_args(example, run_dir)) == 0
    assert "20 rows, 4 users, 8 items" in capsys.readouterr().out
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["dataset"] == "own-log" and meta["protocol"] == "leave-one-out"
    inter = pd.read_parquet(run_dir / "data" / "interactions.parquet")
    raw = pd.read_csv(example / "interactions.csv")
    # renamed columns land in canonical ones; seconds become milliseconds
    assert list(inter["user_id"]) == list(raw["uid"])  # the file is already sorted by user/time
    assert list(inter["timestamp_ms"]) == list(raw["ts"] * 1000)
    assert list(inter["like"]) == list(raw["liked"])
    assert list(inter["play_time_ms"]) == list(raw["watch_ms"].astype(float))
    assert (inter.groupby("user_id")["split"].apply(list) == [[0, 0, 0, 1, 2]] * 4).all()
    items = pd.read_parquet(run_dir / "data" / "items.parquet")
    assert items.set_index("item_id").loc[103, "title"] == "Cat meets cucumber"
    assert items["duration_ms"].notna().all()
    users = pd.read_parquet(run_dir / "data" / "users.parquet")
    assert users.set_index("user_id").loc[2, "city"] == "Porto"
    run = Run(run_dir)
    run.train("popularity", log=lambda _: None)  # trains on dataset "own-log" (run.json)
    assert set(run.evaluate(log=lambda _: None)["models"]) == {"popularity"}


def test_the_same_log_as_parquet_with_its_own_names(example, tmp_path):
    df = pd.read_csv(example / "interactions.csv")
    df.to_parquet(tmp_path / "log.parquet")
    raw = load_own_log(tmp_path / "log.parquet", example / "columns.yaml")
    assert len(raw.interactions) == 20 and raw.interactions["timestamp_ms"].notna().all()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # a column the map names is missing from the file
        (
            lambda t: t.replace("uid,video,ts", "user,video,ts", 1),
            r"interactions.csv: no column 'uid' \(named by interactions.user_id in .*columns.yaml\)",
        ),
        # text in a numeric column: file, line and column are named
        (
            lambda t: t.replace("2,104,", "2,abc,", 1),
            r"interactions.csv, line 9, column 'video': expected an integer .*'abc'",
        ),
        # a label that is not 0/1
        (
            lambda t: t.replace(",0\n", ",2\n", 1),
            r"interactions.csv, line \d+, column 'liked': value outside \[0, 1\]",
        ),
        # an empty file
        (lambda t: "", r"interactions.csv: file is empty"),
        # a header and nothing else
        (lambda t: t.splitlines()[0] + "\n", r"interactions.csv: no data rows"),
    ],
)
def test_broken_logs_get_one_line_errors(example, tmp_path, capsys, edit, message):
    path = example / "interactions.csv"
    path.write_text(edit(path.read_text()))
    run_dir = tmp_path / "run"
    assert main(prepare_args(example, run_dir)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("reelrec prepare: error: ")
    assert re.search(message, err), err
    assert not (run_dir / "data").exists()  # nothing half-written


def test_column_map_errors_name_the_key(tmp_path):
    with pytest.raises(DataFormatError, match=r"interactions.watch: unknown canonical column"):
        read_column_map(
            write(tmp_path / "a.yaml", "interactions: {user_id: u, item_id: i, watch: w}")
        )
    with pytest.raises(DataFormatError, match=r"required column\(s\) \['item_id'\] not mapped"):
        read_column_map(write(tmp_path / "b.yaml", "interactions: {user_id: u}"))
    with pytest.raises(DataFormatError, match="unknown section"):
        read_column_map(
            write(tmp_path / "c.yaml", "interactions: {user_id: u, item_id: i}\nvideos: {}")
        )
    with pytest.raises(DataFormatError, match="not both"):
        read_column_map(
            write(
                tmp_path / "d.yaml",
                "interactions: {user_id: u, item_id: i, timestamp_s: t, timestamp_ms: t2}",
            )
        )
    with pytest.raises(DataFormatError, match=r"interactions.user_id: expected the name"):
        read_column_map(write(tmp_path / "e.yaml", "interactions: {user_id: 3, item_id: i}"))


def test_repeated_item_rows_and_missing_sections_are_refused(example, tmp_path):
    videos = example / "videos.csv"
    videos.write_text(videos.read_text() + '103,"again",1000\n')
    with pytest.raises(DataFormatError, match=r"videos.csv, line 10, column 'video': id 103"):
        load_own_log(example / "interactions.csv", example / "columns.yaml", videos)
    cmap = write(tmp_path / "m.yaml", "interactions: {user_id: uid, item_id: video}")
    with pytest.raises(DataFormatError, match="no 'items:' section"):
        load_own_log(example / "interactions.csv", cmap, videos)


def test_without_a_timestamp_file_order_is_the_clock(example, tmp_path):
    cmap = write(tmp_path / "m.yaml", "interactions: {user_id: uid, item_id: video}")
    raw = load_own_log(example / "interactions.csv", cmap)
    assert raw.interactions["timestamp_ms"].isna().all()
    assert raw.notes["timestamps"] == "none (file order)"


def test_a_built_in_dataset_name_is_refused(example, tmp_path):
    with pytest.raises(ConfigError, match="not a built-in dataset"):
        Run.prepare_own_log(
            tmp_path / "run",
            example / "interactions.csv",
            example / "columns.yaml",
            name="kuairand",
        )


def test_dataset_and_interactions_together_is_a_usage_error(example, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main([*prepare_args(example, tmp_path / "run"), "--dataset", "kuairand"])
    assert exc.value.code == 2


def test_too_small_a_catalogue_for_alignment_is_a_one_line_error(example, tmp_path, capsys):
    """8 videos cannot carry 64-wide item2vec vectors: QARM says so, naming the setting."""
    run_dir = tmp_path / "run"
    assert main(prepare_args(example, run_dir)) == 0
    assert main(["encode", "--run", str(run_dir), "--encoder", "hashing"]) == 0
    capsys.readouterr()
    assert main(["align", "--run", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--align.behaviour_dim" in err, err


def test_serve_says_an_own_log_has_no_ranker_to_serve_with(example, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(prepare_args(example, run_dir)) == 0
    capsys.readouterr()
    assert main(["serve", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ranker trained on KuaiRand impressions" in err, err


@pytest.mark.parametrize(
    ("cmap", "message"),
    [
        ("interactions: {user_id: u, item_id: u}", r"\['u'\] mapped to several canonical"),
        ("interactions:\n  user_id: u\n  user_id: t\n  item_id: i", r"key 'user_id' appears twice"),
        ("interactions: [", r"not a valid YAML column map"),
        ("interactions: {user_id: u, item_id: 0}", r"quote names"),
    ],
)
def test_map_mistakes_that_would_read_wrong_data_are_refused(tmp_path, cmap, message):
    with pytest.raises(DataFormatError, match=message) as exc:
        read_column_map(write(tmp_path / "m.yaml", cmap))
    assert "\n" not in str(exc.value)


def test_files_that_once_crashed_or_misread_are_clear_errors(example, tmp_path):
    cmap = write(tmp_path / "m.yaml", "interactions: {user_id: u, item_id: i, like: l}")
    twice = write(tmp_path / "twice.csv", "u,i,l,l\n1,2,0,1\n")
    with pytest.raises(DataFormatError, match=r"\['l'\] appear more than once"):
        load_own_log(twice, cmap)
    negative = write(tmp_path / "neg.csv", "u,i,l\n1,-2,0\n")
    with pytest.raises(DataFormatError, match=r"neg.csv, line 2, column 'i': value outside"):
        load_own_log(negative, cmap)
    with pytest.raises(DataFormatError, match="is a folder"):
        load_own_log(tmp_path, cmap)
    fake_gz = write(tmp_path / "log.csv.gz", "u,i,l\n1,2,0\n")
    with pytest.raises(DataFormatError, match=r"log.csv.gz: not a readable gzip file"):
        load_own_log(fake_gz, cmap)
    # Parquet with nullable columns holding nulls (pandas Int64 / string)
    df = pd.DataFrame(
        {
            "u": pd.array([1, 1, 1], dtype="Int64"),
            "i": pd.array([5, 6, 7], dtype="Int64"),
            "l": pd.array([0, None, 1], dtype="Int64"),
            "note": pd.array(["a", None, "c"], dtype="string"),
        }
    )
    df.to_parquet(tmp_path / "log.parquet")
    with pytest.raises(DataFormatError, match=r"log.parquet, row 2, column 'l'"):
        load_own_log(tmp_path / "log.parquet", cmap)  # a missing label is an error, not a crash
    users = write(tmp_path / "users.csv", "uid,user_id,age\n1,5,30\n")
    umap = write(
        tmp_path / "um.yaml", "interactions: {user_id: u, item_id: i}\nusers: {user_id: uid}"
    )
    log = write(tmp_path / "ok.csv", "u,i\n1,5\n1,6\n1,7\n")
    with pytest.raises(DataFormatError, match="column 'user_id' is not the one mapped"):
        load_own_log(log, umap, users=users)


def test_re_preparing_other_files_over_trained_models_is_refused(example, tmp_path):
    run_dir = tmp_path / "run"
    assert main(prepare_args(example, run_dir)) == 0
    Run(run_dir).train("popularity", log=lambda _: None)
    log = example / "interactions.csv"
    log.write_text(log.read_text().replace(",101,", ",109,"))
    with pytest.raises(ConfigError, match="models trained on other files"):
        Run.prepare_own_log(run_dir, log, example / "columns.yaml", log=lambda _: None)
    assert main(prepare_args(example, tmp_path / "fresh")) == 0  # elsewhere it is fine
