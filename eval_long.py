"""
Long-context evaluation of a checkpoint, at context lengths up to and beyond its training length:

    python eval_long.py --out_dir=out-hybrid-long
    python eval_long.py --out_dir=out-hybrid-tiny --tasks=passkey,niah --lengths=256,1024,4096
    python eval_long.py --out_dir=out-recall/rnope_swa-s0     # trained with dataset='recall'

Tasks (--tasks, comma-separated):
  passkey  landmark attention's passkey: a number hidden in repeated filler, greedy decoding,
           exact match; a grid of lengths x depths (where in the context the needle sits, 0 =
           start, 1 = end)
  niah     needle in a haystack of real text: a "special magic number" sentence placed at a
           sentence boundary of a held-out document, substring match; lengths x depths, drawn as
           a heat map
  heldout  niah with a needle and a question in a format that training never uses (other words,
           and keys that are names; corpus.HELD_OUT_FORMAT): does retrieval generalise beyond the
           templates?
  binding  2 or 4 needles in one wording (heldout's), differing only in their keys, and a question
           for one of them: retrieval by key, not by wording; the share of answers that give the
           asked value, and of those that give another needle's
  ruler    RULER-style synthetic tasks: single needle, multi-key (with distractor needles),
           multi-value, multi-query, variable tracking, common-words extraction; score = fraction
           of the reference strings found in the output
  ppl      loss by position on held-out documents, up to the longest of --lengths:
           where the model stops extrapolating
  short    validation loss at the training length: long-context gains must not cost short-context
           quality

A checkpoint trained on associative recall (dataset='recall', see corpus.recall_batch) has one task:
  recall   per-query accuracy (argmax, teacher-forced, one forward pass) and exact match (every
           query of a sequence right) at 1, 2, 4, 8 and 16 x the training length, and accuracy by
           the depth of the asked pair in the haystack x length, drawn as a heat map

Prints one table per task and writes out_dir/eval_long.json (and PNGs when matplotlib is installed).
Every text prompt goes through the KV cache with chunked prefill, so a 32k-token evaluation fits in
CPU memory (a recall batch is one forward pass: its output layer is small); prompts are drawn from a
numpy Generator seeded with --seed, so every run sees the same ones.
"""

import copy
import dataclasses
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from common import have_matplotlib, load_model, output_dir, resolve_device, write_atomic
from configurator import configure, fail
from corpus import DATA, get_tokenizer, recall_batch
from model import GPT
from tasks import (PASSKEY_FILLER, RULER_TASKS, Haystack, binding_outcome, binding_prompt,
                   draw_heatmap, draw_ppl,
                   held_out_text, results_file, score, task_heldout, task_niah, task_passkey)

# -----------------------------------------------------------------------------
# Running a model

@torch.no_grad()
def answers(model, enc, prompts, max_new_tokens, prefill_chunk, values=None, rng=None):
    """The greedy continuations (strings) of prompts [(T,), ...] and, given each needle's value, the
    retrieval gains (else None). Each prompt is prefilled once, up to its last token; the gain's two
    teacher-forced answers continue from copies of that cache, and the greedy decoding from the
    cache itself."""
    device, dtype = model.lm_head.weight.device, model.lm_head.weight.dtype
    texts, gains = [], [] if values is not None else None
    for i, prompt in enumerate(prompts):
        x = torch.as_tensor(prompt[None], device=device)
        cache = model.new_cache(1, x.size(1) + max(max_new_tokens, 16), dtype, device)
        for chunk in x[:, :-1].split(prefill_chunk, dim=1):
            model.hidden(chunk, cache)
        if values is not None:
            gains.append(answer_gain(model, enc, cache, x[:, -1:], values[i], rng))
        new = torch.cat(list(model.stream(x[:, -1:], max_new_tokens, temperature=0, cache=cache)),
                        dim=1)
        texts.append(enc.decode(new[0].tolist()))
    return texts, gains


