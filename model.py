"""
The hybrid RoPE/NoPE transformer of "Rope to Nope and Back Again: A New Hybrid
Attention Strategy" (Cohere, 2025), in one file, read top to bottom.

Every layer is one of three kinds, chosen by one letter of `layer_pattern`:
  'R'  RoPE positions, full causal attention      (the usual modern LLM layer)
  'S'  RoPE positions, causal sliding-window attention over the last W keys
  'N'  NoPE: no positional encoding at all, full causal attention
'SSSN' (three windowed RoPE layers, then one NoPE layer) is the paper's RNoPE-SWA,
the design behind Command R7B and Command A. The RoPE layers see only a local
window, so they can only model recency; the NoPE layers see everything and, with
no position signal, retrieve by content alone. Three layers in four keep a
window-sized KV cache, which is where the memory and compute savings come from.

Shapes used in the comments: B batch, T sequence length, C n_embd, nh query heads,
nkv key/value heads (grouped-query attention), hd head dim = C // nh, W window.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# kernels.py: the loss without whole-batch logits, compiled decoding, and FlexAttention's sliding
# window (the CUDA path of attend; None before torch 2.5)
from kernels import ChunkedCrossEntropy, compiled_decode_step, flex_attention, sliding_window_flex


@dataclass
class GPTConfig:
    block_size: int = 1024       # training context length; not a limit: longer inputs work
    vocab_size: int = 50304      # GPT-2's 50257 padded up to a multiple of 64 for faster matmuls
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int = None        # grouped-query attention: heads sharing one k/v; None = n_head
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = False           # modern LLMs drop biases: slightly faster, no loss in quality
    layer_pattern: str = 'SSSN'  # one letter per layer, repeated cyclically over n_layer
    sliding_window: int = 256    # an 'S' layer's query i sees keys j with i - W < j <= i
    rope_theta: float = 10000.0  # RoPE base; the paper keeps 10k in the hybrid's RoPE layers
    qk_norm: bool = False        # RMSNorm on q and k (the paper's QK-Norm variant)
    # Llama 4's length-dependent temperature in 'N' layers: q is scaled by
    # 1 + beta * log(floor((pos + 1) / s) + 1), beta = nope_temperature (0 = off), s = the floor
    nope_temperature: float = 0.0
    nope_temperature_floor: int = 1
    attention: str = 'auto'      # 'auto': fast kernels; 'reference': explicit softmax (tests)
    # What imported models need (hub.py; the defaults are this repo's own design):
    mlp_hidden: int = None       # the SwiGLU's hidden width; None = 8/3 n_embd (see MLP)
    norm: str = 'rms'            # 'rms': RMSNorm (SmolLM3); 'layer': LayerNorm, no bias (Cohere)
    norm_eps: float = 1e-6       # the norms' epsilon: 1e-6 here and in SmolLM3, 1e-5 in Cohere2
    parallel_block: bool = False  # Cohere: x + attn(ln(x)) + mlp(ln(x)), one norm a layer (Block)
    logit_scale: float = 1.0     # Cohere multiplies its logits by a constant (its logit_scale)

    def __post_init__(self):
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if not self.layer_pattern or set(self.layer_pattern) - set('RSN'):
            raise ValueError(f"layer_pattern={self.layer_pattern!r} is invalid: use the letters R "
                             f"(RoPE, full), S (RoPE, sliding window) and N (NoPE, full): 'SSSN'")
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise ValueError(f"n_embd={self.n_embd} must split into n_head={self.n_head} heads of "
                             f"even size (RoPE rotates pairs)")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} must be a multiple of "
                             f"n_kv_head={self.n_kv_head}")
        if self.sliding_window < 1:
            raise ValueError(f"sliding_window={self.sliding_window} must be at least 1")
        if self.nope_temperature < 0 or self.nope_temperature_floor < 1:
            raise ValueError(f"nope_temperature={self.nope_temperature} must be >= 0 and "
                             f"nope_temperature_floor={self.nope_temperature_floor} >= 1")
        if self.attention not in ('auto', 'reference') or self.norm not in ('rms', 'layer'):
            raise ValueError(f"attention={self.attention!r} must be 'auto' or 'reference', "
                             f"norm={self.norm!r} 'rms' or 'layer'")

    def layer_kinds(self):
        """The letter of every layer: 'SSSN' over 8 layers -> 'SSSNSSSN'."""
        return ''.join(self.layer_pattern[i % len(self.layer_pattern)] for i in range(self.n_layer))


# -----------------------------------------------------------------------------
# Rotary position embedding (RoPE)
# Each pair of channels (x[i], x[i + hd/2]) of q and k is rotated by the angle pos * theta^(-2i/hd).
# The dot product of a rotated q at position m and a rotated k at position n then depends only on
# m - n: attention sees relative positions. Low i rotate fast (local detail); high i rotate slowly
# (long range, and poorly trained beyond the training length, one reason RoPE extrapolates badly).

def rope_tables(positions, head_dim, theta):
    """cos, sin of shape (T, hd/2) for the given absolute positions (T,)."""
    i = torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device)
    inv_freq = 1.0 / (theta ** (i / head_dim))
    angles = positions.float()[:, None] * inv_freq[None, :]  # (T, hd/2)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate x (B, n, T, hd) by the tables (T, hd/2): the 'rotate half' form of GPT-NeoX, Llama."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return out.type_as(x)


# -----------------------------------------------------------------------------
# Attention, by definition
# A query at absolute position i sees the key at position j when j <= i (causal) and, in a window of
# W, when i - W < j. Masks are described by these positions, never stored as T x T matrices on the
# hot paths. This rule and the explicit softmax below are the whole semantics; everything in the
# last part of the file is a faster way of computing the same thing, and the tests hold each of
# those paths to reference_attention (kernels.py holds three more).

def visible(q_pos, k_pos, window):
    """Boolean mask (Tq, Tk): True where the query may attend to the key (empty slots: k_pos -1)."""
    seen = (k_pos[None, :] <= q_pos[:, None]) & (k_pos[None, :] >= 0)
    if window is not None:
        seen &= k_pos[None, :] > q_pos[:, None] - window
    return seen


def attention_weights(q, k, mask):
    """softmax(q k^T / sqrt(hd) + mask): how much each query reads each key, every score made.
    q (B, nh, Tq, hd), k (B, nkv, Tk, hd), mask (Tq, Tk) of booleans (True = visible)
    -> (B, nh, Tq, Tk). GQA: each k head serves nh // nkv query heads."""
    k = k.repeat_interleave(q.size(1) // k.size(1), dim=1)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, nh, Tq, Tk)
    return scores.masked_fill(~mask, float('-inf')).softmax(dim=-1)


def reference_attention(q, k, v, mask):
    """The plain definition, which every fast path is tested against: attention_weights @ v.
    q (B, nh, Tq, hd), k and v (B, nkv, Tk, hd), mask (Tq, Tk) -> (B, nh, Tq, hd)."""
    return attention_weights(q, k, mask) @ v.repeat_interleave(q.size(1) // v.size(1), dim=1)


# -----------------------------------------------------------------------------
# The transformer

def Norm(dim, config):
    """RMSNorm: x / rms(x) * gain (learned, from 1): as good as LayerNorm, cheaper (no mean, no
    bias). LayerNorm (norm='layer') also subtracts the mean first."""
    if config.norm == 'layer':
        return nn.LayerNorm(dim, eps=config.norm_eps, bias=False)
    return nn.RMSNorm(dim, eps=config.norm_eps)


class CausalSelfAttention(nn.Module):

    def __init__(self, config, kind):
        super().__init__()
        self.kind = kind                      # 'R', 'S' or 'N'
        self.use_rope = kind in 'RS'          # NoPE layers get no position signal at all
        self.window = config.sliding_window if kind == 'S' else None
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        self.head_dim = config.n_embd // config.n_head
        self.impl = config.attention
        # q, k and v are three separate projections; k and v have fewer heads under GQA,
        # which shrinks the KV cache by n_head / n_kv_head.
        self.q_proj = nn.Linear(config.n_embd, self.n_head * self.head_dim, bias=config.bias)
        self.k_proj = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=config.bias)
        self.v_proj = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        # QK-Norm: normalise every q and k head vector to unit RMS (times a learned gain) before
        # RoPE. It bounds the attention logits, which stabilises training, but the paper finds it
        # also flattens attention over long contexts (higher entropy, less mass on the needle).
        self.q_norm = Norm(self.head_dim, config) if config.qk_norm else nn.Identity()
        self.k_norm = Norm(self.head_dim, config) if config.qk_norm else nn.Identity()
        # Length-dependent temperature (Llama 4's, for its NoPE layers): a NoPE query at position p
        # spreads its attention over p + 1 keys, so the softmax flattens as the context grows.
        # Scaling q by 1 + beta * log(floor((p + 1) / s) + 1) sharpens it again, roughly in step
        # with log(p), as SSMax's s * log(n) logits do. Off (beta = 0) by default, and only in 'N'
        # layers.
        self.temperature = ((config.nope_temperature, config.nope_temperature_floor) if kind == 'N'
                            else (0.0, 1))
        self.resid_dropout = nn.Dropout(config.dropout)

    def project(self, x, pos, cos, sin):
        """x (B, T, C) at positions pos (T,) -> q (B, nh, T, hd), k and v (B, nkv, T, hd),
        normalised, rotated and scaled as attention sees them (analyze_attention.py calls this too,
        to recompute attention weights)."""
        B, T, C = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.use_rope:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        beta, s = self.temperature
        if beta:  # scaling q scales every logit of its row: every attention path sees the same
            scale = 1 + beta * torch.log(torch.div(pos + 1, s, rounding_mode='floor') + 1.0)  # (T,)
            q = q * scale[:, None].to(q.dtype)
        return q, k, v

    def forward(self, x, pos, cos, sin, cache=None):
        # x (B, T, C); pos (T,) absolute positions; cos, sin (T, hd/2)
        B, T, C = x.shape
        q, k, v = self.project(x, pos, cos, sin)
        k_pos = pos
        if cache is not None:  # k, v: all that this layer's queries can see, (B, nkv, Tk, hd)
            k, v, k_pos = cache.update(k, v, pos)
        y = attend(q, k, v, pos, k_pos, self.window, self.impl)  # the one attention call
        y = y.transpose(1, 2).contiguous().view(B, T, C)           # re-assemble the heads
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)). Gated MLPs beat GELU at equal parameters; a hidden
    width of 8/3 C (rounded up to a multiple of 64) keeps the count equal to a 4C GELU MLP."""

    def __init__(self, config):
        super().__init__()
        hidden = config.mlp_hidden or 64 * math.ceil(8 * config.n_embd / 3 / 64)
        self.gate = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.up = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.silu(self.gate(x)) * self.up(x)))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x)). Normalising the
    branch inputs, not the residual stream, keeps a clean identity path and trains stably.
    Parallel (Cohere, GPT-J): x + attn(norm(x)) + mlp(norm(x)), both branches read one norm."""

    def __init__(self, config, kind):
        super().__init__()
        self.ln_1 = Norm(config.n_embd, config)
        self.attn = CausalSelfAttention(config, kind)
        self.ln_2 = None if config.parallel_block else Norm(config.n_embd, config)
        self.mlp = MLP(config)

    def forward(self, x, pos, cos, sin, cache=None):
        h = self.ln_1(x)
        if self.ln_2 is None:
            return x + self.attn(h, pos, cos, sin, cache) + self.mlp(h)
        x = x + self.attn(h, pos, cos, sin, cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # the only embedding: no positions
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, kind) for kind in config.layer_kinds()]),
            ln_f=Norm(config.n_embd, config),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # tied: saves V x C parameters, and trains as well at this scale
        self.transformer.wte.weight = self.lm_head.weight
        self.rope_cache = (0, None, None)  # (length, cos, sin), grown on demand for any T
        # Initialisation. Linear layers: std 1/sqrt(3 fan_in), the scale of PyTorch's default init,
        # so that every layer's output starts at the size of its input whatever the width. Token
        # embeddings: unit scale, N(0, 1), so that each position's own token dominates the residual
        # stream until the layers have learnt something worth adding. (With GPT-2's 0.02 everywhere,
        # the first attention layer's average over the context swamped each token's identity, and a
        # 4-layer model never learnt associative recall in 15,000 steps; with this init it does in
        # about 1,000: results/pilots/recall_pilots.md.) The embedding matrix is also the output
        # layer, so the final norm's gain starts at 1/sqrt(C): the first logits are of unit scale,
        # not sqrt(C).
        self.apply(self._init_weights)
        torch.nn.init.normal_(self.transformer.wte.weight, mean=0.0, std=1.0)
        torch.nn.init.constant_(self.transformer.ln_f.weight, config.n_embd ** -0.5)
        # Scaled residual init (GPT-2): each block adds two branches to the residual stream,
        # so shrink their output projections by 1/sqrt(2 n_layer) to keep its variance O(1) at init.
        for name, p in self.named_parameters():
            if name.endswith('c_proj.weight'):
                p.data.mul_((2 * config.n_layer) ** -0.5)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=(3 * module.in_features) ** -0.5)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)

    @classmethod
    def from_pretrained(cls, name_or_path, dtype=torch.float32, **settings):
        """A transformers checkpoint of SmolLM3 or Cohere2 (Command R7B, the paper's model), a hub
        name or a folder, as this GPT in `dtype`; settings: block_size, dropout. hub.py maps it."""
        from hub import load_pretrained  # machinery beside the model, which imports it
        return load_pretrained(name_or_path, dtype, **settings)

    def rope(self, p0, T, device):
        """cos, sin (T, hd/2) for positions p0..p0+T-1. The table grows (doubling) as longer inputs
        arrive; on another device it is made again, at its size."""
        n, cos, sin = self.rope_cache
        if p0 + T > n or cos.device != torch.device(device):  # torch.device: 'cpu' as well
            n = max(p0 + T, 2 * n if p0 + T > n else n, self.config.block_size)
            cfg = self.config
            cos, sin = rope_tables(torch.arange(n, device=device), cfg.n_embd // cfg.n_head,
                                   cfg.rope_theta)
            self.rope_cache = (n, cos, sin)
        return cos[p0:p0 + T], sin[p0:p0 + T]

    def hidden(self, idx, cache=None, pos=None):
        """The trunk: token ids (B, T) -> final normalised hidden states (B, T, C). With `cache`
        (one KVCache per layer), idx continues the sequence the cache holds. Given pos, the
        positions (T,) as a tensor (decode_step), the RoPE tables are indexed by it, and counting
        what the cache holds is left to the caller: no Python number here changes from one step to
        the next."""
        T = idx.size(1)
        if pos is None:
            p0 = cache[0].seen if cache is not None else 0
            pos = torch.arange(p0, p0 + T, device=idx.device)       # absolute positions (T,)
            cos, sin = self.rope(p0, T, idx.device)
            counted = cache
        else:
            cos, sin, counted = self.rope_cache[1][pos], self.rope_cache[2][pos], None
        x = self.transformer.drop(self.transformer.wte(idx))        # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            x = block(x, pos, cos, sin, None if cache is None else cache[i])
        for c in counted or ():
            c.seen += T
        # the logit scale, applied to what every head multiplies: the same as scaling the logits
        return self.transformer.ln_f(x) * self.config.logit_scale

    def decode_step(self, idx, pos, cache, head):
        """One token per sequence through every layer: idx (B, 1) at position pos, a (1,) tensor ->
        logits (B, vocab). Its shapes are the same at every position (whole cache buffers masked by
        position, the RoPE table indexed by a tensor), so torch.compile takes it once. The caller
        advances pos and the caches' `seen`. head: the output matrix (vocab, C), stored as suits the
        path (GPT.stream)."""
        return F.linear(self.hidden(idx, cache, pos)[:, -1], head).float()

    def forward(self, idx, targets=None):
        """idx (B, T) token ids, any T (block_size is not a limit). Without targets: (logits (B, T,
        vocab), None). With targets (B, T), -1 = ignored: (None, the mean cross-entropy). Only the
        loss: the logits of a training batch (2 x 2048 tokens x 50k vocabulary = 0.8 GB in float32)
        are never made in full."""
        h = self.hidden(idx)
        if targets is None:
            return self.lm_head(h), None
        return None, ChunkedCrossEntropy.apply(h.flatten(0, 1), self.lm_head.weight,
                                               targets.flatten())

    def new_cache(self, batch, max_len, dtype, device):
        """One KVCache per layer for sequences of up to max_len tokens: max_len slots for
        full-attention layers, only min(W, max_len) for sliding-window ones."""
        cfg = self.config
        return [KVCache(batch, cfg.n_kv_head, cfg.n_embd // cfg.n_head,
                        max_len if kind != 'S' else min(cfg.sliding_window, max_len), dtype, device,
                        cfg.sliding_window if kind == 'S' else None)
                for kind in cfg.layer_kinds()]

    @torch.no_grad()
    def stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, prefill_chunk=1024,
               cache=None, compile=False):
        """Continue idx (B, T) by max_new_tokens, yielding each new token (B, 1) as it is chosen.
        The whole context stays visible (never cropped). The prompt is prefilled `prefill_chunk`
        tokens at a time, so activations stay bounded for prompts of any length; then one token per
        step through the KV cache (decode_step; compiled once with compile=True). temperature=0
        means greedy (argmax)."""
        if cache is None:
            cache = self.new_cache(idx.size(0), idx.size(1) + max_new_tokens,
                                   self.lm_head.weight.dtype, idx.device)
        for c in cache:  # the last new token is returned, never cached
            c.check_room(c.seen + idx.size(1) + max_new_tokens - 1)
        self.rope(0, cache[0].seen + idx.size(1) + max_new_tokens, idx.device)  # long enough
        # Each token reads the whole (vocab, C) output matrix. Eager on the CPU, the library's
        # one-row matmul reads it several times faster stored (C, vocab), so keep a copy stored that
        # way while generating: .t() of that copy holds the same (vocab, C) values. (The compiled
        # step reads the matrix as it is.)
        head = self.lm_head.weight
        if head.device.type == 'cpu' and not compile:
            head = head.t().contiguous().t()
        for chunk in idx.split(prefill_chunk, dim=1):
            h = self.hidden(chunk, cache)
        logits = F.linear(h[:, -1, :], head).float()  # (B, vocab): only the last position is needed
        pos = torch.tensor([cache[0].seen], device=idx.device)
        for i in range(max_new_tokens):
            if temperature == 0:
                idx_next = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float('inf')
                idx_next = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            yield idx_next
            if i + 1 < max_new_tokens:
                step = compiled_decode_step(self) if compile else self.decode_step  # compiled once
                logits = step(idx_next, pos, cache, head)  # one new position through every layer
                pos = pos + 1
                for c in cache:
                    c.seen += 1

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, prefill_chunk=1024,
                 compile=False):
        """idx (B, T) followed by max_new_tokens generated tokens: (B, T + max_new_tokens)."""
        return torch.cat([idx, *self.stream(idx, max_new_tokens, temperature, top_k, prefill_chunk,
                                            compile=compile)], dim=1)

    # -------------------------------------------------------------------------
    # Training helper, in nanoGPT's manner (the FLOPs behind MFU: common.flops_per_token)

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type,
                             embedding_lr_scale=1.0):
        """AdamW, decay on matrices only. The embedding (also the output layer) starts at unit
        scale, other matrices near 1/sqrt(3 C): at one rate it moves ~20x less for its size, hence
        embedding_lr_scale (its decay per step kept)."""
        params, emb = [p for p in self.parameters() if p.requires_grad], self.transformer.wte.weight
        matrices = [p for p in params if p.dim() >= 2 and p is not emb]
        s, wd = embedding_lr_scale, weight_decay  # train.py sets a group's lr: schedule x lr_scale
        groups = [dict(params=[emb], lr=learning_rate * s, lr_scale=s, weight_decay=wd / s),
                  dict(params=matrices, lr_scale=1.0, weight_decay=wd),
                  dict(params=[p for p in params if p.dim() < 2], lr_scale=1.0, weight_decay=0.0)]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type == 'cuda')


