"""Datasets, in-memory batches and batched augmentation."""

from resnets.data.augment import AlternatingFlips, Normalize, random_crop_flip
from resnets.data.base import Augment, DataRequest, DatasetSplits, ImageData
from resnets.data.loader import Batches, epoch_generator
from resnets.data.sources import DATASETS, dataset_loader, load_dataset

__all__ = [
    "DATASETS",
    "AlternatingFlips",
    "Augment",
    "Batches",
    "DataRequest",
    "DatasetSplits",
    "ImageData",
    "Normalize",
    "dataset_loader",
    "epoch_generator",
    "load_dataset",
    "random_crop_flip",
]
