"""The user's own dataset: a folder of idx files or an .npz, with its class names."""

from __future__ import annotations

from pathlib import Path

from cnnbench.data.catalogue import (
    ARRAYS,
    DATASETS,
    DataError,
    Dataset,
    DatasetInfo,
    Log,
    array_sha256,
    verify,
)
from cnnbench.data.sources import from_user_dir, stderr_log

CLASS_NAME_FILES = ("classes.txt", "class_names.txt")


def read_class_names(path: Path) -> tuple[str, ...]:
    """One class name a line; blank lines at the end are ignored."""
    try:
        names = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the class names ({e}).") from e
    names = [n.strip() for n in names]
    if not names or any(not n for n in names):
        blank = names.index("") + 1 if "" in names else 1
        raise DataError(f"{path}: line {blank} is empty; write one class name a line, "
                        f"class 0 first.")
    if len(names) > 256:
        raise DataError(f"{path}: {len(names)} class names; labels are bytes, at most 256.")
    return tuple(names)


def load_folder(directory: str | Path, class_names: str | Path | None = None,
                log: Log = stderr_log, custom: bool = False) -> Dataset:
    """Any dataset of idx files (or a Keras-style npz) in a folder, e.g. ``--data-dir DIR``.

    Images must be N x H x W uint8 (grayscale), labels one byte each. If the arrays are a
    known dataset (their SHA-256 match its pins) they are that dataset; otherwise a custom one
    named after the folder, with class names from ``class_names``, else ``classes.txt`` in
    the folder, else ``0 .. max label``. Nothing is pinned: the hashes are recorded instead.
    """
    directory = Path(directory)
    where = f"user files in {directory}"
    arrays = from_user_dir(directory)
    verify(arrays, DatasetInfo(name=directory.name, sha256={}, classes=()), where)
    hashes = {k: array_sha256(a) for k, a in arrays.items()}
    for info in DATASETS.values():
        if info.sha256 and all(info.sha256[k] == hashes[k] for k in ARRAYS):
            log(f"data: {where}: ok, this is {info.name} (checksums verified)")
            return Dataset(info, **arrays, source=where)
    sizes = (arrays["x_train"].shape, arrays["x_test"].shape)
    if not custom and sizes == ((60000, 28, 28), (10000, 28, 28)):
        # The size of MNIST and its siblings but none of their checksums: most likely a
        # damaged copy, which must never be used silently.
        raise DataError(f"{where}: 60000 + 10000 images of 28x28, the size of "
                        f"{', '.join(DATASETS)}, but the checksums match none of them; the files "
                        f"may be damaged. Pass --dataset custom to use them as your own data.")
    for split in ("train", "test"):
        x = arrays[f"x_{split}"]
        if x.shape[0] == 0:
            raise DataError(f"{where}: the {split} set is empty.")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise DataError(f"{where}: train images are {arrays['x_train'].shape[1:]} but test "
                        f"images are {arrays['x_test'].shape[1:]}; they must be the same size.")
    n_labels = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    names_file = Path(class_names) if class_names else next(
        (directory / n for n in CLASS_NAME_FILES if (directory / n).is_file()), None)
    if names_file is not None:
        names = read_class_names(names_file)
        if len(names) < n_labels:
            raise DataError(f"{names_file}: {len(names)} class names, but the labels in "
                            f"{directory} go up to {n_labels - 1}; one name a class is needed.")
    else:
        names = tuple(str(i) for i in range(n_labels))
    if len(names) < 2:
        raise DataError(f"{where}: every label is 0; a classifier needs at least 2 classes.")
    info = DatasetInfo(name=directory.resolve().name or "custom", sha256={}, classes=names)
    log(f"data: {where}: ok, a custom dataset of {len(names)} classes "
        f"({len(arrays['x_train'])} train, {len(arrays['x_test'])} test images); not pinned, "
        f"SHA-256 recorded")
    return Dataset(info, **arrays, source=where)
