from __future__ import annotations

import pytest
import torch

from napari_pathm3.config import CorrelationConfig
from napari_pathm3.model.correlation import CorrelationModule
from napari_pathm3.model.nystrom import (
    NystromAttention,
    _merge_heads,
    exact_attention,
    iterative_pinv,
    landmark_segments,
    nystrom_attention,
    segment_means,
)


def _qkv(b: int, h: int, n: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, n, d, generator=g, dtype=torch.float64) for _ in range(3))


def test_iterative_pinv_matches_torch_pinv():
    x = torch.softmax(torch.randn(3, 2, 8, 8, dtype=torch.float64), dim=-1)
    z = iterative_pinv(x, iters=30)
    torch.testing.assert_close(z, torch.linalg.pinv(x), atol=1e-6, rtol=1e-6)


def test_pinv_is_per_matrix():
    """Scaling one matrix of the batch does not change another's result (lucidrains uses a batch max)."""
    x = torch.softmax(torch.randn(2, 6, 6, dtype=torch.float64), dim=-1)
    y = x.clone()
    y[1] = 10 * y[1]
    torch.testing.assert_close(iterative_pinv(x)[0], iterative_pinv(y)[0])


def test_landmark_segments_use_each_bags_valid_patches():
    mask = torch.tensor([[True] * 10, [True] * 6 + [False] * 4])
    seg = landmark_segments(mask, 3)
    assert seg[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert seg[1].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 3, 3]  # padding -> dump bucket m=3
    means = segment_means(torch.arange(10.0).expand(2, 10)[..., None], seg, 3)
    assert means[1, :, 0].tolist() == [0.5, 2.5, 4.5]


# Nyström with landmarks = bag size reproduces softmax attention: kernel_1 = kernel_2 = kernel_3 = A and
# A·pinv(A)·A = A. The iterative pseudo-inverse is what limits the agreement.
@pytest.mark.parametrize(("iters", "atol"), [(6, 5e-2), (20, 1e-3)])
def test_nystrom_with_all_landmarks_matches_exact(iters: int, atol: float):
    q, k, v = _qkv(2, 2, 40, 8)
    exact = exact_attention(q, k, v)
    approx = nystrom_attention(q, k, v, num_landmarks=40, pinv_iterations=iters)
    torch.testing.assert_close(approx, exact, atol=atol, rtol=0)


def test_nystrom_approximates_exact_with_few_landmarks():
    # smooth attention (small logits): the low-rank approximation is good
    q, k, v = _qkv(1, 2, 512, 16)
    exact = exact_attention(q * 0.3, k * 0.3, v)
    approx = nystrom_attention(q * 0.3, k * 0.3, v, num_landmarks=64)
    rel = (approx - exact).norm() / exact.norm()
    assert rel < 0.1


def test_nystrom_needs_enough_patches():
    q, k, v = _qkv(1, 1, 5, 4)
    with pytest.raises(ValueError, match="num_landmarks"):
        nystrom_attention(q, k, v, num_landmarks=8)


def test_chunked_module_matches_reference_and_ignores_padding():
    torch.manual_seed(0)
    attn = NystromAttention(16, heads=2, num_landmarks=8, chunk_size=7).eval()
    x = torch.randn(2, 50, 16)
    mask = torch.ones(2, 50, dtype=torch.bool)
    mask[1, 30:] = False
    with torch.no_grad():
        out = attn(x, mask)
        q, k, v = attn._qkv(x)
        ref = (
            attn.to_out(_merge_heads(nystrom_attention(q, k, v, num_landmarks=8, mask=mask)))
            * mask[..., None]
        )
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        alone = attn(x[1:2, :30])
        torch.testing.assert_close(out[1, :30], alone[0], atol=1e-5, rtol=1e-5)
        assert out[1, 30:].abs().max() == 0


def test_auto_mode_is_exact_for_small_bags_even_in_a_mixed_batch():
    torch.manual_seed(0)
    attn = NystromAttention(16, heads=2, num_landmarks=8).eval()
    exact = NystromAttention(16, heads=2, num_landmarks=8, mode="exact").eval()
    exact.load_state_dict(attn.state_dict())
    x = torch.randn(2, 40, 16)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[0, 6:] = False  # 6 patches <= 8 landmarks: exact
    with torch.no_grad():
        torch.testing.assert_close(attn(x, mask)[0], exact(x, mask)[0], atol=1e-6, rtol=1e-6)
        assert not torch.allclose(attn(x, mask)[1], exact(x, mask)[1], atol=1e-4)


def test_inference_residual_is_in_place_and_matches_autograd_path():
    torch.manual_seed(0)
    attn = NystromAttention(16, heads=2, num_landmarks=8, chunk_size=16).eval()
    x = torch.randn(1, 100, 16)
    with torch.enable_grad():
        ref = attn(x, residual=True).detach()
    y = x.clone()
    with torch.no_grad():
        out = attn(y, residual=True)
    assert out.data_ptr() == y.data_ptr()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_correlation_gradients_flow_through_chunks():
    module = CorrelationModule(
        8, CorrelationConfig(hidden_size=16, num_heads=2, num_landmarks=4, chunk_size=5)
    )
    x = torch.randn(2, 23, 8, requires_grad=True)
    module(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in module.parameters())