@torch.no_grad()
def token_losses(model, x, prefill_chunk):
    """Per-token cross-entropy (B, T-1) of x (B, T), chunk by chunk through the KV cache: the logits
    of only one chunk (chunk x 50k floats) exist at a time, never T x 50k."""
    cache = model.new_cache(x.size(0), x.size(1), model.lm_head.weight.dtype, x.device)
    out = []
    for inp, tgt in zip(x[:, :-1].split(prefill_chunk, 1), x[:, 1:].split(prefill_chunk, 1)):
        logits = model.lm_head(model.hidden(inp, cache)).float()
        out.append(F.cross_entropy(logits.transpose(1, 2), tgt, reduction='none'))
    return torch.cat(out, dim=1)



@torch.no_grad()
def answer_gain(model, enc, cache, last, value, rng):
    """Retrieval gain in nats: how much likelier the model finds the needle's value than another
    number with as many digits, right after the prompt: NLL(other) - NLL(value), both
    teacher-forced. About 0 when the needle is not used, positive when it is: finer than exact
    match, for models too small or too briefly trained to answer outright. cache holds the prompt
    but its last token, last (1, 1); both answers continue from copies of it, so the cache itself is
    left as it was."""
    other = value
    while other == value:
        other = str(rng.integers(10 ** (len(value) - 1), 10 ** len(value)))
    nll = []
    for v in (value, other):
        ans = torch.tensor([enc.encode_ordinary(' ' + v)], device=last.device)
        hs = model.hidden(torch.cat([last, ans[:, :-1]], dim=1),
                          copy.deepcopy(cache))  # the states that predict each answer token
        nll.append(F.cross_entropy(model.lm_head(hs)[0].float(), ans[0], reduction='sum').item())
    return nll[1] - nll[0]


def grid(model, enc, task, hays, lengths, depths, samples, rng, prefill_chunk, exact=False,
         gain=False, desc=''):
    """Mean score of `samples` prompts in every (length, depth) cell, {length: {depth: score}}, and
    with gain=True the mean retrieval gain of the same prompts in the same form (else None)."""
    scores, gains = {}, {} if gain else None
    with tqdm(total=len(lengths) * len(depths), desc=desc, disable=None, leave=False) as bar:
        for L in lengths:
            scores[L] = {}
            if gain:
                gains[L] = {}
            for d in depths:
                bar.update(1)
                try:
                    made = [task(enc, hays, L, d, rng) for _ in range(samples)]
                except ValueError:  # the task's needles and question do not fit in L tokens
                    scores[L][d] = None
                    if gain:
                        gains[L][d] = None
                    continue
                texts, g = answers(model, enc, [m[0] for m in made], made[0][3], prefill_chunk,
                                   [m[1][0] for m in made] if gain else None, rng)
                scores[L][d] = float(np.mean([score(t, m[1], exact) for t, m in zip(texts, made)]))
                if gain:
                    gains[L][d] = float(np.mean(g))
    return scores, gains


