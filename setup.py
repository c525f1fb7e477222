"""The parts of the build that pyproject.toml cannot declare: the pybind11 state-cache extension
t2arec_fast._state_cache built from csrc/, and the package list (triton_kernels/ installs as
t2arec_fast.triton_kernels). Everything else (name, version, dependencies, extras, entry points) is in pyproject.toml."""
from pathlib import Path

from setuptools import find_namespace_packages, setup

try:
    from pybind11.setup_helpers import Pybind11Extension, build_ext
except ImportError as exc:  # pragma: no cover - pip installs it from [build-system] requires
    raise SystemExit("t2arec_fast needs pybind11 to build: pip install pybind11 (pip does this by itself unless "
                     "--no-build-isolation is given)") from exc

HERE = Path(__file__).parent
# Relative paths: setuptools refuses absolute ones in an sdist build. test_*.cpp is the C++ unit test (csrc/Makefile).
SOURCES = sorted(p.relative_to(HERE).as_posix() for p in (HERE / "csrc").glob("*.cpp")
                 if not p.name.startswith("test_"))
if not SOURCES:  # pragma: no cover
    raise SystemExit(f"t2arec_fast: no C++ sources in {HERE / 'csrc'}; the source tree is incomplete")

state_cache = Pybind11Extension("t2arec_fast._state_cache", SOURCES, include_dirs=["csrc"], cxx_std=17,
                                extra_compile_args=["-O3"])

setup(
    # triton_kernels/ lives at the top of the repository but installs INSIDE the package: a top-level
    # `triton_kernels` module would clash with the PyPI project of that name. Discovered here, not listed in
    # pyproject.toml, so that a new subpackage can never be left out of the wheel. Namespace discovery so that data
    # folders (configs/) count as packages too, as Python sees them.
    packages=find_namespace_packages(include=["t2arec_fast", "t2arec_fast.*"], exclude=["*.__pycache__"])
    + ["t2arec_fast.triton_kernels"],
    package_dir={"t2arec_fast.triton_kernels": "triton_kernels"},
    ext_modules=[state_cache],
    cmdclass={"build_ext": build_ext},
)
