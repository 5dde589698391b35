"""GPU suite settings, applied before deepvisor is imported: the same as the
CPU suite's (poisoned kernel outputs, a fresh kernel disk cache unless
DEEPVISOR_CACHE_DIR is set), and tests/python on the path for op_cases."""

import atexit
import os
import shutil
import sys
import tempfile

os.environ.setdefault("DEEPVISOR_POISON", "1")
os.environ.setdefault("DEEPVISOR_CPU", "interpreter")  # as tests/python/conftest.py
if not os.environ.get("DEEPVISOR_CACHE_DIR"):
    _cache_dir = tempfile.mkdtemp(prefix="deepvisor-test-cache-")
    os.environ["DEEPVISOR_CACHE_DIR"] = _cache_dir
    atexit.register(shutil.rmtree, _cache_dir, True)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