@torch.no_grad()
def recall_scores(model, length, pairs, samples, rng, depths, batch_tokens=2 ** 16):
    """Associative recall at one length: per-query accuracy, exact match (all `pairs` answers of a
    sequence right) and the accuracy by depth {depth bin: accuracy}, over `samples` fresh sequences,
    in batches of up to 32 sequences and about batch_tokens tokens. A pair's depth is where its key
    sits in the haystack, 0 = right after BOS, 1 = just before QUERY; bins start at `depths` ([0,
    0.2, ...]). Teacher-forced: the answer to each query is the argmax at its key, from one forward
    pass over the batch, with no KV cache. The output layer is small (130 tokens) and no attention
    kernel holds a T x T matrix, so memory grows only linearly with the batch's tokens. (Through the
    cache in chunks, each 'N' layer needed a chunk x keys mask, and the same pass took about twice
    as long.)"""
    H = length - 2 * pairs - 2
    asked = torch.arange(H + 2, length, 2)  # positions of the asked keys
    batch = max(1, min(32, batch_tokens // length))
    right, depth = [], []
    for at in range(0, samples, batch):
        x, y, where = recall_batch(rng, min(batch, samples - at), length, pairs)
        x = torch.as_tensor(x, device=model.lm_head.weight.device)
        logits = model.lm_head(model.hidden(x)[:, asked])
        right.append(logits.argmax(-1).cpu().numpy() == y[:, asked.numpy()])
        depth.append((where - 1) / max(1, H - 2))
    right, depth = np.concatenate(right), np.concatenate(depth)
    bins = np.searchsorted(depths, depth, side='right') - 1
    return dict(accuracy=float(right.mean()), exact=float(right.all(1).mean()),
                by_depth={d: float(right[bins == i].mean()) if (bins == i).any() else None
                          for i, d in enumerate(depths)})


def mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def cell(v, width):
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.2f}"


def print_grid(title, table):
    depths = list(next(iter(table.values())))
    print(f"\n{title} (rows: context length; columns: needle depth)")
    print(f"{'length':>8} " + ' '.join(f"{d:>6}" for d in depths) + '    mean')
    for L, row in table.items():
        cells = ' '.join(cell(row[d], 6) for d in depths)
        print(f"{L:>8} {cells}  {cell(mean(row.values()), 6)}")


def plot_heatmap(table, title, path, xlabel='needle depth'):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(1 + 0.7 * len(next(iter(table.values()))),
                                    1 + 0.45 * len(table)))
    draw_heatmap(ax, table, title, xlabel)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_ppl(curves, block_size, path):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    draw_ppl(ax, curves, block_size)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def with_nope_temperature(model, beta, floor):
    """The same model, weights unchanged, with the 'N' layers' temperature set to (beta, floor): the
    inference-time log-scaling of SWAN-GPT and Scalable-Softmax, given to a model trained without
    it."""
    new = GPT(dataclasses.replace(model.config, nope_temperature=beta,
                                  nope_temperature_floor=floor))
    new.load_state_dict(model.state_dict())
    return new.to(model.lm_head.weight).eval()  # the device and dtype of the model


# -----------------------------------------------------------------------------

