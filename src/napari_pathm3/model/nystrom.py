"""Nyström self-attention (Xiong et al. 2021; PathM3 eq. (2)) as pure functions, plus the module that holds
its projections.

Dimensions: b bags, n patches, m landmarks, h heads, d features per head, D = h*d model width.

Differences from lucidrains/nystrom-attention, which this follows otherwise:

* landmarks are segment means over each bag's *own* valid patches (not over a front-padded sequence), so
  padding a bag inside a batch does not change its output;
* the pseudo-inverse is initialised per matrix (lucidrains scales by the batch-wide maximum), so bags in a
  batch do not influence each other;
* no depth-wise residual convolution on the values (not part of eq. (2); it depends on patch order, which
  is arbitrary for a bag of patches);
* the module computes the attention chunk by chunk over n (an online softmax for the landmark-to-patch
  kernel), so memory is linear in n and no n x n, n x m-for-all-heads or full q/k/v tensor is needed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import PATCH_CHUNK_SIZE

log = logging.getLogger(__name__)

__all__ = [
    "NystromAttention",
    "exact_attention",
    "iterative_pinv",
    "landmark_segments",
    "nystrom_attention",
    "segment_means",
]


def iterative_pinv(x: Tensor, iters: int = 6) -> Tensor:
    """Moore-Penrose pseudo-inverse by the iteration of Razavi et al. (2014), as in nystrom-attention.

    Args:
        x: (..., m, m) matrices (softmax kernels: non-negative, rows sum to 1).
        iters: number of iterations; 6 is the TransMIL / Nyströmformer default.

    Returns:
        (..., m, m) approximate pseudo-inverses.
    """
    abs_x = x.abs()
    col = abs_x.sum(dim=-1).amax(dim=-1)  # (...,) max row sum  = ||x||_inf
    row = abs_x.sum(dim=-2).amax(dim=-1)  # (...,) max col sum  = ||x||_1
    # Z0 = x^T / (||x||_1 ||x||_inf) per matrix guarantees ||I - x Z0|| < 1 (convergence)
    z = x.transpose(-1, -2) / (col * row)[..., None, None]
    eye = torch.eye(x.shape[-1], device=x.device, dtype=x.dtype)
    for _ in range(iters):
        xz = x @ z
        z = 0.25 * z @ (13 * eye - (xz @ (15 * eye - (xz @ (7 * eye - xz)))))
    return z


def landmark_segments(mask: Tensor, num_landmarks: int) -> Tensor:
    """Landmark index of every patch: bag i's valid patches, in order, split into ``m`` contiguous segments.

    Args:
        mask: (b, n) bool, True for real patches.
        num_landmarks: m.

    Returns:
        (b, n) long in [0, m]; padding gets m (a dump bucket that :func:`segment_means` drops). A bag with
        n_i >= m valid patches has every segment non-empty.
    """
    mask = mask.bool()
    rank = mask.long().cumsum(dim=1) - 1  # position among the bag's valid patches
    count = mask.sum(dim=1, keepdim=True).clamp(min=1)
    seg = torch.div(rank * num_landmarks, count, rounding_mode="floor")
    return torch.where(mask, seg, torch.full_like(seg, num_landmarks))


def _segment_sums(x: Tensor, seg: Tensor, num_landmarks: int) -> tuple[Tensor, Tensor]:
    # x (b, n, D), seg (b, n) -> sums (b, m, D), counts (b, m)
    b, _, dim = x.shape
    sums = x.new_zeros(b, num_landmarks + 1, dim).scatter_add_(1, seg[..., None].expand(-1, -1, dim), x)
    counts = x.new_zeros(b, num_landmarks + 1).scatter_add_(1, seg, torch.ones_like(seg, dtype=x.dtype))
    return sums[:, :num_landmarks], counts[:, :num_landmarks]


def segment_means(x: Tensor, seg: Tensor, num_landmarks: int) -> Tensor:
    """Landmarks as segment means (Nyströmformer): (b, n, D) and (b, n) segment ids -> (b, m, D)."""
    sums, counts = _segment_sums(x, seg, num_landmarks)
    return sums / counts.clamp(min=1)[..., None]


def _split_heads(x: Tensor, heads: int) -> Tensor:
    b, n, dim = x.shape
    return x.view(b, n, heads, dim // heads).transpose(1, 2)  # (b, h, n, d)


def _merge_heads(x: Tensor) -> Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)  # (b, n, D)


def exact_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """softmax(q k^T / sqrt(d)) v with padded keys masked; q, k, v (b, h, n, d), mask (b, n) bool."""
    attn_mask = None if mask is None else mask.bool()[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


def nystrom_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    num_landmarks: int,
    mask: Tensor | None = None,
    pinv_iterations: int = 6,
) -> Tensor:
    """Reference (unchunked) Nyström attention, eq. (2):
    softmax(Q K~^T / sqrt(d)) · pinv(softmax(Q~ K~^T / sqrt(d))) · softmax(Q~ K^T / sqrt(d)) · V.

    Args:
        q, k, v: (b, h, n, d).
        num_landmarks: m; every bag needs at least m valid patches (segments must not be empty).
        mask: (b, n) bool, True for real patches; padded rows of the output are 0.
        pinv_iterations: iterations of :func:`iterative_pinv`.

    Returns:
        (b, h, n, d).
    """
    b, h, n, d = q.shape
    mask = torch.ones(b, n, dtype=torch.bool, device=q.device) if mask is None else mask.bool()
    if int(mask.sum(dim=1).min()) < num_landmarks:
        raise ValueError(
            "nystrom_attention: every bag needs >= num_landmarks valid patches; use exact_attention"
        )
    scale = d**-0.5
    seg = landmark_segments(mask, num_landmarks)
    q_l = _split_heads(segment_means(_merge_heads(q), seg, num_landmarks), h)  # (b, h, m, d)
    k_l = _split_heads(segment_means(_merge_heads(k), seg, num_landmarks), h)
    kernel_1 = torch.softmax(q @ k_l.transpose(-1, -2) * scale, dim=-1)  # (b, h, n, m)
    kernel_2 = torch.softmax(q_l @ k_l.transpose(-1, -2) * scale, dim=-1)  # (b, h, m, m)
    logits_3 = (q_l @ k.transpose(-1, -2) * scale).masked_fill(~mask[:, None, None, :], float("-inf"))
    kernel_3 = torch.softmax(logits_3, dim=-1)  # (b, h, m, n)
    out = kernel_1 @ (iterative_pinv(kernel_2, pinv_iterations) @ (kernel_3 @ v))
    return out * mask[:, None, :, None]


def _online_softmax_step(
    state: tuple[Tensor, Tensor, Tensor], logits: Tensor, valid: Tensor, values: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One chunk of softmax(logits) @ values accumulated over n (flash-attention style, out of place so
    autograd works). state = (running max (b,h,m,1), denominator (b,h,m,1), numerator (b,h,m,d))."""
    run_max, denom, numer = state
    logits = logits.masked_fill(~valid, torch.finfo(logits.dtype).min)
    new_max = torch.maximum(run_max, logits.amax(dim=-1, keepdim=True))
    correction = torch.exp(run_max - new_max)
    p = torch.exp(logits - new_max) * valid  # masked entries contribute exactly 0
    return new_max, denom * correction + p.sum(dim=-1, keepdim=True), numer * correction + p @ values


