"""
The paper's attention analysis, on any checkpoint: on needle-in-a-haystack prompts, where do the
question and answer tokens look?

    python analyze_attention.py --out_dir=out-hybrid-long
    python analyze_attention.py --out_dir=out-hybrid-tiny --lengths=512,2048 --samples=8
    python analyze_attention.py --out_dir=out-hybrid-long --needles=2   # asked needle vs another

For every layer, and averaged over the layers of each kind ('S', 'R', 'N'), over heads, query rows
and prompts:
  mass      the share of attention from the final query positions (the question and the answer,
            teacher-forced) on four segments of the keys: begin (the first `sink` tokens, where
            attention sinks form), needle, context (the rest of the haystack), and question+answer
            itself. The four sum to 1. The paper's finding: NoPE layers put the most mass on the
            needle and carry the sink; RoPE layers look locally; QK-Norm spreads attention thin.
            With --needles=K, K needles in one wording differ only in their key (eval_long.py's
            binding task), the one row is the question's last token (it predicts the answer), and
            'other needles' is a fifth segment: retrieval by key puts the mass on the asked needle.
  entropy   of those attention distributions, in nats (log of the number of keys = uniform)
  distance  mean attention weight per key at each distance (log-spaced buckets), leaving out the
            first `sink` tokens: how local a layer is

Only the query rows analysed are scored against the keys ((rows, T) per head), never T x T.
Prints tables, writes out_dir/attention.json, and out_dir/attention_distance.png with matplotlib
(attention_needles<K>.json and attention_distance_needles<K>.png with --needles=K, K > 1).
"""

import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from common import have_matplotlib, load_model, output_dir, resolve_device, write_atomic
from configurator import configure, fail
from corpus import DATA, get_tokenizer, recall_batch
from model import attention_weights, visible
from tasks import (NEEDLE, QUESTION, RULER_INTRO, Haystack, binding_prompt, draw_distance,
                   haystack_prompt, held_out_text, random_keys, random_number)

# what the keys of a prompt are: a needle prompt's; with several needles, one asked; a recall
# sequence's, per query
SEGMENTS = ('begin', 'needle', 'context', 'question')
BINDING_SEGMENTS = ('begin', 'needle', 'other needles', 'context', 'question')
RECALL_SEGMENTS = ('begin', 'pair', 'other pairs', 'filler', 'query')


def needle_prompt(enc, hay, length, rng, needles=1):
    """A needle-in-a-haystack prompt: tokens (length,), the needles' (start, end) spans (the asked
    needle's first), where the question begins, and the first query row analysed. One needle:
    RULER's magic number, its answer appended, and the rows are the question and the answer. More:
    eval_long.py's binding prompt, every needle in one wording and only the keys differing, and the
    one row is the question's last token, which predicts the answer's first: there the asked key
    must be matched (later rows could copy the rest of the answer from its first token)."""
    if needles > 1:
        tokens, _, spans, question = binding_prompt(enc, dict(text=hay), length, needles, rng)
        return tokens, spans, length - len(enc.encode_ordinary('\n' + question)), length - 1
    key, value = random_keys(rng, 1)[0], random_number(rng)
    answer = enc.encode_ordinary(f" {value}.")
    question = QUESTION.format(key=key)
    needle = NEEDLE.format(key=key, value=value)
    tokens, spans = haystack_prompt(enc, hay, length - len(answer), [rng.random()], [needle],
                                    RULER_INTRO, question, rng)
    q_start = len(tokens) - len(enc.encode_ordinary('\n' + question))
    return np.concatenate([tokens, answer]), spans, q_start, q_start


@torch.no_grad()
def layer_inputs(model, idx):
    """The normalised input x (B, T, C) of every layer's attention, from one forward pass."""
    inputs = []
    hooks = [block.attn.register_forward_pre_hook(lambda mod, args: inputs.append(args[0]))
             for block in model.transformer.h]
    try:
        model.hidden(idx)
    finally:
        for h in hooks:
            h.remove()
    return inputs


@torch.no_grad()
def attention_rows(attn, x, rows, cos, sin):
    """Attention weights (B, nh, len(rows), T) of the query rows of one layer, with the layer's own
    projections, norms, RoPE (or none) and window: softmax(q k^T / sqrt(hd)) over visible keys."""
    pos = torch.arange(x.size(1), device=x.device)
    q, k, _ = attn.project(x, pos, cos, sin)  # (B, nh, T, hd), (B, nkv, T, hd)
    return attention_weights(q[:, :, rows].float(), k.float(), visible(pos[rows], pos, attn.window))


def bucket_edges(T):
    """Log-spaced distance buckets [1, 2), [2, 4), ... up to T."""
    return [0, 1] + [2 ** i for i in range(1, max(1, math.ceil(math.log2(T))) + 1)]


