"""The bookkeeping a CUDA graph uses to lend its outputs instead of copying
them (runtime/output_lender.h), driven with CPU tensors: `buffers` stand for
the graph's output buffers and `replay` for what a replay does to them. A
lent output is the buffer itself until the next replay; one the caller still
holds then is moved to new memory first (the same tensor object, the same
values), unless another thread holds it; any other holder (a view, a
detached alias, a storage object) stops the replay."""

import contextlib
import gc
import threading

import pytest
import torch

from deepvisor import _C


def replay(buffers, value):
    for b in buffers:
        b.fill_(value)


def lender_over(buffers, inputs=(), same_as=None):
    lender = _C.OutputLender()
    lender.choose(buffers, list(inputs), same_as if same_as is not None else [-1] * len(buffers))
    return lender


def graph_output(*shape):
    return [torch.zeros(*shape)]


def over(memory, offset, size, stride):
    """A tensor over `memory`'s storage that is not a view of it (a view keeps
    its base, a second holder, as the graph's buffers do not; and no Python
    storage object, which torch keeps alive with its storage)."""
    return torch.empty(0).set_(memory, offset, size, stride)


def test_a_dropped_output_costs_no_copy():
    buffers = graph_output(64, 33)
    lender = lender_over(buffers)
    assert lender.lends(0)
    for value in range(3):
        assert lender.reclaim(buffers) == "done"
        replay(buffers, value)
        y = lender.lend(buffers, 0)
        assert y.data_ptr() == buffers[0].data_ptr() and bool((y == value).all())
        del y
    assert lender.moved == 0


def test_a_kept_output_moves_with_its_values():
    buffers = [torch.empty_strided((30, 40), (1, 30))]  # non-contiguous
    lender = lender_over(buffers)
    assert lender.lends(0)
    kept = []
    for value in range(4):
        assert lender.reclaim(buffers) == "done"
        replay(buffers, value)
        kept.append(lender.lend(buffers, 0))
    assert lender.reclaim(buffers) == "done"
    replay(buffers, 99)
    assert lender.moved == 4
    for value, y in enumerate(kept):
        assert bool((y == value).all()), value
        assert y.shape == (30, 40) and y.stride() == (1, 30)
        assert y.data_ptr() != buffers[0].data_ptr()


def test_outputs_over_one_buffer_move_together():
    memory = torch.zeros(100)
    buffers = [over(memory, 0, (50,), (1,)), over(memory, 50, (50,), (1,))]  # two outputs, one storage
    del memory
    lender = lender_over(buffers)
    assert lender.lends(0) and lender.lends(1)
    assert lender.reclaim(buffers) == "done"
    buffers[0].fill_(1)
    buffers[1].fill_(2)
    a, b = lender.lend(buffers, 0), lender.lend(buffers, 1)
    assert lender.reclaim(buffers) == "done"
    replay(buffers, 7)
    assert lender.moved == 1  # one copy of the storage for both
    assert bool((a == 1).all()) and bool((b == 2).all())
    assert b.storage_offset() == 50 and a.data_ptr() + 200 == b.data_ptr()
    # Only one of them kept: the storage moves all the same.
    del a
    gc.collect()
    assert lender.reclaim(buffers) == "done"
    c = lender.lend(buffers, 1)
    assert lender.reclaim(buffers) == "done"
    replay(buffers, 8)
    assert bool((c == 7).all()) and bool((b == 2).all())


@pytest.mark.parametrize("holder", ["view", "slice", "detach", "storage", "view_only"])
def test_another_holder_stops_the_replay(holder):
    buffers = graph_output(16, 16)
    lender = lender_over(buffers)
    assert lender.reclaim(buffers) == "done"
    replay(buffers, 1)
    y = lender.lend(buffers, 0)
    other = {"view": lambda: y.view(-1), "slice": lambda: y[3:], "detach": lambda: y.detach(),
             "storage": lambda: y.untyped_storage(), "view_only": lambda: y.view(-1)}[holder]()
    if holder == "view_only":
        del y  # the lent tensor is gone, its view is not
    assert lender.reclaim(buffers) == "held"
    del other
    gc.collect()
    # A Python storage object, once made, lives as long as its storage (torch
    # keeps it for the storage's sake): that buffer is never overwritten again.
    assert (lender.reclaim(buffers) == "done") == (holder != "storage")


def test_an_output_over_an_input_is_never_lent():
    x = torch.zeros(10)
    buffers = [x[2:]]
    assert not lender_over(buffers, inputs=[x]).lends(0)


def test_an_output_someone_else_holds_at_capture_is_never_lent():
    buffers = graph_output(10)
    keep = buffers[0].view(2, 5)
    assert not lender_over(buffers).lends(0)
    del keep


def test_an_output_repeated_is_lent_once_and_disabled_lends_nothing():
    t = torch.zeros(10)
    buffers = [t, t]
    del t
    lender = lender_over(buffers, same_as=[-1, 0])
    assert lender.lends(0) and not lender.lends(1)
    assert lender.reclaim(buffers) == "done"
    y = lender.lend(buffers, 0)
    assert lender.reclaim(buffers) == "done" and lender.moved == 1
    del y
    off = _C.OutputLender()
    off.choose(graph_output(10), [], [-1], False)
    assert not off.lends(0)


def test_lent_in_the_callers_mode():
    with torch.inference_mode():
        buffers = graph_output(10)
        lender = lender_over(buffers)
    y = lender.lend(buffers, 0)
    assert not y.is_inference()
    y.add_(1)  # an ordinary tensor: writable outside inference_mode
    with torch.inference_mode():
        assert lender.lend(buffers, 0).is_inference()


@contextlib.contextmanager
def held_by_another_thread(make):
    """Calls make() in another thread, which holds the result until the block
    ends; yields the result."""
    held, ready, done = [], threading.Event(), threading.Event()

    def holder():
        held.append(make())
        ready.set()
        done.wait()
        held.clear()

    t = threading.Thread(target=holder)
    t.start()
    ready.wait()
    try:
        yield held[0]
    finally:
        done.set()
        t.join()


def test_an_output_lent_to_another_thread_is_not_moved_under_it():
    """Moving swaps the storage under the holder: another thread may be reading
    it inside an op (its GIL released), so the replay waits instead."""
    buffers = graph_output(8, 8)
    lender = lender_over(buffers)
    assert lender.reclaim(buffers) == "done"
    replay(buffers, 3)
    with held_by_another_thread(lambda: lender.lend(buffers, 0)) as y:
        assert lender.reclaim(buffers) == "held by another thread"
        assert y.data_ptr() == buffers[0].data_ptr() and lender.moved == 0
        del y
    gc.collect()
    assert lender.reclaim(buffers) == "done" and lender.moved == 0
    # Lent to this thread, kept, reclaimed here: moved as before.
    z = lender.lend(buffers, 0)
    assert lender.reclaim(buffers) == "done" and lender.moved == 1
    replay(buffers, 4)
    assert bool((z == 3).all())
