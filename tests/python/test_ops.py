"""Every op in the catalogue (op_cases.py), on CPU tensors: the compiled
replay must match eager in dtype, shape and values, with one capture, cache
hits afterwards, no eager run and no fallback for a lowered op."""

import pytest

from op_cases import check_compiled, params


@pytest.mark.parametrize("case,dtype", params("cpu"))
def test_op(case, dtype):
    check_compiled(case, dtype, "cpu")