def needle_batch(prompts, names, sink, device):
    """Needle prompts of one length T as analyze() takes them: token ids (B, T), the query rows
    (R,), and the segment of every key (B, 1, T) as an index into names (SEGMENTS, or
    BINDING_SEGMENTS where the prompts have several needles), the same for every row of a prompt."""
    T = len(prompts[0][0])
    idx = torch.as_tensor(np.stack([p[0] for p in prompts]), device=device)
    rows = torch.arange(min(p[3] for p in prompts), T, device=device)
    seg = torch.full((len(prompts), 1, T), names.index('context'), device=device)
    for b, (_, spans, qs, _) in enumerate(prompts):
        for i, (n0, n1) in enumerate(spans):
            seg[b, :, n0:n1] = names.index('other needles' if i else 'needle')
        seg[b, :, qs:] = names.index('question')
    seg[:, :, :sink] = names.index('begin')
    return idx, rows, seg


def recall_batch_segments(rng, n, length, pairs, device):
    """n associative-recall sequences as analyze() takes them: token ids (n, T), the query rows (the
    asked keys, (pairs,)), and the segment of every key for every row (n, pairs, T): 'pair' is the
    asked pair's key and value in the haystack, 'other pairs' the rest of the pairs, 'query' the
    QUERY marker and what follows."""
    x, _, where = recall_batch(rng, n, length, pairs)
    H = length - 2 * pairs - 2
    seg = torch.full((n, pairs, length), RECALL_SEGMENTS.index('filler'), device=device)
    b, j = np.arange(n)[:, None], np.arange(pairs)[None, :]
    for offset in (0, 1):  # every pair's key and value, for every row ...
        every = torch.as_tensor(where[:, None, :] + offset)
        seg[b[:, :, None], j[:, :, None], every] = RECALL_SEGMENTS.index('other pairs')
    for offset in (0, 1):  # ... then, for each row, its own pair
        seg[b, j, torch.as_tensor(where + offset)] = RECALL_SEGMENTS.index('pair')
    seg[:, :, H + 1:] = RECALL_SEGMENTS.index('query')
    seg[:, :, 0] = RECALL_SEGMENTS.index('begin')
    return torch.as_tensor(x, device=device), torch.arange(H + 2, length, 2, device=device), seg


def analyze(model, idx, rows, seg, names, sink):
    """Per layer: mean attention mass on each segment, mean entropy and the distance profile. idx
    (B, T) token ids; rows (R,) the query positions analysed; seg (B, 1 or R, T) the segment of
    every key (an index into names), per row; the first `sink` keys are left out of the distance
    profile."""
    B, T = idx.shape
    device = idx.device
    onehot = F.one_hot(seg.expand(B, len(rows), T), len(names)).float()  # (B, R, T, S)
    dist = rows[:, None] - torch.arange(T, device=device)[None, :]  # (R, T): query - key position
    edges = bucket_edges(T)
    # the bucket of each (row, key)
    which = torch.bucketize(dist, torch.tensor(edges[1:], device=device), right=True)
    which[:, :sink] = -1                                                     # the sink is left out
    cos, sin = model.rope(0, T, device)
    out = []
    for block, x in zip(model.transformer.h, layer_inputs(model, idx)):
        w = attention_rows(block.attn, x, rows, cos, sin)                     # (B, nh, R, T)
        mass = torch.einsum('bhrt,brts->s', w, onehot) / (w.shape[0] * w.shape[1] * w.shape[2])
        entropy = -(w * w.clamp_min(1e-30).log()).sum(-1).mean()
        per_key = w.mean(dim=(0, 1))  # (R, T): each key's mean weight
        profile = []
        for i, (lo, hi) in enumerate(zip(edges, edges[1:])):
            sel = (which == i) & (dist >= 0)
            if sel.any():
                profile.append([lo, hi, per_key[sel].mean().item()])
        out.append(dict(kind=block.attn.kind, mass=dict(zip(names, mass.tolist())),
                        entropy=entropy.item(), distance=profile))
    return out


def by_kind(layers):
    """The per-layer results averaged over the layers of each kind."""
    kinds, names = {}, list(layers[0]['mass'])
    for layer in layers:
        kinds.setdefault(layer['kind'], []).append(layer)
    return {k: dict(layers=len(ls),
                    mass={s: float(np.mean([l['mass'][s] for l in ls])) for s in names},
                    entropy=float(np.mean([l['entropy'] for l in ls])))
            for k, ls in kinds.items()}


def print_table(title, rows):
    names = list(rows[0][1]['mass'])
    print(f"\n{title}")
    print(f"{'':>9} " + ' '.join(f"{s:>11}" for s in names) + f" {'entropy':>9}")
    for name, r in rows:
        masses = ' '.join(f"{r['mass'][s]:>11.3f}" for s in names)
        print(f"{name:>9} {masses} {r['entropy']:>9.3f}", flush=True)


