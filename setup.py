"""The one compiled part: energy_monitor._f32dot (see its .c file for why).

Everything else about the package is in pyproject.toml. The extension is optional: where no C
compiler or Python headers exist the install still succeeds, and float32 traces are
integrated by numpy instead (about 2x slower; `tinypower doctor` says which is in use).
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("energy_monitor._f32dot", ["energy_monitor/_f32dot.c"], optional=True),
])
