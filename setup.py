"""The compiled part of cyseg (metadata lives in pyproject.toml): FocusLiteNN's convolution on
8-bit RGB (`segmenter/_focus_conv.c`). Where it cannot be built or the CPU lacks AVX-512 VBMI
and VNNI, cyseg uses PyTorch's convolution instead."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("segmenter._focus_conv", ["segmenter/_focus_conv.c"],
                             extra_compile_args=["-O3"], optional=True)])
