"""The dataset registry: names, folders, loaders, official sources and checksums.

``REELREC_DATA_DIR`` points at a folder of dataset folders (the layout of ``shared/datasets``).
:func:`data_root` resolves it; :func:`load` reads a dataset into canonical tables and, when its
folder is missing, raises :class:`DatasetNotFound` naming the folder expected and the official
source. :func:`fetch` downloads the official files into ``~/.cache/reelrec`` and checks their
sha256; it is only ever called by a user (``reelrec datasets --download NAME``), never by tests.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from reelrec.config import ConfigError
from reelrec.data.tables import RawTables
from reelrec.io import sha256_file

ENV_VAR = "REELREC_DATA_DIR"
CACHE_DIR = Path("~/.cache/reelrec").expanduser()


class DatasetNotFound(FileNotFoundError):
    """A dataset folder is missing; the message says where it was expected and where to get it."""


@dataclass(frozen=True)
class Download:
    """One official file: where to get it and what it must hash to.

    Attributes:
        url: official address (a pinned commit where the source is a repository).
        target: path relative to the dataset folder once downloaded (for a zip: the folder it is
            extracted into).
        sha256: expected hex digest of the downloaded file; ``None`` where the source does not
            publish one and the bytes differ from our reference copy (the digest seen is printed).
        members: for a zip, ``{member path: sha256}`` checked after extraction.
    """

    url: str
    target: str
    sha256: str | None = None
    members: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset.

    Attributes:
        name: the name used in configs and the CLI (DESIGN.md table).
        folder: folder under ``REELREC_DATA_DIR``.
        loader: ``loader(root) -> RawTables`` where ``root`` is the data root.
        protocol: default evaluation protocol name (:data:`reelrec.data.splits.PROTOCOLS`).
        homepage: official page, shown in errors.
        downloads: official files for :func:`fetch`.
        extra_folders: other folders the loader reads when present (titles, user features).
    """

    name: str
    folder: str
    loader: Callable[[Path], RawTables]
    protocol: str
    homepage: str
    downloads: tuple[Download, ...] = ()
    extra_folders: tuple[str, ...] = ()


def _kuairand(root: Path) -> RawTables:
    from reelrec.data.kuairand import load_kuairand

    return load_kuairand(root / "kuairand-27k-likehate-kcore15", root / "kuairand-pure-features")


def _kuairand_pure(root: Path) -> RawTables:
    from reelrec.data.kuairand import load_kuairand_pure

    return load_kuairand_pure(root / "kuairand-pure-standard-late", root / "kuairand-pure-features")


def _amazon(name: str) -> Callable[[Path], RawTables]:
    def load(root: Path) -> RawTables:
        from reelrec.data.amazon import AMAZON, load_amazon

        titles = AMAZON[name][1]
        return load_amazon(
            name,
            root / "amazon-beauty-sports-toys-s3rec",
            root / titles if titles is not None else None,
        )

    return load


def _microlens(root: Path) -> RawTables:
    from reelrec.data.microlens import load_microlens

    return load_microlens(root / "microlens-50k")


def _tiktok(root: Path) -> RawTables:
    from reelrec.data.tiktok import load_tiktok

    return load_tiktok(root / "tiktok-mmssl-va-features")


def _ml1m(root: Path) -> RawTables:
    from reelrec.data.movielens import load_ml1m

    return load_ml1m(root / "movielens-1m-seqrec")


def _ml100k(root: Path) -> RawTables:
    from reelrec.data.movielens import load_ml100k

    return load_ml100k(root / "movielens-100k")


def _segmm(root: Path) -> RawTables:
    from reelrec.data.segmm import load_segmm

    return load_segmm(root / "segmm-sample")


_GH = "https://raw.githubusercontent.com"
_S3REC = f"{_GH}/RUCAIBox/CIKM2020-S3Rec/2a81540ae18615d88ef88227b0c066e5b74781e5/data"
_S3REC_FILES = {
    "Beauty": (
        "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
        "129e40f67486f6877eff0f5318cfa8530ee8ac23d8b0d1de04e1bb7a2ba0b2d4",
    ),
    "Sports_and_Outdoors": (
        "2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2",
        "7fb10733ac4f1811384a52144cdefa7fcc7536fa80a7232c5da9bd789155c34b",
    ),
    "Toys_and_Games": (
        "176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f",
        "d371acd25101eedac04afc727626464b7acec770c4eda708705d51eb76eb1ad0",
    ),
}


def _s3rec_downloads(stem: str) -> tuple[Download, ...]:
    seq, attrs = _S3REC_FILES[stem]
    return (
        Download(f"{_S3REC}/{stem}.txt", f"{stem}.txt", seq),
        Download(f"{_S3REC}/{stem}_item2attributes.json", f"{stem}_item2attributes.json", attrs),
    )


