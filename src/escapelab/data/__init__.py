"""Supervised data sets as tensors with seeded splits: MNIST-1D, digits, teacher-student data."""

from escapelab.data.datasets import (
    DATASETS,
    SupervisedData,
    cache_dir,
    clear_cache,
    load_dataset,
)
from escapelab.data.teacher_student import teacher_student_data

__all__ = [
    "DATASETS",
    "SupervisedData",
    "cache_dir",
    "clear_cache",
    "load_dataset",
    "teacher_student_data",
]
