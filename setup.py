"""The compiled part of stabfw: counter-based draws (stabfw/core/_counter.c).

Everything else is declared in pyproject.toml. The extension is optional: where it cannot
be built, stabfw.core.streams draws the same numbers with numpy, only slower.
"""

import sys

from setuptools import Extension, setup

# no fused multiply-adds: the compiled draws must equal the numpy ones bit for bit
FLAGS = ["/fp:precise"] if sys.platform == "win32" else ["-O3", "-ffp-contract=off"]

setup(ext_modules=[Extension("stabfw.core._counter", ["stabfw/core/_counter.c"],
                             extra_compile_args=FLAGS, optional=True)])