DATASETS: dict[str, DatasetSpec] = {
    "kuairand": DatasetSpec(
        name="kuairand",
        folder="kuairand-27k-likehate-kcore15",
        loader=_kuairand,
        protocol="kuairand-temporal",
        homepage="https://kuairand.com (KuaiRand-27K; like/hate k-core-15 slice from "
        "github.com/alessandrosocc/predict_explicit_negative_feedback_kuairand)",
        downloads=(
            # The original file (41,828 rows, 2022-04-08..21); reelrec's protocol reads dates up
            # to 2022-04-18. The slice in shared/ has a different digest, so none is pinned here.
            Download(
                f"{_GH}/alessandrosocc/predict_explicit_negative_feedback_kuairand/"
                "959232d6dd3c66f45e802436c2914e9584139eac/processed_data/processed_standard_kcore_15.csv",
                "processed_standard_kcore_15.csv",
            ),
        ),
        extra_folders=("kuairand-pure-features",),
    ),
    "kuairand-pure": DatasetSpec(
        name="kuairand-pure",
        folder="kuairand-pure-standard-late",
        loader=_kuairand_pure,
        protocol="kuairand-pure-temporal",
        homepage="https://kuairand.com (KuaiRand-Pure: log_standard_4_22_to_5_08_pure.csv and "
        "video_features_basic_pure.csv / video_features_statistic_pure.csv of the official "
        "KuaiRand-Pure zip; the 2022-04-25..05-05 rows as repackaged by "
        "github.com/wmyh-0416/kuairand-short-video-recommender)",
        # the official zip (https://zenodo.org/records/10439422) holds the whole 04-08..05-08 log
        # under other file names; no single file of it is the folder above, so none is pinned
        extra_folders=("kuairand-pure-features",),
    ),
    "amazon-beauty": DatasetSpec(
        "amazon-beauty",
        "amazon-beauty-sports-toys-s3rec",
        _amazon("amazon-beauty"),
        "leave-one-out",
        "https://github.com/RUCAIBox/CIKM2020-S3Rec (data/Beauty.txt)",
        _s3rec_downloads("Beauty"),
        ("amazon2014-beauty-seqrec",),
    ),
    "amazon-sports": DatasetSpec(
        "amazon-sports",
        "amazon-beauty-sports-toys-s3rec",
        _amazon("amazon-sports"),
        "leave-one-out",
        "https://github.com/RUCAIBox/CIKM2020-S3Rec (data/Sports_and_Outdoors.txt)",
        _s3rec_downloads("Sports_and_Outdoors"),
    ),
    "amazon-toys": DatasetSpec(
        "amazon-toys",
        "amazon-beauty-sports-toys-s3rec",
        _amazon("amazon-toys"),
        "leave-one-out",
        "https://github.com/RUCAIBox/CIKM2020-S3Rec (data/Toys_and_Games.txt)",
        _s3rec_downloads("Toys_and_Games"),
        ("amazon2014-toy-seqrec",),
    ),
    "microlens": DatasetSpec(
        "microlens",
        "microlens-50k",
        _microlens,
        "leave-one-out",
        "https://recsys.westlake.edu.cn/MicroLens-50k-Dataset/ (MicroLens-50k_pairs.tsv and "
        "MicroLens-50k_titles.csv; research use, no redistribution: "
        "github.com/westlake-repl/MicroLens)",
        # the official server publishes no digest and is not reachable from every network; the
        # files are also in github.com/muhhpu/MUSER (data/microlens/), so none is pinned here
    ),
    "tiktok": DatasetSpec(
        "tiktok",
        "tiktok-mmssl-va-features",
        _tiktok,
        "tiktok-given",
        "https://github.com/HKUDS/DiffMM (Datasets/tiktok: trnMat/valMat/tstMat.pkl as "
        "user_id,item_id CSV edge lists train.csv/valid.csv/test.csv, image_feat.npy, "
        "audio_feat.npy; from MMSSL / MMGCN's TikTok data; research use, no redistribution)",
        # the upstream files are pickled scipy matrices: converted, so nothing is pinned here
    ),
    "ml-1m": DatasetSpec(
        "ml-1m",
        "movielens-1m-seqrec",
        _ml1m,
        "leave-one-out",
        "https://grouplens.org/datasets/movielens/1m/",
        (Download("https://files.grouplens.org/datasets/movielens/ml-1m.zip", "."),),
    ),
    "ml-100k": DatasetSpec(
        "ml-100k",
        "movielens-100k",
        _ml100k,
        "leave-one-out",
        "https://grouplens.org/datasets/movielens/100k/",
        (
            Download(
                "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                ".",
                members={
                    "ml-100k/u.data": "ae4e4d0696520e23efe15ef5825ce31ddcd15f3a0c6aa23e9bc2057b32e0c142",
                    "ml-100k/u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
                    "ml-100k/u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
                },
            ),
        ),
    ),
    "segmm": DatasetSpec(
        "segmm",
        "segmm-sample",
        _segmm,
        "leave-one-out",
        "https://github.com/hezy18/SegMMInterest",
        (
            Download(
                f"{_GH}/hezy18/SegMMInterest/26712533c9f49fa4cafdacffcbbc0687cbe479ea/SegMM_inter_sample.csv",
                "SegMM_inter_sample.csv",
                "fa501cddc0c64cc7a0fab12f7f3b0ce3273e88f4b020a98164ed8513edda88b6",
            ),
        ),
    ),
}


