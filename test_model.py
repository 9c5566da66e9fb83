"""Tests of the properties the architecture promises. Run: python -m pytest -q
Every fast attention path is compared with the plain reference (explicit softmax over an
explicit mask), and every positional claim (causality, window reach, NoPE's blindness to
order, RoPE's relativity) is checked on the model itself."""

import copy
import glob
import os

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import kernels
from common import flops_per_token
from configurator import configure, read_config
from kernels import ChunkedCrossEntropy, compiled_decode_step, mm_as_reduction, sliding_window_flex
from model import (GPT, GPTConfig, KVCache, attend, reference_attention, sliding_window_blocked,
                   visible)
from conftest import HERE, script_settings

pytestmark = pytest.mark.filterwarnings('ignore:flex_attention called without '
                                        'torch.compile')  # eager on CPU

V = 97  # a small vocabulary keeps the tests fast


def make(pattern='SSSN', n_layer=4, seed=0, **kw):
    args = dict(block_size=32, vocab_size=V, n_layer=n_layer, n_head=4, n_kv_head=2, n_embd=32,
                sliding_window=8, layer_pattern=pattern)
    args.update(kw)
    torch.manual_seed(seed)
    return GPT(GPTConfig(**args)).eval()


def with_reference(model):
    """The same weights, attention computed by the reference path."""
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if hasattr(m, 'impl'):
            m.impl = 'reference'
    return ref


def tokens(T, seed=1, B=2):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# --- every path agrees with the reference ------------------------------------

@pytest.mark.parametrize('pattern', ['R', 'S', 'N', 'SSSN', 'RRRN'])
@pytest.mark.parametrize('qk_norm', [False, True])
def test_model_matches_reference_outputs_and_gradients(pattern, qk_norm):
    model = make(pattern, qk_norm=qk_norm).train()
    ref = with_reference(model).train()
    # 45 > block_size and not a multiple of the window (8)
    idx, targets = tokens(45), tokens(45, seed=2)
    torch.testing.assert_close(model(idx)[0], ref(idx)[0], atol=1e-5, rtol=1e-5)
    loss, ref_loss = model(idx, targets)[1], ref(idx, targets)[1]
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    loss.backward()
    ref_loss.backward()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize('T', [8, 13, 24, 64, 70])
