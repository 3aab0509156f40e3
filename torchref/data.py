"""The tutorial's Dataset and DataLoader, fed the shared numpy arrays and batch order."""
from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset, Sampler

from torchref.state import tensor


class ArrayDataset(Dataset):
    """Wraps the shared numpy arrays; indexable by a list of indices, so a whole batch
    is one tensor gather instead of `batch_size` calls and a collate."""

    def __init__(self, x, y, dtype="float32", device="cpu", label_dtype=None):
        self.x, self.y = tensor(x, dtype, device), tensor(y, label_dtype or dtype, device)

    def __getitem__(self, index):
        return self.x[index], self.y[index]

    def __len__(self):
        return len(self.x)


class SharedOrderSampler(Sampler):
    """Visits the samples in the shared order: `fit` sets `row`, one epoch's row of the
    order, before each pass. DataLoader(shuffle=...) semantics, with jaxport drawing
    the same permutations."""

    row: np.ndarray = np.zeros(0, np.int64)

    def __iter__(self):
        return iter(self.row.tolist())

    def __len__(self):
        return len(self.row)