def data_root(explicit: str | Path | None = None) -> Path:
    """The data root: ``explicit``, else ``$REELREC_DATA_DIR``, else ``~/.cache/reelrec``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return CACHE_DIR


def get_spec(name: str) -> DatasetSpec:
    """Look up a dataset by name.

    Raises:
        KeyError: unknown name (message lists the known ones).
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def load(name: str, root: str | Path | None = None) -> RawTables:
    """Load dataset ``name`` from the data root into canonical tables.

    Raises:
        KeyError: unknown dataset name.
        DatasetNotFound: its folder is missing (message names the folder and the source).
        AmbiguousDataError: the folder holds several candidate files for one table (message
            names the folder and each file); a subclass of DataFormatError.
        DataFormatError: malformed files (message names file, line, column).
    """
    spec = get_spec(name)
    base = data_root(root)
    folder = base / spec.folder
    if not folder.is_dir():
        raise DatasetNotFound(
            f"dataset {name!r} not found: expected the folder {folder}\n"
            f"  set {ENV_VAR} to the folder that holds {spec.folder}/ "
            f"(in this project: export {ENV_VAR}=../shared/datasets),\n"
            f"  or download it from the official source: {spec.homepage}"
            + (
                f"\n  (`reelrec datasets --download {name}` fetches it into "
                f"{CACHE_DIR}/{spec.folder})"
                if spec.downloads
                else f" (no automatic download: put the files in {spec.folder}/)"
            )
        )
    return spec.loader(base)


def fetch(name: str, cache_dir: Path = CACHE_DIR, log: Callable[[str], None] = print) -> Path:
    """Download dataset ``name`` from its official source into ``cache_dir/<folder>``.

    Each file goes to a temp name, is checked against its pinned sha256, then renamed; a
    mismatch deletes the download and raises. Never called by tests.

    Raises:
        DatasetNotFound: the dataset has no official files to fetch (kuairand-pure).
        ValueError: a digest does not match (the file is removed).
        urllib.error.URLError: the network is unreachable.
    """
    spec = get_spec(name)
    if not spec.downloads:
        raise DatasetNotFound(
            f"dataset {name!r} has no automatic download: get its files from {spec.homepage} "
            f"and put them in $REELREC_DATA_DIR/{spec.folder}/"
        )
    folder = Path(cache_dir) / spec.folder
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        _fetch_files(spec, folder, log)
    except BaseException:
        if created and not any(folder.iterdir()):
            folder.rmdir()  # leave nothing behind from a failed first download
        raise
    return folder


def _fetch_files(spec: DatasetSpec, folder: Path, log: Callable[[str], None]) -> None:
    for dl in spec.downloads:
        dest = folder / dl.target
        tmp = folder / f".{Path(dl.url).name}.part"
        log(f"downloading {dl.url}")
        with urllib.request.urlopen(dl.url) as resp, open(tmp, "wb") as out:  # noqa: S310
            shutil.copyfileobj(resp, out)
        digest = sha256_file(tmp)
        if dl.sha256 is not None and digest != dl.sha256:
            tmp.unlink()
            raise ValueError(f"{dl.url}: sha256 {digest} != expected {dl.sha256}; file removed")
        if dl.sha256 is None:
            log(f"  sha256 {digest} (no published digest to check against)")
        if dl.url.endswith(".zip"):
            with zipfile.ZipFile(tmp) as zf:
                zf.extractall(dest)
            tmp.unlink()
            for member, want in dl.members.items():
                got = sha256_file(dest / member)
                if got != want:
                    raise ValueError(f"{dest / member}: sha256 {got} != expected {want}")
            _flatten_single_folder(dest)
        else:
            os.replace(tmp, dest)


def _flatten_single_folder(dest: Path) -> None:
    """GroupLens zips hold one top folder (ml-1m/, ml-100k/): move its files up."""
    subdirs = [p for p in dest.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subdirs) == 1:
        for f in subdirs[0].iterdir():
            os.replace(f, dest / f.name)
        subdirs[0].rmdir()
