"""Test settings, applied before deepvisor is imported.

DEEPVISOR_POISON=1: kernel outputs start as NaN or a sentinel, so an element
a kernel forgets to write fails the comparison with eager.
DEEPVISOR_CACHE_DIR: a fresh kernel disk cache for the session (unless set),
so the suites neither read nor fill the user's cache.
DEEPVISOR_CPU=interpreter: plans on CPU tensors run their kernels in the loop
IR's interpreter (what the lowering tests check against eager) instead of
running every node through ATen, as they do by default; the tests of the
ATen path set it themselves.
"""

import atexit
import os
import shutil
import sys
import tempfile

os.environ.setdefault("DEEPVISOR_POISON", "1")
os.environ.setdefault("DEEPVISOR_CPU", "interpreter")
if not os.environ.get("DEEPVISOR_CACHE_DIR"):
    _cache_dir = tempfile.mkdtemp(prefix="deepvisor-test-cache-")
    os.environ["DEEPVISOR_CACHE_DIR"] = _cache_dir
    atexit.register(shutil.rmtree, _cache_dir, True)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # op_cases


def pytest_configure(config):
    config.addinivalue_line("markers", "pip_install: builds the package with pip in a fresh venv "
                            "(test_pip_install.py, minutes; deselect with -m 'not pip_install')")
