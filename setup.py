"""The C parts: the accept path, `logd.server.ingest._fastpath`, and the chunk search of the
queries, `logd.server.store._search` (each source beside its module); the rest of the build
is in pyproject.toml. It needs a C compiler and OpenSSL's headers (Debian: libssl-dev).

LOGD_PURE_PYTHON=1 builds without them, e.g. the arm64 wheel that `make wheel` makes for
the AWS host here on x86-64: logd then runs the same checks in Python (accept.py).
"""

import os

from setuptools import Extension, setup

fastpath = Extension(
    "logd.server.ingest._fastpath",
    sources=["service/logd/server/ingest/_fastpath.c"],
    libraries=["crypto"],
    extra_compile_args=["-O2", "-Wall", "-Wextra"],
)
search = Extension(
    "logd.server.store._search",
    sources=["service/logd/server/store/_search.c"],
    extra_compile_args=["-O2", "-Wall", "-Wextra"],
)
setup(ext_modules=[] if os.environ.get("LOGD_PURE_PYTHON") == "1" else [fastpath, search])
