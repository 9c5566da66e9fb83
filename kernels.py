""" Three compute paths beside model.py, each computing exactly what its plain form computes (the
tests hold them to it), only faster or in less memory:

  ChunkedCrossEntropy    the training loss without the logits of the whole batch (GPT.forward)
  compiled_decode_step   one decoded token through every layer, compiled once (GPT.stream)
  sliding_window_flex    an 'S' layer's sliding window as a block-sparse FlexAttention kernel on
                         CUDA (model.attend)
"""

from functools import lru_cache

import torch

try:  # FlexAttention (torch >= 2.5) runs the sliding window as a sparse kernel on CUDA
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:
    flex_attention = None

# -----------------------------------------------------------------------------
# The loss, without the logits of the whole batch

LOSS_CHUNK = 2 ** 25  # logits per chunk: 128 MiB in float32 (667 tokens of GPT-2's vocabulary)


class ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of the logits h @ weight^T against targets (-1 = no target), computed
    LOSS_CHUNK logits at a time, and only for the rows that have a target: a retrieval sequence
    scored on its answers alone costs the output layer a few rows, not all of them. The forward pass
    also computes both gradients, chunk by chunk, and keeps only them: they are the size of h (N, C)
    and of weight (V, C), never N x V. So memory no longer grows with tokens x vocabulary, and the
    work is that of the plain loss (each chunk's logits made once, used for the loss and the
    gradients). h (N, C), weight (V, C), targets (N,) -> a scalar."""

    @staticmethod
    def forward(ctx, h, weight, targets):
        rows = (targets >= 0).nonzero().squeeze(1)  # scored rows (on a GPU, the loss's one sync)
        N, V = len(rows), weight.size(0)
        chunk = max(1, LOSS_CHUNK // V)
        needs_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        # under autocast (bf16 on a GPU) the matmuls run in that type, and everything is summed in
        # float32
        dev = h.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else weight.dtype
        loss = torch.zeros((), device=h.device)
        grad_h = torch.zeros_like(h) if needs_grad else None  # unscored rows get no gradient
        grad_w = torch.zeros(weight.shape, device=weight.device) if needs_grad else None
        # two (chunk, V) buffers, made once and reused by every chunk: the logits, then their
        # softmax
        logits_buf = h.new_empty(min(chunk, N), V, dtype=dtype)
        probs_buf = h.new_empty(min(chunk, N), V, dtype=torch.float32)
        with torch.autocast(dev, enabled=False):
            w = weight.to(dtype)
            for r in rows.split(chunk):
                c, t = len(r), targets[r]
                hc = h[r].to(dtype)                                         # (c, C)
                logits = torch.mm(hc, w.t(), out=logits_buf[:c])         # (c, V): the only logits
                p = torch.softmax(logits, dim=-1, dtype=torch.float32, out=probs_buf[:c])
                # loss = logsumexp - the target's logit. The largest probability is exp(max -
                # logsumexp), so logsumexp = max - log(largest probability): two cheap row maxima
                # instead of a log-softmax pass and an exp pass over the (c, V) logits, and no
                # underflow (that probability is at least 1/V)
                lse = logits.amax(1).float() - p.amax(1).log()              # (c,)
                loss += (lse - logits.gather(1, t[:, None]).squeeze(1).float()).sum()
                # d loss / d logits = softmax - one_hot(target); the mean's 1/N comes in backward
                if needs_grad:
                    p[torch.arange(c, device=t.device), t] -= 1         # p becomes that gradient
                    grad_h[r] = (p.to(dtype) @ w).to(h.dtype)               # (c, C)
                    if dtype == grad_w.dtype:
                        grad_w.addmm_(p.t(), hc)                            # (V, C), in place
                    else:
                        grad_w += (p.t().to(dtype) @ hc).float()
        n = torch.tensor(max(N, 1), device=h.device)  # the mean is over scored positions
        ctx.save_for_backward(grad_h, grad_w, n)
        ctx.weight_dtype = weight.dtype
        return loss / n

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w, n = ctx.saved_tensors
        scale = grad_loss / n
        return grad_h * scale.to(grad_h.dtype), (grad_w * scale).to(ctx.weight_dtype), None


# -----------------------------------------------------------------------------
# Compiled decoding

def compiled_decode_step(model):
    """model.decode_step compiled once per model. On a GPU, under CUDA graphs: one launch per token
    instead of a few hundred. On a CPU, by Inductor, with each matmul of a few rows written as a
    multiply and a sum (mm_as_reduction)."""
    if getattr(model, '_compiled_step', None) is None:
        how = (dict(mode='reduce-overhead') if model.lm_head.weight.is_cuda
               else dict(backend=inductor_mm_as_reduction))
        model._compiled_step = torch.compile(model.decode_step, fullgraph=True, **how)
    return model._compiled_step


def mm_as_reduction(a, b):
    """aten.mm(a, b) for a of at most 8 rows (decoding: a row per sequence): a (M, K), b (K, N) ->
    (M, N), as sum_k a[m, k] * b[k, n]. Decoding is about 60 such matmuls per token, each a call
    into the math library, whose one-row path was several times slower for a transposed weight
    (nn.Linear's b) on the test machine's AMD CPU. Written as a multiply and a sum, each becomes a
    loop of Inductor's own C++, fused with the norms and activations around it, that reads the
    weight as stored; a token then took half the time (results/bench/README.md). With more rows the
    library wins (at 16 it did, at 8 the sum), so they keep it."""
    if a.size(0) <= 8:
        return (a.unsqueeze(2) * b.unsqueeze(0)).sum(dim=1)
    return NotImplemented


def inductor_mm_as_reduction(graph, example_inputs):
    """torch.compile's default backend (Inductor) with mm_as_reduction in its table of
    decompositions. (A table of our own keeps Inductor from caching the compiled code between runs:
    each run compiles anew.)"""
    from torch._inductor.compile_fx import compile_fx
    from torch._inductor.decomposition import select_decomp_table
    table = {**select_decomp_table(), torch.ops.aten.mm.default: mm_as_reduction}
    return compile_fx(graph, example_inputs, decompositions=table)


# -----------------------------------------------------------------------------
# The sliding window on CUDA

@lru_cache(maxsize=16)
def sliding_block_mask(T, window, device):
    """FlexAttention's block-sparse mask: it skips every 128x128 tile outside the band. Built once
    per (T, W)."""
    in_window = lambda b, h, q_idx, kv_idx: (kv_idx <= q_idx) & (q_idx - kv_idx < window)
    return create_block_mask(in_window, B=None, H=None, Q_LEN=T, KV_LEN=T, device=device)


@lru_cache(maxsize=1)
def compiled_flex_attention():
    """FlexAttention is fast only compiled into a fused kernel; compile it once, on first use."""
    return torch.compile(flex_attention, dynamic=False)


def sliding_window_flex(q, k, v, window):
    """model.sliding_window_blocked's window as a FlexAttention kernel (compiled on CUDA; eager
    elsewhere, for tests)."""
    fn = compiled_flex_attention() if q.is_cuda else flex_attention
    mask = sliding_block_mask(q.size(2), window, str(q.device))
    return fn(q, k, v, block_mask=mask, enable_gqa=True)
