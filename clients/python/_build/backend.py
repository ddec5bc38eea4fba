"""PEP 517 build backend: setuptools, found without a network when it is installed.

pip builds in an isolated environment and, to fill it, downloads the static
build requirements from the package index, so a plain
``pip install ./clients/python`` fails offline even where setuptools is
installed. Here the static requirements are empty; ``get_requires_for_build_*``
then asks for setuptools only when no installed copy can be found (in the build
environment or the interpreter's site-packages). Building itself is
setuptools.build_meta, unchanged.
"""

from __future__ import annotations

import os
import site
import sys

_REQUIRES = ["setuptools>=61"]


def _site_paths():
    try:
        return list(site.getsitepackages())
    except AttributeError:
        return []


def _importable(module: str) -> bool:
    """Whether module imports, from the build environment or, failing that, from
    the interpreter's own site-packages (which pip's isolation hides)."""
    import importlib
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        pass
    for p in _site_paths():
        if os.path.isdir(os.path.join(p, module)) and p not in sys.path:
            sys.path.append(p)
            importlib.invalidate_caches()
            try:
                importlib.import_module(module)
                return True
            except ImportError:
                sys.path.remove(p)
    return False


def _setuptools():
    if _importable("setuptools"):
        from setuptools import build_meta
        return build_meta
    return None


def _missing(reqs):
    """The requirements (setuptools' own, e.g. "wheel") not installed anywhere."""
    out = []
    for r in reqs:
        name = r.split(";")[0].split("[")[0]
        for op in "<>=!~ ":
            name = name.split(op)[0]
        if not _importable(name.strip().replace("-", "_")):
            out.append(r)
    return out


def _requires_for(hook):
    def requires(config_settings=None):
        b = _setuptools()
        if b is None:
            return list(_REQUIRES)
        return _missing(getattr(b, hook)(config_settings))
    return requires


def _backend():
    b = _setuptools()
    if b is None:
        raise RuntimeError("building ds-sandbox needs setuptools>=61: install it (e.g. apt-get install python3-setuptools)")
    # Each hook runs in a fresh process: put setuptools' own needs (e.g. wheel)
    # back on the path here too.
    _missing(b.get_requires_for_build_wheel(None))
    return b


get_requires_for_build_wheel = _requires_for("get_requires_for_build_wheel")
get_requires_for_build_sdist = _requires_for("get_requires_for_build_sdist")
get_requires_for_build_editable = _requires_for("get_requires_for_build_editable")


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    return _backend().prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _backend().build_wheel(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory, config_settings=None):
    return _backend().build_sdist(sdist_directory, config_settings)


def prepare_metadata_for_build_editable(metadata_directory, config_settings=None):
    return _backend().prepare_metadata_for_build_editable(metadata_directory, config_settings)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _backend().build_editable(wheel_directory, config_settings, metadata_directory)
