"""torch.compile(model, backend="deepvisor"): Dynamo's graphs through deepvisor.

Dynamo captures the program (its own guards, graph breaks) and hands each
FX GraphModule to this backend, which compiles it like any function: the
first call captures it, later calls replay the plan.

The backend is found by name through the `torch_dynamo_backends` entry point
(written by `make`, tools/link-package.py, and by `pip install .`), and
`import deepvisor` also registers it when Dynamo is already loaded.
"""

import sys


def deepvisor_backend(gm, example_inputs, **options):
    from ._compiled import CompiledFunction
    # A lazy GraphModule writes its forward on the first call, which would
    # change the state the first capture read: write it now.
    if hasattr(gm, "real_recompile"):
        gm.real_recompile()
    return CompiledFunction(gm, **options)


def register_if_dynamo_is_loaded():
    """Registers the backend now if torch._dynamo is imported (importing it
    here would cost a second at `import deepvisor`)."""
    if "torch._dynamo" not in sys.modules:
        return
    from torch._dynamo.backends.registry import _COMPILER_FNS, register_backend
    if "deepvisor" not in _COMPILER_FNS:
        register_backend(compiler_fn=deepvisor_backend, name="deepvisor")
