"""Build the one native piece, bench_kernels._timer; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "bench_kernels._timer",
            sources=["bench_kernels/_timer.c"],
            extra_compile_args=["-O2", "-std=c99"],
        )
    ]
)
