"""Makes `import deepvisor` work from any directory with this Python.

Links the built extension into python/deepvisor/ and puts python/ on the
interpreter's path with a .pth file (what an editable install does).
"""
import os
import site
import sys
import sysconfig

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
build = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "build")
suffix = sysconfig.get_config_var("EXT_SUFFIX")
built = os.path.join(os.path.abspath(build), "python", "deepvisor", "_C" + suffix)
if not os.path.exists(built):
    sys.exit(f"link-package: {built} was not built")
link = os.path.join(root, "python", "deepvisor", "_C" + suffix)
if os.path.islink(link) or os.path.exists(link):
    os.remove(link)
os.symlink(built, link)

pkg_dir = os.path.join(root, "python")


def write_metadata(d):
    """A dist-info folder, so that the package has a version and torch.compile
    finds the backend by name (the torch_dynamo_backends entry point)."""
    info = os.path.join(d, "deepvisor-0.1.0.dist-info")
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\nName: deepvisor\nVersion: 0.1.0\n")
    with open(os.path.join(info, "entry_points.txt"), "w") as f:
        f.write("[torch_dynamo_backends]\ndeepvisor = deepvisor._backend:deepvisor_backend\n")
    with open(os.path.join(info, "RECORD"), "w") as f:
        f.write("")


candidates = site.getsitepackages() + [site.getusersitepackages()]
for d in candidates:
    try:
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "deepvisor-dev.pth"), "w") as f:
            f.write(pkg_dir + "\n")
        if os.path.exists(os.path.join(d, "deepvisor", "__init__.py")):
            # A `pip install .` into this Python: its package comes first on
            # sys.path and hides the source tree; its metadata (RECORD) stays,
            # so that pip can still uninstall it.
            print(f"link-package: warning: {d}/deepvisor (installed by pip) hides {pkg_dir}; "
                  f"run `{sys.executable} -m pip uninstall deepvisor`, then make again", file=sys.stderr)
        else:
            write_metadata(d)
        print(f"link-package: deepvisor importable via {d}/deepvisor-dev.pth -> {pkg_dir}")
        break
    except OSError:
        continue
else:
    print(f"link-package: could not write a .pth file; use PYTHONPATH={pkg_dir}")
