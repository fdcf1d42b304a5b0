"""A minimal PEP 517 build backend for the telltale package, so that `pip install ./python`
works without an index (no setuptools download). It builds a wheel of the telltale/ directory
(the .py files, and a libtelltale.so placed next to them if there is one) and, when it can, the
compiled core telltale._ext (ext/ext.c) with the system's C compiler ($CC, else cc) and the
interpreter's headers (Debian: python3-dev). Where that fails (no compiler, no headers) the wheel
is pure Python and the package runs its ctypes core instead: the reason is printed, the install
goes on. TELLTALE_BUILD_EXT=0 builds the pure wheel on purpose. For `pip install -e`, an
editable wheel adds this directory to sys.path (the extension is then the one `make` builds
beside the library, if any)."""

import base64
import hashlib
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import zipfile

NAME = "telltale"
VERSION = "0.7.0"
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIST_INFO = "%s-%s.dist-info" % (NAME, VERSION)
PURE_TAG = "py3-none-any"

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
Root-Is-Purelib: %s
Tag: %s
"""


def _digest(data):
    h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "sha256=%s,%d" % (h, len(data))


def _files():
    pkg = os.path.join(HERE, NAME)
    for name in sorted(os.listdir(pkg)):
        if name.endswith(".py") or name in ("libtelltale.so", "libtelltale.so.0", "py.typed"):
            yield "%s/%s" % (NAME, name), os.path.join(pkg, name)


def _header_dir():
    """The directory of telltale.h: the repository's include/ (a checkout) or the sdist's."""
    for d in (os.path.join(os.path.dirname(HERE), "include"), os.path.join(HERE, "include")):
        if os.path.exists(os.path.join(d, "telltale.h")):
            return d
    return None


def _platform_tag():
    impl = "cp%d%d" % sys.version_info[:2] if sys.implementation.name == "cpython" else None
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return "%s-%s-%s" % (impl, impl, plat) if impl else None


def _build_ext(tmp):
    """(archive name, bytes) of the compiled core, or None with the reason on stderr."""
    if os.environ.get("TELLTALE_BUILD_EXT", "1") == "0":
        return None
    src = os.path.join(HERE, "ext", "ext.c")
    inc = _header_dir()
    pyinc = sysconfig.get_paths()["include"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    why = None
    if not os.path.exists(src) or inc is None:
        why = "its sources (ext/ext.c, telltale.h) are not here"
    elif not os.path.exists(os.path.join(pyinc, "Python.h")):
        why = "Python.h is missing (Debian: apt-get install python3-dev)"
    elif not suffix or _platform_tag() is None:
        why = "this interpreter has no extension suffix"
    if why is None:
        out = os.path.join(tmp, "_ext" + suffix)
        cc = shlex.split(os.environ.get("CC") or "cc")
        cmd = cc + ["-std=c11", "-O2", "-fPIC", "-fvisibility=hidden", "-shared", "-I", inc,
                    "-I", pyinc, "-o", out, src]
        try:
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if r.returncode == 0:
                with open(out, "rb") as f:
                    return "%s/_ext%s" % (NAME, suffix), f.read()
            why = "%s failed:\n%s" % (" ".join(cmd), r.stdout.decode(errors="replace"))
        except OSError as e:
            why = "%s: %s" % (cc[0], e)
    sys.stderr.write("telltale: building without the compiled core (the ctypes core will run): "
                     "%s\n" % why)
    return None


def _write(wheel_directory, entries, tag=PURE_TAG):
    path = os.path.join(wheel_directory, "%s-%s-%s.whl" % (NAME, VERSION, tag))
    wheel = WHEEL % ("true" if tag == PURE_TAG else "false", tag)
    record = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for arc, data in entries:
            z.writestr(arc, data)
            record.append("%s,%s" % (arc, _digest(data)))
        for arc, data in (("%s/METADATA" % DIST_INFO, METADATA), ("%s/WHEEL" % DIST_INFO, wheel)):
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
    with tempfile.TemporaryDirectory(prefix="telltale-build-") as tmp:
        ext = _build_ext(tmp)
    if ext is None:
        return _write(wheel_directory, entries)
    return _write(wheel_directory, entries + [ext], _platform_tag())


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _write(wheel_directory, [("_telltale_editable.pth", (HERE + "\n").encode())])


def build_sdist(sdist_directory, config_settings=None):
    import io
    import tarfile
    base = "%s-%s" % (NAME, VERSION)
    path = os.path.join(sdist_directory, base + ".tar.gz")
    with tarfile.open(path, "w:gz") as t:
        t.add(os.path.join(HERE, "pyproject.toml"), arcname=base + "/pyproject.toml")
        t.add(os.path.join(HERE, "_backend", "telltale_build.py"),
              arcname=base + "/_backend/telltale_build.py")
        t.add(os.path.join(HERE, "ext", "ext.c"), arcname=base + "/ext/ext.c")
        inc = _header_dir()
        if inc is not None:
            t.add(os.path.join(inc, "telltale.h"), arcname=base + "/include/telltale.h")
        for arc, src in _files():
            t.add(src, arcname=base + "/" + arc)
        info = tarfile.TarInfo(base + "/PKG-INFO")
        data = METADATA.encode()
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return os.path.basename(path)