@pytest.mark.parametrize('window', [1, 8])
def test_blocked_and_flex_sliding_window_match_reference(T, window):
    torch.manual_seed(T)
    q = torch.randn(2, 4, T, 16, requires_grad=True)
    k = torch.randn(2, 2, T, 16, requires_grad=True)
    v = torch.randn(2, 2, T, 16, requires_grad=True)
    pos = torch.arange(T)
    ref = reference_attention(q, k, v, visible(pos, pos, window))
    blocked = sliding_window_blocked(q, k, v, window)
    torch.testing.assert_close(blocked, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (q, k, v), g)
    blocked_grads = torch.autograd.grad(blocked, (q, k, v), g)
    for a, b in zip(blocked_grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # FlexAttention (the CUDA path) has no CPU backward; its mask is checked forward
    with torch.no_grad():
        flex = sliding_window_flex(q.detach(), k.detach(), v.detach(), window)
        torch.testing.assert_close(flex, ref, atol=1e-5, rtol=1e-5)


def test_cached_chunks_match_reference():
    """Chunked prefill through the ring buffer: keys of each chunk come from cache + chunk."""
    torch.manual_seed(0)
    B, T, W = 1, 29, 6
    q, k, v = torch.randn(B, 4, T, 8), torch.randn(B, 2, T, 8), torch.randn(B, 2, T, 8)
    pos = torch.arange(T)
    for window, cap in [(W, W), (None, T)]:
        ref = reference_attention(q, k, v, visible(pos, pos, window))
        cache = KVCache(B, 2, 8, cap, torch.float32, 'cpu', window)
        outs, p0 = [], 0
        for C in [1, 4, 9, 1, 1, 7, 6]:  # chunks smaller and larger than the window
            kc, vc, kpos = cache.update(k[:, :, p0:p0 + C], v[:, :, p0:p0 + C], pos[p0:p0 + C])
            outs.append(attend(q[:, :, p0:p0 + C], kc, vc, pos[p0:p0 + C], kpos, window))
            p0 += C
            cache.seen = p0
        torch.testing.assert_close(torch.cat(outs, 2), ref, atol=1e-5, rtol=1e-5)


def test_an_undersized_cache_is_refused():
    """A full-attention cache (or a window cache smaller than its window) that would wrap is
    refused, rather than silently turned into a sliding window."""
    k = torch.randn(1, 2, 5, 8)
    for window, cap in [(None, 4), (8, 4)]:
        cache = KVCache(1, 2, 8, cap, torch.float32, 'cpu', window)
        with pytest.raises(ValueError, match='cannot hold'):
            cache.update(k, k, torch.arange(5))
    model = make('SSSN')
    with pytest.raises(ValueError, match='cannot hold'):
        next(model.stream(tokens(10, B=1), 5, cache=model.new_cache(1, 12, torch.float32, 'cpu')))
    assert len(list(model.stream(tokens(10, B=1), 3,
                                 cache=model.new_cache(1, 12, torch.float32, 'cpu')))) == 3


# --- positional properties -----------------------------------------------------

@pytest.mark.parametrize('pattern', ['R', 'S', 'N', 'SSSN'])
def test_causal(pattern):
    model = make(pattern)
    idx = tokens(40)
    t = 25
    changed = idx.clone()
    changed[:, t + 1:] = (changed[:, t + 1:] + 1) % V
    a, _ = model(idx)
    b, _ = model(changed)
    torch.testing.assert_close(a[:, :t + 1], b[:, :t + 1], atol=1e-6, rtol=0)
    # the change is visible where it should be
    assert (a[:, t + 1:] - b[:, t + 1:]).abs().max() > 1e-4


@pytest.mark.parametrize('attention', ['auto', 'reference'])
def test_sliding_window_reach(attention):
    model = make('S', n_layer=1, attention=attention)
    W, t = model.config.sliding_window, 30
    idx = tokens(40, B=1)
    base, _ = model(idx)

    def output_at_t_after_changing(j):
        changed = idx.clone()
        changed[0, j] = (changed[0, j] + 1) % V
        return model(changed)[0][0, t]

    torch.testing.assert_close(output_at_t_after_changing(t - W), base[0, t], atol=1e-6, rtol=0)
    assert (output_at_t_after_changing(t - W + 1) - base[0, t]).abs().max() > 1e-4


def test_nope_is_blind_to_order_and_rope_is_not():
    t = 20
    idx = tokens(t + 1, B=1)
    perm = torch.randperm(t, generator=torch.Generator().manual_seed(3))
    shuffled = torch.cat([idx[:, :t][:, perm], idx[:, t:]], dim=1)
    nope, rope = make('N', n_layer=1), make('R', n_layer=1)
    torch.testing.assert_close(nope(shuffled)[0][0, t], nope(idx)[0][0, t], atol=1e-5, rtol=1e-5)
    assert (rope(shuffled)[0][0, t] - rope(idx)[0][0, t]).abs().max() > 1e-4


def test_rope_scores_depend_only_on_relative_position():
    model = make('R', n_layer=1, n_kv_head=4)
    attn = model.transformer.h[0].attn
    x = torch.randn(1, 10, 32)
    q = attn.q_proj(x).view(1, 10, 4, 8).transpose(1, 2)
    k = attn.k_proj(x).view(1, 10, 4, 8).transpose(1, 2)
    from model import apply_rope

    def scores(q0, k0):
        """q at positions q0..q0+9, k at k0..k0+9: rotated scores (1, 4, 10, 10)."""
        qr = apply_rope(q, *model.rope(q0, 10, x.device))
        return qr @ apply_rope(k, *model.rope(k0, 10, x.device)).transpose(-2, -1)

    # both moved: the same
    torch.testing.assert_close(scores(0, 0), scores(1000, 1000), atol=1e-4, rtol=1e-4)
    # same offset: the same
    torch.testing.assert_close(scores(5, 0), scores(1005, 1000), atol=1e-4, rtol=1e-4)
    # another offset: changed
    assert (scores(5, 0) - scores(0, 0)).abs().max() > 1e-2


def test_the_rope_table_grows_only_with_the_positions_asked_for():
    """Asked again for the same positions, with the device as a tensor's or as a string, the table
    keeps its size (a string once made it double at every call, 2**n rows after n calls)."""
    model = make('R', n_layer=1)
    for device in (torch.device('cpu'), 'cpu', 'cpu', torch.device('cpu')):
        model.rope(0, 10, device)
    n = model.rope_cache[0]
    assert n == model.config.block_size
    model.rope(0, n + 1, 'cpu')  # longer: doubled
    assert model.rope_cache[0] == 2 * n


@pytest.mark.parametrize('qk_norm', [True, False])
def test_qk_norm_makes_output_invariant_to_qk_scale(qk_norm):
    model = make('SSSN', qk_norm=qk_norm)
    idx = tokens(20)
    before, _ = model(idx)
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.q_proj.weight.mul_(20.0)
            block.attn.k_proj.weight.mul_(5.0)
    after, _ = model(idx)
    if qk_norm:  # exact but for the norm's epsilon and rounding
        torch.testing.assert_close(after, before, atol=5e-5, rtol=1e-4)
    else:  # without the norm the attention logits scale by 100: the same change is visible
        assert (after - before).abs().max() > 1e-3


# --- shapes, lengths, generation ---------------------------------------------

def test_gqa_shapes_and_long_inputs():
    model = make('SSSN', n_head=4, n_kv_head=1)
    attn = model.transformer.h[0].attn
    assert attn.q_proj.weight.shape == (32, 32) and attn.k_proj.weight.shape == (8, 32)
    assert attn.v_proj.weight.shape == (8, 32)
    idx = tokens(3 * model.config.block_size + 5)  # far beyond block_size
    (logits, _), (no_logits, loss) = model(idx), model(idx, idx)
    assert logits.shape == (2, idx.size(1), V) and no_logits is None and torch.isfinite(loss)
    cache = model.new_cache(2, 100, torch.float32, 'cpu')
    caps = [c.k.shape[2] for c in cache]
    assert caps == [8, 8, 8, 100]  # 'S' layers hold their window only
    assert cache[0].k.shape[1] == 1  # one k/v head under GQA


def greedy_by_recomputation(model, idx, n):
    for _ in range(n):
        logits, _ = model(idx)
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


@pytest.mark.parametrize('pattern', ['SSSN', 'R', 'N'])
def test_cached_hidden_states_equal_full_forward(pattern):
    """Feeding a sequence through the KV cache in uneven chunks (1, 3, 20, ...) gives the
    hidden states of one full forward pass, at every position, past block_size."""
    model = make(pattern)
    idx = tokens(70)
    cache = model.new_cache(2, 70, torch.float32, 'cpu')
    parts, p0 = [], 0
    for C in [1, 3, 20, 1, 1, 9, 2, 33]:
        parts.append(model.hidden(idx[:, p0:p0 + C], cache))
        p0 += C
    torch.testing.assert_close(torch.cat(parts, 1), model.hidden(idx), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('pattern,chunk',
                         [('SSSN', 5), ('SSSN', 1024), ('R', 7), ('N', 3), ('RRRN', 16)])
def test_cached_generate_equals_recomputation(pattern, chunk):
    model = make(pattern, qk_norm=pattern == 'RRRN')
    prompt = tokens(19)  # longer than the window (8)
    n = 30               # 19 + 30 runs past block_size (32)
    out = model.generate(prompt, n, temperature=0, prefill_chunk=chunk)
    assert torch.equal(out, greedy_by_recomputation(model, prompt, n))


def test_sampling_respects_top_k():
    model = make()
    torch.manual_seed(0)
    out = model.generate(tokens(5), 20, temperature=1.0, top_k=1)
    assert torch.equal(out, model.generate(tokens(5), 20, temperature=0))  # top_k=1 is greedy


# --- configuration and accounting --------------------------------------------

@pytest.mark.parametrize('bad', ['', 'SSXN', 'rope'])
def test_bad_layer_pattern_is_a_clear_error(bad):
    with pytest.raises(ValueError, match='layer_pattern'):
        GPTConfig(layer_pattern=bad)


def test_layer_pattern_repeats_cyclically():
    assert GPTConfig(n_layer=6, layer_pattern='SSSN').layer_kinds() == 'SSSNSS'
    kinds = [b.attn.kind for b in make('SSSN', n_layer=8).transformer.h]
    assert ''.join(kinds) == 'SSSNSSSN'


def test_flops_count_visible_pairs_and_gqa():
    """The attention term counts exactly the (query, key) pairs the masks allow."""
    model = make('SSSN')
    cfg, T = model.config, 45
    pos = torch.arange(T)
    pairs = sum(int(visible(pos, pos, cfg.sliding_window if k == 'S' else None).sum())
                for k in cfg.layer_kinds())
    hd = cfg.n_embd // cfg.n_head
    N = sum(p.numel() for p in model.parameters() if p.dim() == 2)
    assert flops_per_token(model, T) == pytest.approx(6 * N + 12 * cfg.n_head * hd * pairs / T)
    # fewer k/v weights
    assert flops_per_token(make('SSSN', n_kv_head=1), T) < flops_per_token(model, T)
    assert flops_per_token(make('R'), T) > flops_per_token(model, T)                  # no windows


def test_config_files_are_train_settings_and_build_models():
    """Every config/*.py (found beside this file, whatever the working directory) holds only
    settings that train.py knows, within their ranges (configure() exits on anything else), and
    builds a model."""
    paths = sorted(glob.glob(os.path.join(HERE, 'config', '*.py')))
    assert len(paths) >= 10
    for path in paths:
        final = configure(script_settings('train.py'), [path])
        GPTConfig(**{k: v for k, v in final.items() if k in GPTConfig.__dataclass_fields__})


def test_a_config_overlay_changes_only_what_it_sets(tmp_path):
    (tmp_path / 'base.py').write_text("n_layer = 8\nlearning_rate = 2e-3\nlayer_pattern = 'SSSN'\n")
    (tmp_path / 'variant.py').write_text("include('base.py')\nlayer_pattern = 'R'\n")
    assert read_config(str(tmp_path / 'variant.py')) == dict(n_layer=8, learning_rate=2e-3,
                                                            layer_pattern='R')
    main = read_config(os.path.join(HERE, 'config', 'hybrid_long.py'))
    assert read_config(os.path.join(HERE, 'config', 'rope.py')) == dict(main, out_dir='out-rope',
                                                                        layer_pattern='R')
    (tmp_path / 'typo.py').write_text("include('base.py')\nlayer_patern = 'R'\n")
    with pytest.raises(SystemExit):
        configure(settings(), [str(tmp_path / 'typo.py')])


@pytest.mark.parametrize('scale', [1.0, 4.0])
def test_the_embedding_learns_at_its_own_rate(scale):
    """One AdamW step with embedding_lr_scale = s: the embedding's update is s times the update at
    one rate, its decay per step stays what it was, and every other parameter steps exactly as at
    one rate. A parameter in no group, or in two, would fail here too (the counts)."""
    lr, wd, x = 1e-2, 0.1, tokens(16)
    steps = []
    for s in (1.0, scale):
        model = make().train()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt = model.configure_optimizers(wd, lr, (0.9, 0.95), 'cpu', embedding_lr_scale=s)
        grouped = sorted(id(p) for g in opt.param_groups for p in g['params'])
        assert grouped == sorted(map(id, model.parameters()))
        model(x, x)[1].backward()
        opt.step()
        steps.append({n: p.detach() - before[n] for n, p in model.named_parameters()})
    emb = 'transformer.wte.weight'
    w0 = make().transformer.wte.weight.detach()
    decay = -lr * wd * w0  # AdamW's decoupled decay, lr x weight_decay per step, at any scale
    torch.testing.assert_close(steps[1][emb] - decay, scale * (steps[0][emb] - decay))
    # the update itself is not negligible beside the decay
    assert (steps[0][emb] - decay).abs().max() > 1e-3
    for name in steps[0]:
        if name != emb:
            torch.testing.assert_close(steps[1][name], steps[0][name], rtol=0, atol=0)


# --- configurator ----------------------------------------------------------------

def settings():
    return dict(n_layer=4, learning_rate=1e-3, layer_pattern='SSSN', compile=False, n_kv_head=None)


def test_configurator_applies_files_and_overrides_in_order(tmp_path):
    cfg = tmp_path / 'c.py'
    cfg.write_text("n_layer = 8\nlayer_pattern = 'R' * 2\n")
    s = settings()
    final = configure(s, [str(cfg), '--learning_rate=3', '--layer_pattern=SN', '--compile=True',
                          '--n_kv_head=2'])
    assert s == final == dict(n_layer=8, learning_rate=3.0, layer_pattern='SN', compile=True,
                              n_kv_head=2)
    assert type(s['learning_rate']) is float


@pytest.mark.parametrize('argv,words', [
    (['--n_layers=3'], ["'n_layers'", "did you mean 'n_layer'"]),
    (['--n_layer=three'], ['n_layer', 'expects int', "'three'"]),
    (['--compile=yes'], ['compile', 'expects bool']),
    (['--n_layer'], ['--n_layer=VALUE']),
    ([os.path.join(HERE, 'config', 'hybrid_lnog.py')],
     ["hybrid_lnog.py' not found", "did you mean", "hybrid_long.py'"]), ])
def test_configurator_rejects_bad_input_in_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as exit:
        configure(settings(), argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('error: ')
    for w in words:
        assert w in err


def test_configurator_rejects_unknown_key_in_config_file(tmp_path, capsys):
    cfg = tmp_path / 'c.py'
    cfg.write_text("n_layer = 8\nlearning_rat = 0.1\n")
    with pytest.raises(SystemExit):
        configure(settings(), [str(cfg)])
    err = capsys.readouterr().err
    assert "'learning_rat'" in err and "did you mean 'learning_rate'" in err and str(cfg) in err


# --- the length-dependent NoPE temperature -----------------------------------------

def test_nope_temperature_matches_reference_in_every_path():
    """On: the fast paths (SDPA, blocked window, cached decoding) equal the reference path, and an
    'N' layer computes exactly softmax((s(p) q) k^T / sqrt(hd)) v with s(p) = 1 + beta *
    log(floor((p + 1) / floor) + 1)."""
    model = make('SSSN', nope_temperature=0.5, nope_temperature_floor=4).train()
    ref = with_reference(model).train()
    idx, targets = tokens(45), tokens(45, seed=2)
    torch.testing.assert_close(model(idx)[0], ref(idx)[0], atol=1e-5, rtol=1e-5)
    loss, ref_loss = model(idx, targets)[1], ref(idx, targets)[1]
    loss.backward()
    ref_loss.backward()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
    model.eval()
    assert torch.equal(model.generate(tokens(19), 30, temperature=0, prefill_chunk=5),
                       # the cached path, past block_size
                       greedy_by_recomputation(model, tokens(19), 30))
    attn = model.transformer.h[3].attn  # the 'N' layer, by hand
    x, pos = torch.randn(2, 45, 32), torch.arange(45)
    q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
    q, k, v = (t.view(2, 45, -1, 8).transpose(1, 2) for t in (q, k, v))
    s = 1 + 0.5 * torch.log(torch.floor((pos + 1) / 4) + 1)
    want = reference_attention(q * s[:, None], k, v, visible(pos, pos, None))
    got = attend(*attn.project(x, pos, *model.rope(0, 45, 'cpu')), pos, pos, None)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_nope_temperature_off_is_the_identity_and_on_touches_only_nope_layers():
    idx = tokens(40)
    for pattern in ('SSSN', 'N', 'S', 'R'):
        plain = make(pattern)(idx)[0]
        off = make(pattern, nope_temperature=0.0, nope_temperature_floor=4)
        assert torch.equal(off(idx)[0], plain)
        hot = make(pattern, nope_temperature=0.5, nope_temperature_floor=4)(idx)[0]
        if 'N' in pattern:
            assert (hot - plain).abs().max() > 1e-3
        else:
            assert torch.equal(hot, plain)


# --- the loss without the full logits --------------------------------------------------

@pytest.mark.parametrize('scored', ['all but 7', 'answers only'])
def test_chunked_loss_and_gradients_equal_the_plain_ones(scored, monkeypatch):
    """Ignored targets (-1) are left out, as F.cross_entropy's ignore_index does; with only a few
    rows scored (a retrieval sequence's answers) the output layer is computed for those rows alone,
    with the same loss and gradients."""
    monkeypatch.setattr(kernels, 'LOSS_CHUNK', V * 16)  # 16 tokens per chunk: 6 chunks of 90 tokens
    model = make('SSSN').train()
    idx, targets = tokens(45), tokens(45, seed=2)
    if scored == 'all but 7':
        targets[0, :7] = -1
    else:
        keep = torch.zeros_like(targets, dtype=torch.bool)
        # 7 rows, across chunk boundaries
        keep[0, [3, 4, 40]], keep[1, [15, 16, 17, 44]] = True, True
        targets[~keep] = -1
        h = model.hidden(idx).flatten(0, 1).detach()
        with FlopCounterMode(display=False) as flops:
            ChunkedCrossEntropy.apply(h, model.lm_head.weight.detach(), targets.flatten())
        # the logits of the 7 scored rows, no others
        assert flops.get_total_flops() == 2 * 7 * V * h.size(1)
    loss = model(idx, targets)[1]
    grads = torch.autograd.grad(loss, list(model.parameters()))
    logits = model(idx)[0]
    plain = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                              ignore_index=-1)
    torch.testing.assert_close(loss, plain, atol=1e-6, rtol=1e-6)
    for g, p in zip(grads, torch.autograd.grad(plain, list(model.parameters()))):
        torch.testing.assert_close(g, p, atol=1e-6, rtol=1e-5)


def test_chunked_loss_is_exact_when_the_target_probability_underflows(monkeypatch):
    """The chunked loss takes logsumexp from the largest probability (>= 1/V), never from the
    target's, so logits hundreds apart still give the exact, finite loss."""
    monkeypatch.setattr(kernels, 'LOSS_CHUNK', 64 * 4)  # 4 rows per chunk: 3 chunks
    torch.manual_seed(0)
    h, w, t = torch.randn(10, 8) * 30, torch.randn(64, 8) * 3, torch.randint(0, 64, (10,))
    # -log p(target) would be inf
    assert (torch.softmax(h @ w.t(), -1)[torch.arange(10), t] == 0).any()
    loss = ChunkedCrossEntropy.apply(h, w, t)
    exact = torch.nn.functional.cross_entropy(h.double() @ w.double().t(), t)
    assert exact > 100
    torch.testing.assert_close(loss.double(), exact, rtol=1e-5, atol=0)


def test_chunked_loss_under_bfloat16_autocast(monkeypatch):
    """The GPU training path: matmuls in bfloat16, sums and gradients in float32, close to the
    float32 loss."""
    monkeypatch.setattr(kernels, 'LOSS_CHUNK', 64 * 16)  # 16 rows per chunk: 4 chunks
    torch.manual_seed(0)
    h, w = torch.randn(50, 16, requires_grad=True), torch.randn(64, 16, requires_grad=True)
    t = torch.randint(0, 64, (50,))
    t[:5] = -1
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = ChunkedCrossEntropy.apply(h, w, t)
    plain = torch.nn.functional.cross_entropy(h @ w.t(), t, ignore_index=-1)
    # the matmuls did run in bfloat16
    assert loss.dtype == torch.float32 and (loss - plain).abs() > 1e-6
    torch.testing.assert_close(loss, plain, atol=0.05, rtol=0.01)
    for g, p in zip(torch.autograd.grad(loss, [h, w]), torch.autograd.grad(plain, [h, w])):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, p, atol=5e-3, rtol=0.05)


def largest_tensor_made_by(step):
    """The most elements of any tensor an operation creates while step() runs."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        most = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in (out if isinstance(out, (tuple, list)) else [out]):
                if isinstance(t, torch.Tensor):
                    Largest.most = max(Largest.most, t.numel())
            return out
    with Largest():
        step()
    return Largest.most


def test_training_memory_does_not_grow_with_tokens_times_vocabulary(monkeypatch):
    """The plain loss makes (tokens x vocab) logits, softmax and gradient; the chunked one never
    makes a tensor bigger than the weights, one chunk of logits or the activations, however many
    tokens and however large the vocabulary. (A chunk of 2**16 logits here, so that a batch's logits
    span many chunks.)"""
    monkeypatch.setattr(kernels, 'LOSS_CHUNK', 2 ** 16)
    for vocab, T in [(4096, 256), (4096, 1024), (16384, 1024)]:
        torch.manual_seed(0)
        model = GPT(GPTConfig(block_size=T, vocab_size=vocab, n_layer=2, n_head=2, n_embd=16,
                              layer_pattern='SN', sliding_window=16))
        idx = torch.randint(0, vocab, (2, T))
        bound = max(vocab * 16, 2 ** 16, 2 * T * 64)  # the embedding, one chunk, the MLP's
                                                      # activations
        largest = largest_tensor_made_by(lambda: model(idx, idx)[1].backward())
        assert largest <= bound < 2 * T * vocab

        def plain():
            F.cross_entropy(model(idx)[0].flatten(0, 1), idx.flatten()).backward()
        assert largest_tensor_made_by(plain) >= 2 * T * vocab  # what the test would catch


# --- the CUDA paths (run by .ci/gpu on a machine with a GPU; skipped elsewhere) --------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU (.ci/gpu runs '
                                                                'these)')


@cuda
@pytest.mark.parametrize('T,window', [(256, 64), (1000, 128), (4096, 1024)])
def test_compiled_flex_attention_matches_reference_on_cuda(T, window):
    """The 'S' layers' CUDA kernel, FlexAttention compiled with its block-sparse mask, forward and
    backward."""
    torch.manual_seed(T)
    q = torch.randn(2, 8, T, 64, device='cuda', requires_grad=True)
    k, v = (torch.randn(2, 2, T, 64, device='cuda', requires_grad=True) for _ in range(2))
    pos = torch.arange(T, device='cuda')
    ref = reference_attention(q, k, v, visible(pos, pos, window))
    got = attend(q, k, v, pos, pos, window)  # on CUDA: sliding_window_flex, compiled
    torch.testing.assert_close(got, ref, atol=2e-3, rtol=2e-3)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(got, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g)):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=2e-3)


@cuda
def test_sdpa_flash_kernel_matches_reference_on_cuda():
    """Full causal layers take SDPA's flash kernel on CUDA (bf16): forced here, so a fallback cannot
    hide it."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    torch.manual_seed(0)
    q = torch.randn(2, 8, 1024, 64, device='cuda', dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(2, 2, 1024, 64, device='cuda', dtype=torch.bfloat16, requires_grad=True)
            for _ in range(2))
    pos = torch.arange(1024, device='cuda')
    ref = reference_attention(q.float(), k.float(), v.float(), visible(pos, pos, None))
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        got = attend(q, k, v, pos, pos, None)
        got.float().sum().backward()
    torch.testing.assert_close(got.float(), ref, atol=2e-2, rtol=2e-2)
    assert q.grad is not None and torch.isfinite(q.grad).all()


@cuda
@pytest.mark.parametrize('pattern', ['SSSN', 'R', 'N'])
def test_model_on_cuda_matches_reference_and_decodes_like_recomputation(pattern):
    model = make(pattern, n_embd=64, n_head=4, sliding_window=16, block_size=64).cuda()
    ref = with_reference(model)
    idx = tokens(200).cuda()
    # float32, TF32 off by default
    torch.testing.assert_close(model(idx)[0], ref(idx)[0], atol=1e-3, rtol=1e-3)
    loss, ref_loss = model(idx, idx)[1], ref(idx, idx)[1]
    torch.testing.assert_close(loss, ref_loss, atol=1e-4, rtol=1e-4)
    assert torch.equal(model.generate(idx[:, :40], 40, temperature=0),
                       greedy_by_recomputation(ref, idx[:, :40], 40))


# --- the fixed-shape decoding step ----------------------------------------------------

def test_mm_as_reduction_is_the_matmul_for_a_few_rows_only():
    w = torch.randn(50, 24)  # a weight (out, in); F.linear multiplies by its transpose, a view
    for rows in (1, 8):
        a = torch.randn(rows, 24)
        assert torch.allclose(mm_as_reduction(a, w.t()), a @ w.t(), atol=1e-5)
    assert mm_as_reduction(torch.randn(9, 24), w.t()) is NotImplemented  # the usual matmul


def test_compiled_decode_step_on_the_cpu_calls_no_matmul_library():
    """The CPU's compiled step does its matmuls in Inductor's own loops (mm_as_reduction), not by
    library calls."""
    from torch._inductor.utils import run_and_get_code
    model = make('SSSN')
    cache = model.new_cache(1, 8, torch.float32, 'cpu')
    model.rope(0, 8, 'cpu')
    with torch.no_grad():
        _, code = run_and_get_code(compiled_decode_step(model), tokens(1, B=1), torch.tensor([0]),
                                   cache, model.lm_head.weight)
    assert 'cpp_fused' in code[0]
    assert not any(op in code[0] for op in ('.mm(', '.addmm(', '.bmm(', 'aten.mm'))


def test_decoding_keeps_each_cache_to_its_window():
    model = make('SSSN')
    cache = model.new_cache(2, 60, torch.float32, 'cpu')
    list(model.stream(tokens(19), 30, temperature=0, cache=cache))
    seen, W = 19 + 29, model.config.sliding_window  # the last token chosen is not fed back
    assert cache[0].seen == seen and cache[0].k.shape[2] == W
    # 'S': exactly the last W positions
    assert sorted(cache[0].pos.tolist()) == list(range(seen - W, seen))
    # 'N': all
    assert cache[3].pos[:seen].tolist() == list(range(seen)) and (cache[3].pos[seen:] == -1).all()


@pytest.mark.parametrize('pattern', ['SSSN', 'R'])
def test_compiled_decode_step_compiles_once_and_equals_recomputation(pattern):
    """The one-token step compiled: the tokens of recomputing the whole context, past block_size and
    the window, and not one recompilation as the position advances, nor for a second sequence of the
    same length (torch raises on any). A cache of another size is another shape, compiled anew."""
    import torch._dynamo
    model = make(pattern, nope_temperature=0.2, nope_temperature_floor=4)
    prompt = tokens(19)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with torch._dynamo.config.patch(error_on_recompile=True):
        out = model.generate(prompt, 30, temperature=0, compile=True)
        # a new cache of the same size
        again = model.generate(tokens(19, seed=5), 30, temperature=0, compile=True)
    assert torch.equal(out, greedy_by_recomputation(model, prompt, 30))
    assert torch.equal(again, greedy_by_recomputation(model, tokens(19, seed=5), 30))
    # one graph (or two where a break splits it)
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] <= 2
