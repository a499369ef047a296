import subprocess
import sys

import nsdlib


def test_public_names_resolve():
    for name in nsdlib.__all__:
        assert getattr(nsdlib, name) is not None, name


def test_import_is_light():
    code = "import sys, nsdlib; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