def plot_distance(results, path):
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 3.3), squeeze=False)
    for ax, (L, res) in zip(axes[0], results.items()):
        draw_distance(ax, res['layers'], f"context {L:,}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == '__main__':
    out_dir = ''              # the checkpoint (out_dir/ckpt.pt) and where results go;
                              # '' = out-hybrid-long
    init_from = ''            # a transformers checkpoint instead (hub name or folder); results in
                              # out-<name>
    lengths: '[1, inf)' = ()              # prompt lengths in tokens (--lengths=512,2048); () = the
                                          # training length and 4 x it
    samples: '[1, inf)' = 4               # prompts per length (their needles at random depths)
    needles: '[1, inf)' = 1               # 1: a magic-number needle; more: that many in one
                                          # wording, one asked (eval_long.py's binding task): does
                                          # the asked key's needle win?
    sink: '[0, inf)' = 10                 # the first tokens, counted as the 'begin' segment
    dataset = ''              # haystack text; '' = the checkpoint's dataset (held-out documents)
    seed: '[0, inf)' = 1234
    device = 'auto'
    dtype = 'float32'
    recall_pairs: '[0, 64]' = 0           # a recall checkpoint: pairs per sequence; 0 = as many as
                                          # in training
    recall_samples: '[1, inf)' = 32       # a recall checkpoint: sequences per length
    plots = True
    configure(globals())

    device, ptdtype = resolve_device(device, dtype)
    out_dir = output_dir(out_dir, init_from)
    model, checkpoint = load_model(out_dir, device, ptdtype, init_from)
    os.makedirs(out_dir, exist_ok=True)
    T = checkpoint['model_args']['block_size']
    L_list = list(lengths) or [T, 4 * T]
    if not all(type(L) is int for L in L_list):
        fail(f"lengths={lengths} must be integers, e.g. --lengths=512,2048")
    recall = checkpoint['config'].get('dataset') == 'recall'
    rng = np.random.default_rng(seed)
    if recall:  # associative recall: the query rows are the asked keys, each with its own pair
        pairs, sink = recall_pairs or checkpoint['config']['recall_pairs'], 1
        try:
            make = {L: recall_batch_segments(rng, recall_samples, L, pairs, device) for L in L_list}
        except ValueError as e:
            fail(f"{e}: lower --recall_pairs or raise --lengths")
        names, rows_are = RECALL_SEGMENTS, f'the asked keys ({pairs} pairs)'
    else:
        dataset = dataset or checkpoint['config'].get('dataset', 'shakespeare')
        if not os.path.exists(os.path.join(DATA, dataset, 'meta.json')):
            fail(f"dataset {dataset!r} not found in {DATA}: run python prepare_data.py (it makes "
                 f"data/shakespeare)")
        enc = get_tokenizer(checkpoint['tokenizer'])
        hay = Haystack(enc, held_out_text(dataset, enc))
        if len(hay.tokens) < max(L_list) or min(L_list) < 4 * sink + 100:
            fail(f"lengths={L_list} must lie between {4 * sink + 100} and the held-out text's "
                 f"{len(hay.tokens):,} tokens")
        names = BINDING_SEGMENTS if needles > 1 else SEGMENTS
        try:
            make = {L: needle_batch([needle_prompt(enc, hay, L, rng, needles)
                                     for _ in range(samples)], names, sink, device)
                    for L in L_list}
        except ValueError as e:  # short tokens (an imported model's tokenizer) make longer needles
            fail(f"{e}: raise --lengths")
        rows_are = ('the question+answer rows' if needles == 1
                    else f"the question's last row ({needles} needles in one wording, one asked)")
    print(f"{out_dir}: layers {model.config.layer_kinds()}, window {model.config.sliding_window}, "
          f"qk_norm {model.config.qk_norm}, trained at {T} tokens", flush=True)

    results = {}
    for L in tqdm(L_list, desc='lengths', disable=None, leave=False):
        layers = analyze(model, *make[L], names, sink)
        results[L] = dict(layers=layers, kinds=by_kind(layers))
        print_table(f"context {L:,}: attention mass of {rows_are}, and entropy (nats), per layer",
                    [(f"{i} {l['kind']}", l) for i, l in enumerate(layers)])
        print_table("  averaged by layer kind",
                    [(f"'{k}' x{r['layers']}", r) for k, r in results[L]['kinds'].items()])
    suffix = f'_needles{needles}' if needles > 1 else ''
    path = os.path.join(out_dir, f'attention{suffix}.json')
    saved = dict(out_dir=out_dir, block_size=T, samples=samples, sink=sink, seed=seed,
                 results=results)
    write_atomic(path, lambda tmp: json.dump(saved, open(tmp, 'w'), indent=1))
    print(f"\nwrote {path}")
    path = os.path.join(out_dir, f'attention_distance{suffix}.png')
    if plots and have_matplotlib(path):
        plot_distance(results, path)
        print(f"wrote {path}")
