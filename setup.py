"""Build of the optional C extension `mmipc.journal._native` (everything else is in pyproject.toml).

The extension is optional: without a compiler (or Python headers) the build prints a warning and
mmipc installs as pure Python, the reference backend. MMIPC_REQUIRE_NATIVE=1 makes a failed build
an error instead, so CI sees it.
"""

import os

from setuptools import Extension, setup

NATIVE = "src/mmipc/journal/_native"
REQUIRED = os.environ.get("MMIPC_REQUIRE_NATIVE") == "1"

setup(
    ext_modules=[
        Extension(
            "mmipc.journal._native",
            sources=[f"{NATIVE}/_mmipcmodule.c", f"{NATIVE}/_blockiter.c", f"{NATIVE}/mmipc.c"],
            include_dirs=[NATIVE],
            depends=[f"{NATIVE}/{h}" for h in ("mmipc.h", "mmipc_frame.h", "mmipc_bell.h", "_blockiter.h")],
            extra_compile_args=["-std=c11", "-O2", "-fvisibility=hidden"],
            optional=not REQUIRED,
        )
    ]
)
