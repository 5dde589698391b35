"""Decisions: tensor data that decides Python control flow.

When the capture run reads tensor data into Python (`bool(t)`, `t.item()`,
`int(t)`, `float(t)`, `t.tolist()`, `torch.equal`), or runs an op whose
result sizes depend on the data (`nonzero`, `x[mask]`, `unique`: the sizes
are the value read), the recorded op graph is cut there: segment 0 runs the
ops before the first decision, then the host reads the decision's value and
picks the version captured for that outcome;
the next segment continues from the values the earlier ones produced. A path
through the tree is one capture; a new outcome captures again and the new
path's later segments are grafted under the decision it took.

Input mutations are copied back only by the last segment of a path, so a
replay that stops at a new outcome has changed nothing the program can see
(where its segments drew random numbers, the generators' state is put back:
_compiled.py).

An op recorded before a decision that the decision's values do not depend on
runs after it, in the next segment (the graph is functional: ops run in any
order that respects their data; random draws keep their order: where a
decision depends on one, every draw recorded before it stays ahead of it).
So a decision on an argument alone (BERT's `mask.all()` on the attention
mask, before the embeddings) cuts off a segment of the few ops it reads, and
the work recorded before it joins the rest of the plan: no activations
handed from one segment (and one CUDA graph) to the next.
"""

import itertools
import re
import struct

import torch

from . import _C

_REF = re.compile(r"%(\d+)")
_LAYOUT = re.compile(r"sizes=\S* strides=\S*")
_OUTPUT_LINE = re.compile(r"^output( %\d+)*$", re.MULTILINE)


class Decision:
    """One read of tensor data in the capture run."""

    def __init__(self, position, op, values, outcome, site):
        self.position = position  # how many recorded ops came before it
        self.op = op              # "aten::_local_scalar_dense", "aten::equal", "tolist"
        self.values = values      # value ids of the tensors it reads
        self.outcome = outcome    # the Python value the capture run got
        self.site = site          # "file:line" of the user code that read it

    def evaluate(self, tensors):
        if self.op == "sizes":
            return tuple(tuple(t.shape) for t in tensors)
        if self.op == "aten::equal":
            return torch.equal(*tensors)
        if self.op == "tolist":
            return tensors[0].tolist()
        return tensors[0].item()

    def describe(self):
        what = {"aten::equal": "torch.equal", "tolist": ".tolist()", "sizes": "the sizes of a result that depends on "
                "the data"}.get(self.op, ".item()/bool()/int()/float()")
        return f"{what} at {self.site}"


def outcome_key(value):
    """A hashable key that tells outcomes apart exactly: 1, 1.0 and True
    differ; floats compare bit for bit."""
    if isinstance(value, float):
        return (float, struct.pack("<d", value))
    if isinstance(value, (list, tuple)):
        return (type(value), tuple(outcome_key(v) for v in value))
    return (type(value), value)


class Segment:
    """The ops between two decisions, as a graph of their own."""

    def __init__(self, text, inputs, outputs, decision, key=None):
        self.text = text          # graph text (values renumbered densely)
        # What another capture's segment must match to share this one (a
        # graft, _compiled.py): the text less its outputs (compared apart)
        # and less the sizes of values sized by the data (those of its
        # decision, when that reads sizes).
        self.key = _OUTPUT_LINE.sub("", text if key is None else key)
        self.inputs = inputs      # value ids (of the whole capture) fed in, in order
        self.outputs = outputs    # value ids it hands on, in order
        self.decision = decision  # the Decision that ends it, or None for the last
        self.draws = False        # it runs an op that draws random numbers


