"""`pip install clients/python`, offline, with Debian's setuptools: the
command clients/python/README.md gives, into a fresh virtual environment
(--system-site-packages, so Debian's python3-zmq and python3-protobuf
satisfy the dependencies), from a copy of the two directories it reads
(clients/python and proto/, laid out as in the repository, so the source
tree gets no build/ or egg-info). Then, with no protoc reachable, the
installed package imports (threaded and asyncio interfaces), its generated
causeway_pb2 lives inside the installed package, and its version is the
project's. About 10 s.
"""

import os
import shutil
import subprocess
import tempfile

import pytest

SOURCE_DIR = os.environ["CW_SOURCE_DIR"]
PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def venv():
    root = tempfile.mkdtemp(prefix="cw-pyvenv-")
    try:
        src = os.path.join(root, "src")
        shutil.copytree(os.path.join(SOURCE_DIR, "clients", "python"),
                        os.path.join(src, "clients", "python"),
                        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        shutil.copytree(os.path.join(SOURCE_DIR, "proto"), os.path.join(src, "proto"))
        env_dir = os.path.join(root, "venv")
        subprocess.run([PYTHON, "-m", "venv", "--system-site-packages", env_dir],
                       check=True, timeout=120)
        py = os.path.join(env_dir, "bin", "python")
        res = subprocess.run([py, "-m", "pip", "install", "--no-build-isolation", "--no-index",
                              "--no-cache-dir", "--disable-pip-version-check",
                              os.path.join(src, "clients", "python")],
                             capture_output=True, text=True, timeout=180,
                             env=dict(os.environ, PIP_ROOT_USER_ACTION="ignore"))
        assert res.returncode == 0, res.stdout + res.stderr
        yield env_dir, py
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_installed_package_imports_without_protoc(venv):
    env_dir, py = venv
    no_tools = tempfile.mkdtemp(prefix="cw-empty-path-")
    try:
        code = ("import causeway, causeway.aio, os, sys\n"
                "print(causeway.__file__)\n"
                "print(causeway.pb.__file__)\n"
                "print(causeway.__version__)\n"
                "print(causeway.AsyncClient is causeway.aio.AsyncClient)\n"
                "print(causeway.pb.Envelope(version=1).version)\n")
        res = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=60,
                             cwd=no_tools, env={"PATH": no_tools, "HOME": no_tools})
        assert res.returncode == 0, res.stderr
        init, pb_file, version, same, v = res.stdout.split()
        site = os.path.join(env_dir, "lib")
        assert init.startswith(site) and init.endswith(os.path.join("causeway", "__init__.py"))
        assert os.path.dirname(pb_file) == os.path.dirname(init)
        assert os.path.basename(pb_file) == "causeway_pb2.py"
        assert version == "0.1.0" and same == "True" and v == "1"
    finally:
        shutil.rmtree(no_tools, ignore_errors=True)


def test_pip_knows_it(venv):
    _, py = venv
    res = subprocess.run([py, "-m", "pip", "show", "causeway"], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"))
    assert res.returncode == 0, res.stderr
    assert "Version: 0.1.0" in res.stdout
    assert "Requires: protobuf, pyzmq" in res.stdout


def test_source_tree_alone_does_not_import():
    """The source tree has no generated code: importing it fails with a
    message that says to install the package (no protoc at import)."""
    res = subprocess.run([PYTHON, "-c", "import causeway"], capture_output=True, text=True,
                         timeout=60, cwd=os.path.join(SOURCE_DIR, "clients", "python"),
                         env={"PATH": "/nonexistent", "PYTHONDONTWRITEBYTECODE": "1"})
    assert res.returncode != 0
    assert "install the package" in res.stderr, res.stderr
