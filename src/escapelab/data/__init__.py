"""Real classification data sets (MNIST-1D, sklearn digits) as tensors with seeded splits."""

from escapelab.data.classification import (
    DATASETS,
    ClassificationData,
    cache_dir,
    clear_cache,
    load_dataset,
)

__all__ = ["DATASETS", "ClassificationData", "cache_dir", "clear_cache", "load_dataset"]
