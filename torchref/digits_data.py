"""The digits Dataset of the deep examples: images in the model's dtype, labels as
int64 class indices (what nn.CrossEntropyLoss takes). Twin: none (jaxport's fit takes
the arrays)."""
import numpy as np
import torch

from torchref.numerics import torch_device, torch_dtype
from torchref.training import ArrayDataset


class DigitsData(ArrayDataset):
    def __init__(self, x, y, dtype="float32", device="cpu"):
        self.x = torch.as_tensor(np.asarray(x), dtype=torch_dtype(dtype), device=torch_device(device))
        self.y = torch.as_tensor(np.asarray(y), dtype=torch.int64, device=torch_device(device))
