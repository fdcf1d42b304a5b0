"""A minimal PEP 517 build backend for the pure-Python telltale package, so that
`pip install ./python` works without an index (no setuptools download). It builds a wheel of
the telltale/ directory (the .py files, and a libtelltale.so placed next to them if there is
one) and, for `pip install -e`, an editable wheel that adds this directory to sys.path."""

import base64
import hashlib
import os
import zipfile

NAME = "telltale"
VERSION = "0.1.0"
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIST_INFO = "%s-%s.dist-info" % (NAME, VERSION)
TAG = "py3-none-any"

METADATA = """Metadata-Version: 2.1
Name: telltale
Version: %s
Summary: Stream an AI agent's logs, metrics, steps and token confidence to a telltale collector
Requires-Python: >=3.8
License: MIT
Provides-Extra: numpy
Requires-Dist: numpy; extra == "numpy"
""" % VERSION

WHEEL = """Wheel-Version: 1.0
Generator: telltale_build
Root-Is-Purelib: true
Tag: %s
""" % TAG


def _digest(data):
    h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "sha256=%s,%d" % (h, len(data))


def _files():
    pkg = os.path.join(HERE, NAME)
    for name in sorted(os.listdir(pkg)):
        if name.endswith(".py") or name in ("libtelltale.so", "libtelltale.so.0", "py.typed"):
            yield "%s/%s" % (NAME, name), os.path.join(pkg, name)


def _write(wheel_directory, entries):
    path = os.path.join(wheel_directory, "%s-%s-%s.whl" % (NAME, VERSION, TAG))
    record = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for arc, data in entries:
            z.writestr(arc, data)
            record.append("%s,%s" % (arc, _digest(data)))
        for arc, data in (("%s/METADATA" % DIST_INFO, METADATA), ("%s/WHEEL" % DIST_INFO, WHEEL)):
            data = data.encode()
            z.writestr(arc, data)
            record.append("%s,%s" % (arc, _digest(data)))
        record.append("%s/RECORD,," % DIST_INFO)
        z.writestr("%s/RECORD" % DIST_INFO, "\n".join(record) + "\n")
    return os.path.basename(path)


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    entries = []
    for arc, src in _files():
        with open(src, "rb") as f:
            entries.append((arc, f.read()))
    return _write(wheel_directory, entries)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _write(wheel_directory, [("_telltale_editable.pth", (HERE + "\n").encode())])


def build_sdist(sdist_directory, config_settings=None):
    import tarfile
    base = "%s-%s" % (NAME, VERSION)
    path = os.path.join(sdist_directory, base + ".tar.gz")
    with tarfile.open(path, "w:gz") as t:
        t.add(os.path.join(HERE, "pyproject.toml"), arcname=base + "/pyproject.toml")
        t.add(os.path.join(HERE, "_backend", "telltale_build.py"),
              arcname=base + "/_backend/telltale_build.py")
        for arc, src in _files():
            t.add(src, arcname=base + "/" + arc)
        info = tarfile.TarInfo(base + "/PKG-INFO")
        data = METADATA.encode()
        info.size = len(data)
        import io
        t.addfile(info, io.BytesIO(data))
    return os.path.basename(path)
