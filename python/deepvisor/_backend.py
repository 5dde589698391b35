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
    sizes = _sizes_from_tensors(gm)
    if sizes:
        return _sizes_read_from_tensors(gm, sizes, options)
    return CompiledFunction(gm, **options)


def _sizes_from_tensors(gm):
    """Dynamic shapes: Dynamo passes each symbolic size as an int argument
    beside the tensors. {position of an int argument: (position of a tensor
    argument, dim)} for each that is a dimension of a tensor argument."""
    import torch
    values = _placeholder_values(gm)
    dims = {}
    for i, v in enumerate(values):
        if isinstance(v, torch.Tensor):
            for d, size in enumerate(v.shape):
                if isinstance(size, torch.SymInt) and size.node.expr.is_Symbol:
                    dims.setdefault(size.node.expr, (i, d))
    return {i: dims[v.node.expr] for i, v in enumerate(values)
            if isinstance(v, torch.SymInt) and v.node.expr in dims}


def _sizes_read_from_tensors(gm, sizes, options):
    """A compiled function of the graph's other arguments that reads those
    sizes from the tensors (`x.size(d)`), so that they are symbolic sizes of
    a deepvisor capture rather than ints guarded by value (a capture per
    size); the int arguments Dynamo passes (equal to those sizes, by Dynamo's
    guards) are dropped."""
    from ._compiled import CompiledFunction
    kept = [i for i in range(len(_placeholder_values(gm))) if i not in sizes]
    where = {i: k for k, i in enumerate(kept)}
    read = [(i, where[j], d) for i, (j, d) in sorted(sizes.items())]

    def graph_reading_sizes(*args):
        full = [None] * (len(args) + len(read))
        for k, i in enumerate(kept):
            full[i] = args[k]
        for i, k, d in read:
            full[i] = args[k].size(d)
        return gm(*full)
    graph_reading_sizes.__name__ = getattr(gm, "__name__", type(gm).__name__)

    class DynamoGraph(CompiledFunction):
        graph_module = gm

        def __call__(self, *args):
            return super().__call__(*[args[i] for i in kept])
    compiled = DynamoGraph(graph_reading_sizes, **options)
    if options.get("dynamic") is None:  # Dynamo's symbolic dims are symbolic from the first capture
        compiled._dims.mark_symbolic(_symbolic_dims(gm, kept))
    return compiled


def _symbolic_dims(gm, kept):
    """{k: dims} for the k-th tensor among the kept arguments: its dims that
    Dynamo made symbolic."""
    import torch
    values = _placeholder_values(gm)
    tensors = [values[i] for i in kept if isinstance(values[i], torch.Tensor)]
    return {k: {d for d, size in enumerate(v.shape) if isinstance(size, torch.SymInt)} for k, v in enumerate(tensors)}


def register_if_dynamo_is_loaded():
    """Registers the backend now if torch._dynamo is imported (importing it
    here would cost a second at `import deepvisor`)."""
    if "torch._dynamo" not in sys.modules:
        return
    from torch._dynamo.backends.registry import _COMPILER_FNS, register_backend
    if "deepvisor" not in _COMPILER_FNS:
        register_backend(compiler_fn=deepvisor_backend, name="deepvisor")


def _placeholder_values(gm):
    """Dynamo's example value of each graph argument (fake tensors, SymInts)."""
    return [n.meta.get("example_value", n.meta.get("val")) for n in gm.graph.nodes if n.op == "placeholder"]