class NystromAttention(nn.Module):
    """Multi-head self-attention over a bag of patches: Nyström for bags larger than ``num_landmarks``
    (``mode="auto"``), exact SDPA for smaller ones; ``mode="exact"`` / ``"nystrom"`` force a kind."""

    def __init__(
        self,
        dim: int,
        *,
        heads: int = 8,
        num_landmarks: int = 256,
        pinv_iterations: int = 6,
        mode: str = "auto",
        dropout: float = 0.0,
        chunk_size: int = PATCH_CHUNK_SIZE,
    ) -> None:
        super().__init__()
        if mode not in ("auto", "nystrom", "exact"):
            raise ValueError(f"mode: expected 'auto', 'nystrom' or 'exact', got {mode!r}")
        self.heads = heads
        self.num_landmarks = num_landmarks
        self.pinv_iterations = pinv_iterations
        self.mode = mode
        self.chunk_size = chunk_size
        self._logged: set[str] = set()  # kinds already announced at INFO (later forwards log at DEBUG)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)  # nystrom-attention / TransMIL: no qkv bias
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        return _split_heads(q, self.heads), _split_heads(k, self.heads), _split_heads(v, self.heads)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        *,
        norm: Callable[[Tensor], Tensor] | None = None,
        residual: bool = False,
    ) -> Tensor:
        """Attention of ``norm(x)``; with ``residual`` returns ``x + attention`` (eq. (1)).

        Args:
            x: (b, n, D) patch embeddings.
            mask: (b, n) bool, True for real patches; None when nothing is padded.
            norm: applied to x chunk by chunk (the LN of eq. (1)); identity when None.
            residual: add the attention to x. Without autograd this is done in place (x is overwritten),
                which keeps a 100k-patch bag at one copy of the embeddings.

        Returns:
            (b, n, D); padded rows get no attention (0, or x itself with ``residual``).
        """
        b, n, _ = x.shape
        norm = norm if norm is not None else (lambda t: t)
        mask = torch.ones(b, n, dtype=torch.bool, device=x.device) if mask is None else mask.bool()
        inplace = residual and not torch.is_grad_enabled()
        out = x if inplace else torch.zeros_like(x)
        lengths = mask.sum(dim=1).tolist()
        m = self.num_landmarks
        # "nystrom" still needs n >= m (m non-empty segments): smaller bags get exact attention, logged
        use_exact = [self.mode == "exact" or n_i < m or (self.mode == "auto" and n_i == m) for n_i in lengths]
        self._log_choice(lengths, use_exact)
        # Small bags: exact attention on the bag's own patches (a Python loop: they are cheap).
        for i in (i for i, e in enumerate(use_exact) if e):
            idx = mask[i].nonzero().squeeze(1)
            xi = x[i, idx][None]  # (1, n_i, D)
            q, k, v = self._qkv(norm(xi))
            oi = self.to_out(_merge_heads(exact_attention(q, k, v)))[0]
            if inplace:
                out[i, idx] += oi.to(out.dtype)
            else:
                out = out.index_put((torch.full_like(idx, i), idx), oi.to(out.dtype))
        big = [i for i, e in enumerate(use_exact) if not e]
        if big:
            all_big = len(big) == b
            sel = None if all_big else torch.tensor(big, device=x.device)
            xb = x if all_big else x[sel]
            mb = mask if all_big else mask[sel]
            ob = self._nystrom_chunked(xb, mb, norm, out=xb if (inplace and all_big) else None)
            if inplace and not all_big:
                out[sel] += ob.to(out.dtype)
            elif not inplace:
                out = out.index_copy(0, sel, ob) if sel is not None else ob
        if residual and not inplace:
            return x + out
        return out

    def _log_choice(self, lengths: list[int], use_exact: list[bool]) -> None:
        """Say which attention each bag got (INFO the first time a kind is used, DEBUG afterwards)."""
        for kind in ("exact", "nystrom"):
            sizes = [n for n, e in zip(lengths, use_exact, strict=True) if e == (kind == "exact")]
            if not sizes:
                continue
            why = f"attention={self.mode!r}"
            if self.mode == "auto":
                rule = "<=" if kind == "exact" else ">"
                why += f": bags of {rule} {self.num_landmarks} patches (num_landmarks)"
            elif self.mode == "nystrom" and kind == "exact":
                why += f": Nyström needs >= {self.num_landmarks} patches (num_landmarks)"
            level = logging.DEBUG if kind in self._logged else logging.INFO
            self._logged.add(kind)
            log.log(
                level,
                "correlation self-attention: %s for %d bag(s) of %d-%d patches (%s)",
                kind,
                len(sizes),
                min(sizes),
                max(sizes),
                why,
            )

    def _nystrom_chunked(
        self, x: Tensor, mask: Tensor, norm: Callable[[Tensor], Tensor], *, out: Tensor | None
    ) -> Tensor:
        """Eq. (2) in three passes over chunks of n. ``out`` given: add the result into it in place."""
        b, n, dim = x.shape
        h, m, c = self.heads, self.num_landmarks, self.chunk_size
        d = dim // h
        scale = d**-0.5
        seg = landmark_segments(mask, m)
        w_q, w_k, w_v = self.to_qkv.weight.chunk(3, dim=0)
        # pass 1: landmarks. Segment means of q = W_q · (segment means of LN(x)) since the map is linear.
        sums: Tensor | None = None
        counts: Tensor | None = None
        for s in range(0, n, c):
            xs = norm(x[:, s : s + c])
            ps, pc = _segment_sums(xs.float(), seg[:, s : s + c], m)
            sums, counts = (ps, pc) if sums is None or counts is None else (sums + ps, counts + pc)
        if sums is None or counts is None:  # n == 0: rejected by the caller; keeps type checkers happy
            raise ValueError("empty bag")
        mean_x = (sums / counts.clamp(min=1)[..., None]).to(w_q.dtype)  # (b, m, D)
        q_l = _split_heads(F.linear(mean_x, w_q), h) * scale  # (b, h, m, d)
        k_l = _split_heads(F.linear(mean_x, w_k), h)
        kernel_2 = torch.softmax(q_l @ k_l.transpose(-1, -2), dim=-1)  # (b, h, m, m)
        # pass 2: softmax(Q~ K^T) V accumulated with an online softmax over n (never (m, n) for all n).
        state = (
            torch.full((b, h, m, 1), torch.finfo(torch.float32).min, device=x.device),
            torch.zeros(b, h, m, 1, device=x.device),
            torch.zeros(b, h, m, d, device=x.device),
        )
        for s in range(0, n, c):
            xs = norm(x[:, s : s + c])
            k_s = _split_heads(F.linear(xs, w_k), h)
            v_s = _split_heads(F.linear(xs, w_v), h)
            logits = (q_l @ k_s.transpose(-1, -2)).float()  # (b, h, m, c)
            state = _online_softmax_step(state, logits, mask[:, None, None, s : s + c], v_s.float())
        kernel_3_v = state[2] / state[1]  # (b, h, m, d)
        summary = iterative_pinv(kernel_2.float(), self.pinv_iterations) @ kernel_3_v  # (b, h, m, d)
        # pass 3: softmax(Q K~^T) · summary, chunk by chunk, straight into the output.
        chunks = []
        for s in range(0, n, c):
            xs = norm(x[:, s : s + c])
            q_s = _split_heads(F.linear(xs, w_q), h) * scale
            kernel_1 = torch.softmax(q_s @ k_l.transpose(-1, -2), dim=-1)  # (b, h, c, m)
            o = self.to_out(_merge_heads(kernel_1 @ summary.to(kernel_1.dtype)))  # (b, c, D)
            o = o * mask[:, s : s + c, None]
            if out is not None:
                out[:, s : s + c] += o.to(out.dtype)
            else:
                chunks.append(o)
        return out if out is not None else torch.cat(chunks, dim=1)
