"""Build and install t2arec_fast: the Python package, its Triton kernels (as t2arec_fast.triton_kernels) and the
pybind11 state-cache extension t2arec_fast._state_cache built from csrc/."""
import re
from pathlib import Path

from setuptools import find_packages, setup

try:
    from pybind11.setup_helpers import Pybind11Extension, build_ext
except ImportError as exc:  # pragma: no cover
    raise SystemExit("t2arec_fast needs pybind11 to build: pip install pybind11") from exc

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "t2arec_fast" / "_version.py").read_text()).group(1)

state_cache = Pybind11Extension(
    "t2arec_fast._state_cache",
    sorted(str(p) for p in (HERE / "csrc").glob("*.cpp") if not p.name.startswith("test_")),
    include_dirs=["csrc"],
    cxx_std=17,
    extra_compile_args=["-O3"],
)

setup(
    name="t2arec_fast",
    version=VERSION,
    description="Fast T2ARec: a Mamba-2 style sequential recommender with test-time alignment to interest shifts",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # triton_kernels/ lives at the top of the repository but installs INSIDE the package: a top-level
    # `triton_kernels` module would clash with the PyPI project of that name.
    packages=find_packages(include=["t2arec_fast", "t2arec_fast.*"]) + ["t2arec_fast.triton_kernels"],
    package_dir={"t2arec_fast.triton_kernels": "triton_kernels"},
    package_data={"t2arec_fast": ["configs/*.yaml"]},
    ext_modules=[state_cache],
    cmdclass={"build_ext": build_ext},
    install_requires=[
        "torch>=2.3",
        "triton>=3.0; platform_system == 'Linux'",
        "numpy>=1.24",
        "onnx>=1.16",
        # onnxruntime-gpu (extra "gpu") replaces this on CUDA machines; see docs/architecture.md for why it is
        # not the default on Linux x86_64 (its newest release does not load opset-27 graphs yet).
        "onnxruntime>=1.17",
        "pybind11>=2.11",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "safetensors>=0.4",
    ],
    extras_require={
        "gpu": ["onnxruntime-gpu>=1.17"],
        "parquet": ["pyarrow>=14"],
        "plots": ["matplotlib>=3.7"],
        "dev": ["pytest>=7.4", "pytest-timeout>=2.2", "hypothesis>=6.0", "pyarrow>=14", "matplotlib>=3.7",
                "onnxscript>=0.1"],
    },
    entry_points={"console_scripts": ["t2arec = t2arec_fast.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: C++",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
