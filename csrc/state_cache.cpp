// Placeholder until the state cache lands (issue 5).
#include <pybind11/pybind11.h>
PYBIND11_MODULE(_state_cache, m) { m.doc() = "t2arec_fast per-user state cache (placeholder)"; }
