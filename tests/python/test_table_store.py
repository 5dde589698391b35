"""The tracer's code tables on disk (_table_store.py): a table read back is the
one decoding makes, a damaged or changed entry is decoded again, and a second
process decodes nothing and captures the same guards."""
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from deepvisor import _C
from deepvisor import _bytecode as B
from deepvisor import _table_store as S


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setitem(S._state, "dir", str(tmp_path))
    monkeypatch.setattr(S, "_made", [])
    return tmp_path


def _closure_and_handlers(x, ys):
    scale = 2

    def inner(v):
        return v * scale

    try:
        out = [inner(y) for y in ys if y not in {"a", "b"}]
    except (KeyError, ValueError) as e:
        out = [str(e)]
    finally:
        x.count = len(ys)
    return out, f(x=x, y=ys)


def f(**kw):
    return kw


def _generator(n):
    for i in range(n):
        yield i ** 2


CODES = [torch.nn.Module._call_impl.__code__, torch.nn.Linear.forward.__code__, _closure_and_handlers.__code__,
         _generator.__code__, f.__code__]


def _decoding_forbidden(monkeypatch):
    def fail(code):
        raise AssertionError(f"decoded {code.co_name}")
    monkeypatch.setattr(B, "code_table", fail)


@pytest.mark.parametrize("code", CODES, ids=lambda c: c.co_name)
def test_a_stored_table_is_the_decoded_one(store, monkeypatch, code):
    decoded = B.code_table(code)
    assert S.table_of(code) == decoded
    S.store_made()
    assert len(os.listdir(store)) == 1
    _decoding_forbidden(monkeypatch)
    assert S.table_of(code) == decoded


def test_a_damaged_entry_is_decoded_again(store):
    code = _closure_and_handlers.__code__
    S.table_of(code)
    S.store_made()
    (entry,) = store.iterdir()
    data = entry.read_bytes()
    entry.write_bytes(data[:-7] + b"garbage")
    before = S.counts["decoded"]
    assert S.table_of(code) == B.code_table(code)
    assert S.counts["decoded"] == before + 1


def test_a_changed_code_has_an_entry_of_its_own(store):
    def g(x):
        return x.a

    first = g.__code__
    S.table_of(first)

    def g(x):  # noqa: F811 (the same name, another body)
        return x.b

    assert S.table_of(g.__code__) == B.code_table(g.__code__)
    assert S._key(first) != S._key(g.__code__)
    S.store_made()
    assert len(os.listdir(store)) == 2


PROGRAM = textwrap.dedent("""
    import torch, deepvisor
    from deepvisor import _table_store as S

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(5, 5)
            self.scale = 0.5

        def forward(self, x):
            return torch.relu(self.lin(x)) * self.scale

    torch.manual_seed(0)
    model = torch.nn.Sequential(Block(), Block())
    fn = deepvisor.compile(model)
    x = torch.randn(3, 5)
    torch.testing.assert_close(fn(x), model(x))
    print("decoded", S.counts["decoded"], "loaded", S.counts["loaded"])
    print(deepvisor.explain(fn))
""")


def _run(cache, **env):
    out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True,
                         env=dict(os.environ, DEEPVISOR_CACHE_DIR=str(cache), **env))
    assert out.returncode == 0, out.stdout + out.stderr
    counts, guards = out.stdout.split("\n", 1)
    _, decoded, _, loaded = counts.split()
    return int(decoded), int(loaded), re.sub(r"0x[0-9a-f]+", "0x?", guards)  # objects' addresses differ


def test_a_second_process_decodes_nothing_and_guards_the_same(tmp_path):
    decoded, loaded, guards = _run(tmp_path)
    assert decoded > 0 and loaded == 0
    assert os.listdir(tmp_path / "code_tables")
    decoded2, loaded2, guards2 = _run(tmp_path)
    assert decoded2 == 0 and loaded2 == decoded
    assert guards2 == guards


def test_without_the_disk_tiers_nothing_is_stored(tmp_path):
    decoded, loaded, _ = _run(tmp_path, DEEPVISOR_DISK_CACHE="0")
    assert decoded > 0 and loaded == 0
    assert not (tmp_path / "code_tables").exists()