if __name__ == '__main__':
    out_dir = ''              # the checkpoint (out_dir/ckpt.pt) and where results go; '' =
                              # out-hybrid-long
    init_from = ''            # a transformers checkpoint instead (hub name or folder); results in
                              # out-<name>
    tasks = ''                # comma-separated; '' = every task of the checkpoint's kind (see
                              # above)
    lengths: '[1, inf)' = ()              # prompt lengths in tokens (--lengths=512,2048); () =
                                          # `multiples` of the training length
    multiples: '(0, inf)' = ()            # lengths as multiples of the training length; () = 0.5,
                                          # 1, 2, 4 (text), 1 to 16 (recall)
    depths: '[0, 1]' = (0.0, 0.25, 0.5, 0.75, 1.0)  # where the needle sits: 0 = the start of the
                                                    # context, 1 = the end
    samples: '[1, inf)' = 4               # prompts per grid cell, and per RULER task and length
    binding_needles: '[2, inf)' = (2, 4)  # binding: needles in one wording, one row each
    binding_samples: '[1, inf)' = 20      # binding: prompts per row and length
    gain = True               # also the retrieval gain (answer log-likelihoods) of passkey and niah
                              # prompts
    ppl_windows: '[1, inf)' = 16          # windows of held-out text for the loss by position
    ppl_buckets: '[1, inf)' = 16          # position buckets of the loss-by-position curve
                                          # (log-spaced)
    short_windows: '[1, inf)' = 64        # windows of the training length for the short-context
                                          # loss
    dataset = ''              # held-out documents for niah/ppl/short; '' = the checkpoint's dataset
    seed: '[0, inf)' = 1234
    device = 'auto'
    dtype = 'float32'
    prefill_chunk: '[1, inf)' = 1024
    recall_pairs: '[0, 64]' = (0,)        # recall: key-value pairs per sequence, one evaluation
                                          # each (--recall_pairs=8,64); 0 = as many as in training
    recall_samples: '[1, inf)' = 256      # recall: sequences per length...
    recall_tokens: '[1, inf)' = 2 ** 19   # ...but no more than about this many tokens: fewer
                                          # sequences at long lengths
    nope_temperature: '[0, inf)' = None   # None: the model's own; else the 'N' layers' beta of
                                          # Llama 4's temperature (model.py) at evaluation only,
                                          # with nope_temperature_floor: inference-time
    nope_temperature_floor: '[1, inf)' = None  # log-scaling of a model trained without it (None:
                                               # the model's own)
    recall_bins: '[1, inf)' = 10          # recall: depth bins of the heat map
    plots = True              # PNGs (niah, ppl, recall), with matplotlib (an optional extra)
    configure(globals())
    sys.stdout.reconfigure(line_buffering=True)  # every line as it is printed, also into a file or
                                                 # a pipe
    t_start = time.time()

    def took(what):
        return f"{what} took {time.time() - t_start:.0f} s since the start"

    if not all(type(L) is int and L > 0 for L in lengths) or not all(0 <= d <= 1 for d in depths):
        fail(f"lengths={lengths} must be positive integers and depths={depths} numbers in [0, 1], "
             f"e.g. --lengths=512,2048")
    device, ptdtype = resolve_device(device, dtype)
    out_dir = output_dir(out_dir, init_from)
    model, checkpoint = load_model(out_dir, device, ptdtype, init_from)
    os.makedirs(out_dir, exist_ok=True)
    temperature = None  # the model's own; or (beta, floor) given at evaluation
    if nope_temperature is not None or nope_temperature_floor is not None:
        beta = model.config.nope_temperature if nope_temperature is None else nope_temperature
        temperature = (beta, nope_temperature_floor or model.config.nope_temperature_floor)
        model = with_nope_temperature(model, *temperature)
    T = checkpoint['model_args']['block_size']
    recall = checkpoint['config'].get('dataset') == 'recall'
    known = (['recall'] if recall
             else ['passkey', 'niah', 'heldout', 'binding', 'ruler', 'ppl', 'short'])
    wanted = [t for t in tasks.split(',') if t] or known
    if set(wanted) - set(known):
        fail(f"tasks={tasks!r}: a {'recall' if recall else 'text'} checkpoint has the tasks "
             f"{','.join(known)}")

    if recall:  # a model trained on associative recall: nothing else applies
        pair_counts = [p or checkpoint['config']['recall_pairs'] for p in recall_pairs]
        L_list = list(lengths) or [round(m * T) for m in multiples or (1, 2, 4, 8, 16)]
        n_seqs = {L: min(recall_samples, max(1, recall_tokens // L)) for L in L_list}
        bins = [round(i / recall_bins, 3) for i in range(recall_bins)]
        print(f"{out_dir}: layers {model.config.layer_kinds()}, window "
              f"{model.config.sliding_window}, "
              f"rope_theta {model.config.rope_theta:g}, qk_norm {model.config.qk_norm}, "
              f"nope_temperature {model.config.nope_temperature:g} (floor "
              f"{model.config.nope_temperature_floor}); "
              f"trained at {T} tokens; recall with {', '.join(map(str, pair_counts))} pairs at "
              f"{L_list}, {', '.join(str(n) for n in n_seqs.values())} sequences", flush=True)
        results = dict(out_dir=out_dir, block_size=T, lengths=L_list, pairs=pair_counts,
                       samples=n_seqs, seed=seed,
                       nope_temperature=[model.config.nope_temperature,
                                         model.config.nope_temperature_floor],
                       recall={}, recall_depth={})
        for pairs in pair_counts:
            scores = {}
            for L in tqdm(L_list, desc=f'recall, {pairs} pairs', disable=None, leave=False):
                try:
                    scores[L] = recall_scores(model, L, pairs, n_seqs[L],
                                              np.random.default_rng(seed + L), bins)
                except ValueError as e:  # too many pairs for this length: the cell is '-'
                    scores[L], too_many = None, e
            if not any(scores.values()):
                fail(f"{too_many}: lower --recall_pairs or raise --lengths")
            results['recall'][pairs] = {L: dict(accuracy=s and s['accuracy'],
                                                exact=s and s['exact']) for L, s in scores.items()}
            results['recall_depth'][pairs] = {L: s['by_depth'] for L, s in scores.items() if s}
            print(f"\nassociative recall, {pairs} pairs, teacher-forced (rows: context length, x "
                  f"training length; - = the pairs do not fit)")
            print(f"{'length':>8} {'x':>4} {'accuracy':>9} {'exact':>7}")
            for L, s in scores.items():
                shown = f"{s['accuracy']:>9.3f} {s['exact']:>7.3f}" if s else f"{'-':>9} {'-':>7}"
                print(f"{L:>8} {L / T:>4g} {shown}")
            print_grid(f'recall accuracy by depth of the asked pair (0 = start of the haystack), '
                       f'{pairs} pairs', results['recall_depth'][pairs])
            print(took(f'recall with {pairs} pairs'))
        path = os.path.join(out_dir, results_file(temperature))
        write_atomic(path, lambda tmp: json.dump(results, open(tmp, 'w'), indent=1))
        print(f"\nwrote {path}")
        path = os.path.join(out_dir, 'recall_depth.png')
        if plots and have_matplotlib(path):
            plot_heatmap(results['recall_depth'][pair_counts[0]],
                         f"recall accuracy: {model.config.layer_kinds()}",
                         path, xlabel='depth of the asked pair')
            print(f"wrote {path}")
        sys.exit(0)
    L_list = list(lengths) or [round(m * T) for m in multiples or (0.5, 1, 2, 4)]
    D_list = list(depths)
    dataset = dataset or checkpoint['config'].get('dataset', 'shakespeare')
    enc = get_tokenizer(checkpoint['tokenizer'])
    if not os.path.exists(os.path.join(DATA, dataset, 'meta.json')):
        fail(f"dataset {dataset!r} not found in {DATA}: run python prepare_data.py (it makes "
             f"data/shakespeare)")
    # each task its own generator: its prompts do not depend on the others
    rng = lambda: np.random.default_rng(seed)
    grass = enc.encode_ordinary(PASSKEY_FILLER * (max(L_list) // 4 + 100))
    hays = dict(grass=Haystack(enc, grass), text=Haystack(enc, held_out_text(dataset, enc)))
    if len(hays['text'].tokens) <= max(L_list) + 1:
        fail(f"the held-out text of {dataset!r} holds {len(hays['text'].tokens):,} tokens, fewer "
             f"than --lengths asks for: lower --lengths")
    print(f"{out_dir}: layers {model.config.layer_kinds()}, window {model.config.sliding_window}, "
          f"rope_theta {model.config.rope_theta:g}, qk_norm {model.config.qk_norm}, trained at {T} "
          f"tokens; evaluating at {L_list}")
    results = dict(out_dir=out_dir, block_size=T, lengths=L_list, depths=D_list, samples=samples,
                   seed=seed)

    if 'passkey' in wanted:
        results['passkey'], results['passkey_gain'] = grid(
            model, enc, task_passkey, hays, L_list, D_list, samples, rng(), prefill_chunk,
            exact=True, gain=gain, desc='passkey')
        print_grid('passkey retrieval, exact match', results['passkey'])
        print(took('passkey'))
    if 'niah' in wanted:
        results['niah'], results['niah_gain'] = grid(
            model, enc, task_niah, hays, L_list, D_list, samples, rng(), prefill_chunk, gain=gain,
            desc='niah')
        print_grid('needle in a haystack (held-out text), substring match', results['niah'])
        print(took('niah'))
    if 'heldout' in wanted:
        results['heldout'], results['heldout_gain'] = grid(
            model, enc, task_heldout, hays, L_list, D_list, samples, rng(), prefill_chunk,
            gain=gain, desc='heldout')
        print_grid('needle in a format training never uses (held-out text), substring match',
                   results['heldout'])
        print(took('heldout'))
    # binding: needles at random depths; one column per length, one row per number of needles
    if 'binding' in wanted:
        results['binding'], results['binding_samples'] = {}, binding_samples
        for k in binding_needles:
            gen = np.random.default_rng([seed, k])  # each number of needles its own draws
            prompts = {L: [binding_prompt(enc, hays, L, k, gen) for _ in range(binding_samples)]
                       for L in L_list}
            results['binding'][k] = {}
            for L in tqdm(L_list, desc=f'binding, {k} needles', disable=None, leave=False):
                texts, _ = answers(model, enc, [p[0] for p in prompts[L]], 8, prefill_chunk)
                outcomes = [binding_outcome(t, p[1]) for t, p in zip(texts, prompts[L])]
                results['binding'][k][L] = {o: outcomes.count(o) / len(outcomes)
                                            for o in ('asked', 'other')}
        print(f"\nbinding: 2 or more needles in one wording (the held-out one, held-out keys), one "
              f"asked for; the asked needle's value / another needle's, {binding_samples} "
              f"prompts a cell")
        print(f"{'needles':>8} " + ' '.join(f"{L:>11}" for L in L_list))
        for k, row in results['binding'].items():
            cells = ' '.join(f"{row[L]['asked']:>6.2f}/{row[L]['other']:.2f}" for L in L_list)
            print(f"{k:>8} {cells}")
        print(took('binding'))
    for task in ('passkey', 'niah', 'heldout'):
        if results.get(f'{task}_gain'):
            print_grid(f'{task}: retrieval gain, NLL(another number) - NLL(the needle\'s), nats',
                       results[f'{task}_gain'])
    if 'ruler' in wanted:  # needles at random depths: one column per length
        results['ruler'] = {}
        for name, fn in RULER_TASKS.items():
            table = grid(model, enc, fn, hays, L_list, [0.5], samples, rng(), prefill_chunk,
                         desc=name)[0]
            results['ruler'][name] = {L: row[0.5] for L, row in table.items()}
        print("\nRULER-style tasks, fraction of references found (rows: task; columns: context "
              "length; - = does not fit)")
        print(f"{'task':>10} " + ' '.join(f"{L:>7}" for L in L_list))
        for name, row in results['ruler'].items():
            print(f"{name:>10} " + ' '.join(cell(row[L], 7) for L in L_list))
        print(took('ruler'))

    if 'ppl' in wanted:
        # Windows of the longest length at random starts in the held-out text: the loss at position
        # p is the loss with p tokens of context. A causal model's loss at p does not depend on
        # later tokens, so one pass over the longest length gives every shorter length's mean too.
        val, Lmax = hays['text'].tokens, max(L_list)
        starts = rng().integers(0, len(val) - Lmax, ppl_windows)
        x = torch.as_tensor(np.stack([val[s:s + Lmax + 1] for s in starts]), device=device)
        losses = torch.cat([token_losses(model, row[None], prefill_chunk)
                            for row in tqdm(x, desc='ppl', disable=None, leave=False)]).mean(0)
        edges = np.unique(np.geomspace(1, Lmax, ppl_buckets + 1).astype(int))
        results['ppl'] = dict(windows=ppl_windows,
                              by_length={L: losses[:L].mean().item() for L in L_list},
                              buckets=[[int(a), int(b), losses[a - 1:b - 1].mean().item()]
                                       for a, b in zip(edges, edges[1:])])
        print(f"\nloss by position over {ppl_windows} windows of held-out text (nats/token)")
        print('   mean over the first L tokens: '
              + ', '.join(f"{L}: {v:.3f}" for L, v in results['ppl']['by_length'].items()))
        print('   by position: '
              + ', '.join(f"[{a},{b}) {v:.2f}" for a, b, v in results['ppl']['buckets']))
        print(took('ppl'))
    if 'short' in wanted:
        val = hays['text'].tokens
        starts = rng().integers(0, len(val) - T - 1, short_windows)
        x = torch.as_tensor(np.stack([val[s:s + T + 1] for s in starts]), device=device)
        rows = max(1, 4096 // min(T, prefill_chunk))  # windows per pass: logits of <= 4096 tokens
        results['short_val_loss'] = torch.cat([token_losses(model, b, prefill_chunk)
                                               for b in x.split(rows)]).mean().item()
        print(f"\nshort context: validation loss at the training length {T}: "
              f"{results['short_val_loss']:.4f}")
        print(took('short'))

    path = os.path.join(out_dir, results_file(temperature))
    write_atomic(path, lambda tmp: json.dump(results, open(tmp, 'w'), indent=1))
    print(f"\nwrote {path}")
    pngs = [os.path.join(out_dir, png)
            for task, png in (('niah', 'niah.png'), ('ppl', 'ppl_by_position.png'))
            if task in results]
    if plots and pngs and have_matplotlib(' and '.join(pngs)):
        if 'niah' in results:
            plot_heatmap(results['niah'], f"needle in a haystack: {model.config.layer_kinds()}",
                         pngs[0])
        if 'ppl' in results:
            plot_ppl({model.config.layer_kinds(): results['ppl']['buckets']}, T, pngs[-1])
        print(f"wrote {' and '.join(pngs)}")