# =============================================================================
# How it is made fast. Everything below computes what the reference above computes:
# `attend` picks a kernel for each case (training, prefill, decoding), KVCache keeps what
# decoding needs, and the loss never holds the logits of the whole batch.

def attend(q, k, v, q_pos, k_pos, window, impl='auto'):
    """Causal attention of queries at positions q_pos over keys at positions k_pos,
    limited to the last `window` keys when window is not None (an 'S' layer).
    q (B, nh, Tq, hd), k and v (B, nkv, Tk, hd), q_pos (Tq,), k_pos (Tk,) -> (B, nh, Tq, hd)."""
    Tq, Tk = q.size(2), k.size(2)
    if impl == 'reference':
        return reference_attention(q, k, v, visible(q_pos, k_pos, window))
    if Tq == Tk:  # no cache in play: queries and keys are the same positions
        if window is None or window >= Tq:  # a window as long as the input is full attention
            # the flash kernel on CUDA
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        if q.is_cuda and flex_attention is not None:
            return sliding_window_flex(q, k, v, window)
        return sliding_window_blocked(q, k, v, window)
    # decoding with a KV cache: Tq new queries over Tk cached + new keys, masked by position: (Tq,
    # Tk), chunk-sized, never T x T. (One decoded token attends over the whole buffer, empty slots
    # masked.) Decoding one token is bound by reading the cache, so read each k/v head once: fold
    # the query heads that share it (GQA) into query rows, (B, nh, 1, hd) -> (B, nkv, group, hd),
    # rather than let enable_gqa expand k and v to nh heads (2.3x faster per layer at 32k on the
    # CPU).
    mask = visible(q_pos, k_pos, window)
    if Tq == 1:
        B, nh, _, hd = q.shape
        q = q.reshape(B, k.size(1), nh // k.size(1), hd)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return y.view(B, nh, 1, hd)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)


def sliding_window_blocked(q, k, v, window):
    """Exact causal sliding-window attention in O(T * W), with no T x T mask.
    The visible (query, key) pairs form a band W wide along the diagonal. Cut the queries into
    blocks of Bq: block b's queries, positions bBq .. bBq+Bq-1, can only see keys from bBq-W+1 to
    bBq+Bq-1, so each block attends to the W + Bq keys ending with it (the box), through SDPA with
    one small (Bq, W + Bq) mask. Here W = 4, Bq = 2 (# visible, . in the box but masked):

                 key -4 -3 -2 -1  0  1  2  3  4  5
        query 0    .  .  .  .  #  .                 block 0: keys -4..1 (the negative ones: padding)
        query 1    .  .  .  .  #  #
        query 2          .  .  #  #  #  .           block 1: keys -2..3
        query 3          .  .  #  #  #  #
        query 4                .  #  #  #  #  .     block 2: keys 0..5
        query 5                .  .  #  #  #  #

    Smaller blocks waste less: a block scores W + Bq keys per query where W are needed; blocks of
    W would score 2W. Bq = W/4 (at least 16) keeps the blocks large enough for a fast kernel.
    q (B, nh, T, hd), k and v (B, nkv, T, hd) -> (B, nh, T, hd)."""
    B, nh, T, hd = q.shape
    W = window
    Bq = min(W, max(16, W // 4))
    nb = -(-T // Bq)     # number of query blocks, rounding up
    pad = nb * Bq - T    # pad the end so T divides into blocks (padded keys lie in the future)
    q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    k, v = (F.pad(t, (0, 0, W, 0)) for t in (k, v))  # W empty keys in front, for the first blocks
    # fold the blocks into the batch: SDPA's fused CPU kernel takes 4-D inputs (the math fallback is
    # 2x slower)
    qb = q.view(B, nh, nb, Bq, hd).transpose(1, 2).reshape(B * nb, nh, Bq, hd)
    kb, vb = (t.unfold(2, W + Bq, Bq).permute(0, 2, 1, 4, 3).reshape(B * nb, -1, W + Bq, hd)
              for t in (k, v))
    # local query a (position bBq + a) sees local key c (position bBq - W + c) when a < c <= a + W,
    # and only keys at positions >= 0 (the first W // Bq blocks reach into the empty front)
    a = torch.arange(Bq, device=q.device)[:, None]
    c = torch.arange(W + Bq, device=q.device)[None, :]
    b = torch.arange(nb, device=q.device)[:, None, None, None]
    mask = (c > a) & (c <= a + W) & (b * Bq - W + c >= 0)  # (nb, 1, Bq, W + Bq)
    y = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask.repeat(B, 1, 1, 1),
                                       enable_gqa=True)
    return y.view(B, nb, nh, Bq, hd).transpose(1, 2).reshape(B, nh, nb * Bq, hd)[:, :, :T]


class KVCache:
    """Keys and values of one layer during generation, stored as a ring buffer: the token at
    position p lives in slot p % capacity. Full-attention layers (window None) get a capacity of the
    whole sequence, so nothing is ever overwritten; 'S' layers get capacity W, so their memory stays
    W tokens however long the context grows. Once a ring has wrapped, its keys are not in position
    order. That is fine: attention is a weighted sum over a set of keys, each key carries its
    position (RoPE is applied before it is cached, and the mask is computed from self.pos), so the
    order of the slots changes nothing."""

    def __init__(self, batch, n_kv_head, head_dim, capacity, dtype, device, window=None):
        self.window = window  # None: a full-attention layer, which must never overwrite
        self.k = torch.zeros(batch, n_kv_head, capacity, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        # the position in each slot; -1 = empty
        self.pos = torch.full((capacity,), -1, dtype=torch.long, device=device)
        self.seen = 0  # tokens written so far

    def update(self, k, v, pos):
        """Add the keys/values (B, nkv, Tc, hd) of positions pos (Tc,), the Tc that follow the
        `seen` ones; return the keys, values and positions (Tk,) the new queries attend over."""
        cap, Tc, p0 = self.pos.numel(), k.size(2), self.seen  # GPT counts `seen`, after all layers
        if Tc == 1:
            # One decoded token: write it, then attend over the whole buffer. Its slot p % cap held
            # p - cap, which no query at p needs; empty slots (position -1) are masked by position.
            # Every shape is the same at every step and the position is a tensor, so a compiled
            # decoding step never recompiles.
            self._write(k, v, pos)
            return self.k, self.v, self.pos
        self.check_room(p0 + Tc)
        if p0 + Tc <= cap:  # a chunk that overwrites nothing: attend over the filled part, no copy
            self._write(k, v, pos)
            return self.k[:, :, :p0 + Tc], self.v[:, :, :p0 + Tc], self.pos[:p0 + Tc]
        # A chunk into a full ring: its early queries still need keys the chunk would overwrite,
        # so attend over old + new (at most W + Tc keys), then keep the last W.
        keys, values = torch.cat([self.k, k], 2), torch.cat([self.v, v], 2)
        positions = torch.cat([self.pos, pos])
        self._write(k[:, :, -cap:], v[:, :, -cap:], pos[-cap:])
        return keys, values, positions

    def check_room(self, n):
        """Refuse to hold n positions where wrapping the ring would lose keys that attention needs:
        in a full-attention cache, or a window cache smaller than its window. Silently, that would
        turn full attention into a sliding window. (Not checked per decoded token: GPT.stream checks
        once, up front, so that the compiled step reads no Python number that changes.)"""
        cap = self.pos.numel()
        if n > cap and (self.window is None or cap < self.window):
            raise ValueError(f"a KV cache of {cap} positions (window {self.window}) cannot hold "
                             f"{n}: allocate it with GPT.new_cache(batch, max_len) for all of them")

    def _write(self, k, v, pos):
        slots = pos % self.pos.numel()
        self.k.index_copy_(2, slots, k)
        self.v.index_copy_(2, slots, v)
        self.pos.index_copy_(0, slots, pos)

    def nbytes(self):
        return self.k.numel() * self.k.element_size() * 2