def split(value_lines, input_values, node_lines, decisions, output_values, mutations, tail_lines=(),
          random_nodes=frozenset()):
    """Segments of one capture: the ops cut at each decision. The last
    segment returns output_values, copies the mutations back and carries
    tail_lines (restride and output_view lines). random_nodes: the positions
    of the ops that draw random numbers."""
    parsed = [_parse(line) for line in node_lines]
    live = set(output_values) | {v for pair in mutations for v in pair} | \
        {int(v) for line in tail_lines for v in _REF.findall(line)}
    node_lines, parsed, decisions, random_nodes = _without_dead_views(node_lines, parsed, decisions, random_nodes, live)
    order, decisions = _ops_after_decisions_that_need_them_not(parsed, decisions, random_nodes)
    node_lines, parsed = [node_lines[k] for k in order], [parsed[k] for k in order]
    random_nodes = {i for i, k in enumerate(order) if k in random_nodes}
    bounds = [d.position for d in decisions] + [len(node_lines)]
    n = len(bounds)
    needs = [set() for _ in range(n)]  # values each segment (with its decision) reads
    for k, (uses, _) in enumerate(parsed):
        needs[_segment_of(k, bounds)].update(uses)
    for i, d in enumerate(decisions):
        needs[i].update(d.values)
    needs[-1].update(output_values)
    for inp, val in mutations:
        needs[-1].update((inp, val))
    segments = []
    for i in range(n):
        first = bounds[i - 1] if i else 0
        lines = node_lines[first:bounds[i]]
        defined = {v for (_, outs) in parsed[first:bounds[i]] for v in outs}
        inputs = sorted(v for v in needs[i] if v not in defined)
        later = set().union(*needs[i + 1:]) if i + 1 < n else set()
        if i + 1 == n:
            outputs = list(output_values)
        else:  # what later segments read, and what this decision reads
            outputs = sorted(v for v in defined if v in later or v in decisions[i].values)
        last = i + 1 == n
        if last:  # a restride line reads an input: the last segment takes it too
            inputs = sorted(set(inputs) | {int(v) for line in tail_lines for v in _REF.findall(line)})
        if n == 1:
            # No decision: the plan runs from the C++ cache, which passes every
            # graph input in the guards' order.
            inputs = list(input_values)
        sized = [] if last else _sized_by_data(decisions[i])
        tail = tail_lines if last else [f"sized_by_data %{v}" for v in sized]
        text = _text(value_lines, inputs, lines, outputs, mutations if last else [], tail)
        key = _text(_any_sizes(value_lines, sized), inputs, lines, outputs, [], tail) if sized else None
        segment = Segment(text, inputs, outputs, decisions[i] if i < len(decisions) else None, key)
        segment.draws = any(k in random_nodes for k in range(first, bounds[i]))
        segments.append(segment)
    return segments


def _without_dead_views(node_lines, parsed, decisions, random_nodes, live):
    """The ops less the views whose results nothing reads (F.max_pool1d
    squeezes the indices of max_pool2d_with_indices and drops them): moved
    past a decision, such a view made the op's indices an output of its
    segment, which keeps the op on ATen. Returns (node_lines, parsed,
    decisions, random_nodes) renumbered. (`live`: the values the graph hands
    on: outputs, mutations, restrides.)"""
    live = set(live).union(*(d.values for d in decisions))
    keep = [True] * len(parsed)
    for k in range(len(parsed) - 1, -1, -1):
        uses, defines = parsed[k]
        if defines and live.isdisjoint(defines) and _C.is_view_op(_op_of(node_lines[k])):
            keep[k] = False
        else:
            live.update(uses)
    if all(keep):
        return node_lines, parsed, decisions, random_nodes
    index = list(itertools.accumulate(keep, initial=0))  # k -> its position among the kept
    decisions = [Decision(index[d.position], d.op, d.values, d.outcome, d.site) for d in decisions]
    random_nodes = {index[k] for k in random_nodes if keep[k]}
    return ([line for line, kept in zip(node_lines, keep) if kept], [p for p, kept in zip(parsed, keep) if kept],
            decisions, random_nodes)


def _op_of(line):
    """The op of a node line (`node aten::squeeze.dim %6 i:-2 -> %8`)."""
    parts = line.split(" ", 2)
    return parts[1] if len(parts) > 1 else ""


