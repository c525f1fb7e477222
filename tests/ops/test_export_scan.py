"""ops/export_scan.py: the loop-free scan traced into ONNX graphs equals the sequential definition — values and
gradients, float64, with a carried-in state, left padding, the skip and the gate; both graph forms agree in eager
PyTorch; an unknown form is refused. (The graphs themselves: tests/export.)"""
import functools

import pytest
import torch

from t2arec_fast.ops import selective_scan, selective_scan_loop
from t2arec_fast.ops.export_scan import SCAN_FORMS, selective_scan_export

from .helpers import make_scan_inputs, rel_err, run_with_grads


@pytest.mark.parametrize("form", SCAN_FORMS)
@pytest.mark.parametrize("options", [dict(), dict(with_z=False, with_D=False, with_h0=False)], ids=["full", "bare"])
def test_export_scan_equals_the_loop_reference(form, options):
    inputs = make_scan_inputs(3, 17, 5, 4, pads=(6, 0, 16), **options)
    g = torch.Generator().manual_seed(9)
    gy, gh = torch.randn(3, 17, 5, generator=g, dtype=torch.float64), torch.randn(3, 4, 5, generator=g,
                                                                                    dtype=torch.float64)
    want = run_with_grads(selective_scan_loop, inputs, gy, gh)
    got = run_with_grads(functools.partial(selective_scan_export, form=form), inputs, gy, gh)
    assert set(got) == set(want)
    for name in want:
        assert rel_err(got[name], want[name]) < 1e-12, name


def test_the_export_backend_routes_here_with_its_form():
    inputs = {k: None if v is None else v.detach() for k, v in make_scan_inputs(2, 9, 4, 3).items()}
    y, h = selective_scan(*inputs.values(), backend="export", export_form="linear_attention")
    y_ref, h_ref = selective_scan_loop(*inputs.values())
    assert rel_err(y, y_ref) < 1e-12 and rel_err(h, h_ref) < 1e-12


def test_an_unknown_form_is_refused():
    inputs = {k: None if v is None else v.detach() for k, v in make_scan_inputs(1, 3, 2, 2).items()}
    with pytest.raises(ValueError, match="unknown scan form"):
        selective_scan_export(*inputs.values(), form="loop")
