"""The evaluation models, defined here with random weights (no downloads).

Each builder takes a `size` ("small" for CI, "full" for the benchmarks) and
returns (model, example inputs). torchvision and transformers are used where
they are installed; otherwise an equivalent definition from this folder.
"""

from .bert import bert_like
from .resnet import resnet50

__all__ = ["bert_like", "resnet50"]
