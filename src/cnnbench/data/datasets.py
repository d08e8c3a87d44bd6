"""The data stage's one import point: the catalogue of datasets (catalogue.py), the file
readers (readers.py), the source chain that loads a dataset (sources.py) and the user's own
folder (folder.py), named here so that callers need not know which holds what.
"""

from cnnbench.data.catalogue import (
    ARRAYS,
    DATASETS,
    FASHION_MNIST,
    IDX_FILES,
    KMNIST,
    MNIST,
    DataError,
    Dataset,
    DatasetInfo,
    UnknownDatasetError,
    array_sha256,
    squeeze_unit_axes,
    verify,
)
from cnnbench.data.folder import CLASS_NAME_FILES, load_folder, read_class_names
from cnnbench.data.readers import (
    MAX_ARRAY_BYTES,
    decode_registry_pickle,
    read_idx,
    read_idx_dir,
    read_npz,
    read_registry_wheel,
)
from cnnbench.data.sources import default_cache_dir, load_dataset

__all__ = ["ARRAYS", "CLASS_NAME_FILES", "DATASETS", "FASHION_MNIST", "IDX_FILES", "KMNIST",
           "MAX_ARRAY_BYTES", "MNIST", "DataError", "Dataset", "DatasetInfo",
           "UnknownDatasetError", "array_sha256", "decode_registry_pickle",
           "default_cache_dir", "load_dataset", "load_folder", "read_class_names", "read_idx",
           "read_idx_dir", "read_npz", "read_registry_wheel", "squeeze_unit_axes", "verify"]
