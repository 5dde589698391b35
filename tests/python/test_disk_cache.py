"""A second process performs zero NVRTC compiles: every kernel comes from the disk cache."""
import os
import subprocess
import sys

import pytest

from deepvisor import _C

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.skipif(not _C.nvrtc_available(), reason="NVRTC not found")
def test_second_process_compiles_nothing():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "disk_cache_check.py"), "--device", "cpu"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "second process compiled nothing" in out.stdout
