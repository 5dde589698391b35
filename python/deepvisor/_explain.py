"""deepvisor.explain: a readable report of what a compiled function holds."""


def explain(compiled):
    """Each plan (a graph, or an eager version with its reason), its guards as
    readable expressions, its fallback ops; then the eager reasons so far."""
    from ._compiled import CompiledFunction
    if not isinstance(compiled, CompiledFunction):
        raise TypeError("deepvisor.explain expects the result of deepvisor.compile")
    s = compiled.stats()
    lines = [f"deepvisor: {compiled._name()}: {s['graphs']} graph(s), {s['versions']} version(s), "
             f"{s['captures']} capture(s), {s['cache_hits']} cache hit(s), {s['guard_misses']} guard miss(es), "
             f"{s['eager_calls']} eager call(s)"]
    for i, plan in enumerate(compiled.plans()):
        if plan.eager_reason is not None:
            lines.append(f"plan {i}: runs eagerly: {plan.eager_reason}")
        else:
            from ._compiled import is_extern
            kernels = sum(e.stats()["kernels"] for e in plan.executors())
            ops = [(op, n) for e in plan.executors() for op, n in e.stats()["fallback_ops"].items()]
            externs = sum(n for op, n in ops if is_extern(op))
            fallbacks = sum(n for op, n in ops if not is_extern(op))
            lines.append(f"plan {i}: {plan.versions()} version(s), {kernels} kernel(s), {externs} library call(s), "
                         f"{fallbacks} fallback op(s)")
            for op, reason in plan.fallbacks:
                lines.append(f"  fallback: {op} ({reason})")
            graphs = sorted({e.stats()["cuda_graph"] for e in plan.executors()} - {""})
            if graphs:
                lines.append("  CUDA graph: " + "; ".join(graphs))
            if plan.side_effects:
                lines.append(f"  side effects replayed: {len(plan.side_effects)}")
            if plan.symbolic is not None:
                lines.extend("  " + line for line in plan.symbolic.describe())
            if plan.tree is not None:
                lines.append("  decisions:")
                _tree_lines(plan.tree, lines, "    ")
        lines.append(f"  guards ({len(plan.descriptions)}):")
        lines.extend(f"    {d}" for d in plan.descriptions)
    if s["eager_reasons"]:
        lines.append("eager reasons:")
        lines.extend(f"  {n}x {r}" for r, n in s["eager_reasons"].items())
    return "\n".join(lines)


def _tree_lines(node, lines, indent):
    decision = node.segment.decision
    if decision is None:
        return
    for key, child in node.children.items():
        outcome = _value_of(key)
        lines.append(f"{indent}{decision.describe()} == {outcome!r}")
        _tree_lines(child, lines, indent + "  ")


def _value_of(key):
    """The outcome value an outcome key was made from (_segments.outcome_key)."""
    kind, value = key
    if kind is float:
        import struct
        return struct.unpack("<d", value)[0]
    if kind in (list, tuple):
        return kind(_value_of(k) for k in value)
    return value
