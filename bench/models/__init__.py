"""The evaluation models, defined here with random weights (no downloads).

Each builder takes a `size` ("small" for CI, "full" for the benchmarks) and
returns (model, example inputs). torchvision and transformers are used where
they are installed; otherwise an equivalent definition from this folder, or
(bert_base, gpt2, deberta_base, align, densenet121) an ImportError when the
call is made.
"""

from .bert import bert_like
from .densenet import densenet121
from .hf import align, bert_base, deberta_base, gpt2
from .monodepth import monodepth
from .quantized import quantized_resnet18
from .resnet import resnet50, resnet101
from .trident import tridentnet

__all__ = ["bert_like", "bert_base", "gpt2", "resnet50", "resnet101", "densenet121", "deberta_base", "monodepth",
           "quantized_resnet18", "tridentnet", "align"]