def _ops_after_decisions_that_need_them_not(parsed, decisions, random_nodes=frozenset()):
    """The order of the ops (by their (uses, defines) in `parsed`) in which
    before each decision come only the ops its values depend on (see the
    module's docstring), and the decisions at their new positions. Every
    other op keeps its order: it moves to just after the decision, ahead of
    the ops recorded after it. Where the decision depends on a random draw,
    every draw pending stays ahead of it too: the draws keep eager's order."""
    order, moved, start, moved_decisions = [], [], 0, []
    counted = _reads_counted_values(parsed, decisions)
    for d in decisions:
        pending = moved + list(range(start, d.position))
        cone = _cone(parsed, pending, d.values, counted)
        if cone & random_nodes:
            cone = _cone(parsed, pending, d.values, counted | random_nodes)
        order += [k for k in pending if k in cone]
        moved = [k for k in pending if k not in cone]
        moved_decisions.append(Decision(len(order), d.op, d.values, d.outcome, d.site))
        start = d.position
    order += moved + list(range(start, len(parsed)))
    return order, moved_decisions


def _cone(parsed, pending, values, kept):
    """The ops of `pending` that `values` depend on, with those in `kept` and
    what they depend on."""
    needed, cone = set(values), set()
    for k in reversed(pending):
        uses, defines = parsed[k]
        if needed.intersection(defines) or k in kept:
            cone.add(k)
            needed.update(uses)
    return cone


def _reads_counted_values(parsed, decisions):
    """The ops that read a value sized by the data (a decision on sizes),
    or a value computed from one: they stay ahead of the next decision, in
    the segment right after their count's, which then depends on that count
    alone. (Moved past later decisions, the work of every expert of a
    routing would meet in the last segment, whose sizes then depend on every
    count: a compile for each combination.)"""
    sized = sorted((d.position, d.values) for d in decisions if d.op == "sizes")
    counted_values, ops, i = set(), set(), 0
    for k, (uses, defines) in enumerate(parsed):
        while i < len(sized) and sized[i][0] <= k:
            counted_values.update(sized[i][1])
            i += 1
        if counted_values.intersection(uses):
            ops.add(k)
            counted_values.update(defines)
    return ops


def _sized_by_data(decision):
    """The values whose sizes a decision reads: its segment hands them on at
    the sizes the replay's op gives (ir::Graph::sized_by_data)."""
    return decision.values if decision.op == "sizes" else []


def _any_sizes(value_lines, values):
    """value_lines with the sizes and strides of `values` left out."""
    lines = list(value_lines)
    for v in values:
        lines[v] = _LAYOUT.sub("sizes=? strides=?", lines[v])
    return lines


def _segment_of(k, bounds):
    for i, b in enumerate(bounds):
        if k < b:
            return i
    return len(bounds) - 1


def _parse(line):
    """(values used, values defined) by a node line."""
    args, _, outs = line.partition(" -> ")
    return [int(v) for v in _REF.findall(args)], [int(v) for v in _REF.findall(outs)]


def _text(value_lines, inputs, node_lines, outputs, mutations, tail_lines):
    used = set(inputs) | set(outputs)
    for line in node_lines:
        used.update(int(v) for v in _REF.findall(line))
    for inp, val in mutations:
        used.update((inp, val))
    order = sorted(used)
    new = {v: i for i, v in enumerate(order)}

    def renumber(text):
        return _REF.sub(lambda m: f"%{new[int(m.group(1))]}", text)

    lines = ["deepvisor-graph 1"]
    lines += [renumber(value_lines[v]) for v in order]
    lines += [f"input %{new[v]}" for v in inputs]
    lines += [renumber(line) for line in node_lines]
    lines.append("output" + "".join(f" %{new[v]}" for v in outputs))
    lines += [f"mutation %{new[i]} %{new[v]}" for i, v in mutations]
    lines += [renumber(line) for line in tail_lines]
    return "\n".join(lines) + "\n"
