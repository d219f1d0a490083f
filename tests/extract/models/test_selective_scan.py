"""The pure-PyTorch selective scan against a plain loop, and against the CUDA kernel if present."""

import pytest
import torch

from medprobe.extract.models.selective_scan import (
    cuda_selective_scan,
    selective_scan,
    selective_scan_reference,
    selective_scan_torch,
)


def scan_inputs(*, batch=2, channels=6, groups=2, state=3, length=37, device="cpu", seed=0):
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(device)

    return dict(
        u=randn(batch, channels, length),
        delta=randn(batch, channels, length),
        A=-torch.exp(randn(channels, state)),  # negative, as exp(A_log) gives
        B=randn(batch, groups, state, length),
        C=randn(batch, groups, state, length),
        D=randn(channels),
        delta_bias=randn(channels),
        delta_softplus=True,
    )


@pytest.mark.parametrize("chunk", [1, 8, 37, 64])
def test_two_level_scan_equals_the_loop(chunk):
    inputs = scan_inputs()
    expected = selective_scan_reference(**inputs)
    torch.testing.assert_close(selective_scan_torch(**inputs, chunk=chunk), expected)


def test_long_sequences_with_strong_decay_stay_finite():
    inputs = scan_inputs(length=300, state=1)
    inputs["A"] = inputs["A"] * 50  # exp of large negative sums: must not overflow
    y = selective_scan_torch(**inputs)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, selective_scan_reference(**inputs))


def test_dispatch_uses_the_pure_scan_on_cpu():
    inputs = scan_inputs()
    torch.testing.assert_close(selective_scan(**inputs), selective_scan_torch(**inputs))


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or cuda_selective_scan() is None,
    reason="needs CUDA and mamba_ssm's selective_scan kernel",
)
def test_cuda_kernel_agrees_with_the_pure_scan():
    inputs = scan_inputs(device="cuda", length=200)
    fused = cuda_selective_scan()(
        *(inputs[k] for k in ("u", "delta", "A", "B", "C", "D")),
        delta_bias=inputs["delta_bias"],
        delta_softplus=True,
    )
    torch.testing.assert_close(fused.float(), selective_scan_torch(**inputs), atol=1e-3, rtol=1e-3)
