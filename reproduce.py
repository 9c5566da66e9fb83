"""
The paper's ablation at toy scale, in one command per track:

    python reproduce.py                                    # the text track: ~1 hour on 2 CPU cores
    python reproduce.py --track=recall                     # the recall track: ~1 hour on 2 CPU cores
    python reproduce.py --variants=rope,rnope_swa --max_iters=40 --results=results-quick   # a quick look

Text track: every variant below trained with train.py on Shakespeare with retrieval needles, on the same
data, budget and seed (config/repro.py plus the variant's own layer settings), then eval_long.py
(passkey, needle in a haystack, RULER-style tasks, loss by position) and analyze_attention.py on each;
one markdown table and the plots in results/.
Recall track: the same variants, and RNoPE-SWA with a length-dependent NoPE temperature, trained on
multi-query associative recall (config/recall.py) with `seeds` seeds each; accuracy at 1x to 16x the
training length, heat maps of accuracy by depth, and the attention on the asked pair, in results/recall*.
A run whose checkpoint has already finished is not trained again, one that stopped part way continues from
its last checkpoint, and one whose evaluation exists is not evaluated again, so an interrupted run picks up
where it stopped (delete out_root to start afresh).
"""

import json
import os
import subprocess
import sys
import time

import numpy as np

from configurator import configure, fail, read_config, write_atomic

# The paper's variants (section 3), each a config file that changes only the attention of
# config/hybrid_long.py (which it includes); a track trains every variant with its own recipe
# (config/repro.py, config/recall.py) plus what the variant's file changes.
VARIANTS = ('rope', 'nope', 'rope_qknorm', 'rnope', 'rnope_swa', 'rnope_theta1m')
RECALL_VARIANTS = VARIANTS + ('rnope_swa_temp',)  # with a NoPE temperature: in no paper (config/rnope_swa_temp.py)


def variant(name):
    """What config/<name>.py changes from config/hybrid_long.py: {setting: value}."""
    main = read_config('config/hybrid_long.py')
    return {k: v for k, v in read_config(f'config/{name}.py').items() if k != 'out_dir' and main.get(k) != v}


def label(name):
    """How the tables name a variant's attention as the track trains it, e.g. `RRRN` θ=1e+06."""
    settings = {**read_config(config_file), **variant(name)}
    return (f"`{settings['layer_pattern']}`" + (' +QK-Norm' if settings.get('qk_norm') else '')
            + (f" θ={settings['rope_theta']:g}" if settings.get('rope_theta', 1e4) != 1e4 else '')
            + (f" +NoPE temp. β={settings['nope_temperature']:g}" if settings.get('nope_temperature') else ''))


TRACKS = dict(text=('config/repro.py', VARIANTS, 'out-repro'), recall=('config/recall.py', RECALL_VARIANTS, 'out-recall'))

track = 'text'                  # 'text' or 'recall'
variants = ''                   # which to run, comma-separated; '' = every variant of the track
seeds: '[1, inf)' = 3                     # recall track: seeds per variant (1337, 1338, ...)
max_iters: '[0, inf)' = 0                 # 0 = the track's config budget
dataset = 'shakespeare'         # text track: the training text
out_root = ''                   # checkpoints and evaluations: out_root/<run>/; '' = out-repro or out-recall
results = 'results'             # where the logs, the tables and the plots go
eval_samples: '[1, inf)' = 4              # text track: prompts per eval grid cell
eval_lengths: '[1, inf)' = ()             # eval_long.py's --lengths; () = 0.5x-8x the training length (text), 1x-16x (recall)
configure(globals())
python = sys.executable
os.chdir(os.path.dirname(os.path.abspath(__file__)))  # the scripts, config/ and out_root are relative to the repo

if track not in TRACKS:
    fail(f"track={track!r} must be 'text' or 'recall'")
config_file, table_of_variants, default_root = TRACKS[track]
out_root = out_root or default_root
chosen = [v for v in variants.split(',') if v] or list(table_of_variants)
if set(chosen) - set(table_of_variants):
    fail(f"variants={variants!r}: the {track} track has {','.join(table_of_variants)}")


def run(args, log_path):
    """Run a repo script, its output to the terminal and to log_path; stop on failure. Returns the seconds it took."""
    shown = ' '.join(['python'] + args[1:])
    print(f"$ {shown}", flush=True)
    t0 = time.time()
    with open(log_path, 'a') as log:
        log.write(f"$ {shown}\n")
        log.flush()
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            log.write(line)
            if not line.startswith('\r'):
                sys.stdout.write(line)
                sys.stdout.flush()
        if proc.wait():
            fail(f"{args[1]} failed (exit {proc.returncode}); its output is in {log_path}")
    return time.time() - t0


def finished(out_dir, iters):
    path = os.path.join(out_dir, 'metrics.jsonl')
    if not os.path.exists(os.path.join(out_dir, 'ckpt.pt')) or not os.path.exists(path):
        return False
    return any(json.loads(line).get('iter') == iters and 'val_loss' in line for line in open(path))


def load(run_name, file):
    with open(os.path.join(out_root, run_name, file)) as f:
        return json.load(f)


# -----------------------------------------------------------------------------
# train, evaluate and analyse every run: (variant, seed) on the recall track, one per variant on the text track
budget = read_config(config_file)
if track == 'text' and not eval_lengths:  # 0.5x to 8x the training length (eval_long.py's default stops at 4x)
    eval_lengths = tuple(int(f * budget['block_size']) for f in (0.5, 1, 2, 4, 8))
iters = max_iters or budget['max_iters']
runs = [(n, s, f"{n}-s{s}") for n in chosen for s in range(seeds)] if track == 'recall' else [(n, 0, n) for n in chosen]
os.makedirs(results, exist_ok=True)
for name, s, run_name in runs:
    out_dir = os.path.join(out_root, run_name)
    log_path = os.path.join(results, f"{'recall-' if track == 'recall' else ''}{run_name}.log")
    times_path = os.path.join(out_dir, 'times.json')
    times = json.load(open(times_path)) if os.path.exists(times_path) else {}
    extra = [f"--{k}={v}" for k, v in variant(name).items()]
    if track == 'recall':
        extra.append(f"--seed={1337 + s}")
    else:
        extra.append(f"--dataset={dataset}")
    if not finished(out_dir, iters):  # never trained, or stopped part way: continue from its last checkpoint
        for f in ('eval_long.json', 'attention.json'):
            if os.path.exists(os.path.join(out_dir, f)):
                os.remove(os.path.join(out_dir, f))
        resume = ['--init_from=resume'] if os.path.exists(os.path.join(out_dir, 'ckpt.pt')) else []
        times = {'train': run([python, 'train.py', config_file, f'--out_dir={out_dir}', f'--max_iters={iters}']
                              + extra + resume, log_path)}
    if not os.path.exists(os.path.join(out_dir, 'eval_long.json')):
        times['eval'] = run([python, 'eval_long.py', f'--out_dir={out_dir}']
                            + ([f'--samples={eval_samples}'] if track == 'text' else [])
                            + ([f"--lengths={','.join(map(str, eval_lengths))}"] if eval_lengths else []), log_path)
    if not os.path.exists(os.path.join(out_dir, 'attention.json')):
        times['analysis'] = run([python, 'analyze_attention.py', f'--out_dir={out_dir}']
                                + ([f'--samples={eval_samples}'] if track == 'text' else []), log_path)
    write_atomic(times_path, lambda tmp: json.dump(times, open(tmp, 'w')))


def avg(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else float('nan')


def plt_or_none():
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


# -----------------------------------------------------------------------------
# the recall track: one table with the seed spread, and the plots
if track == 'recall':
    from eval_long import draw_heatmap
    ev = {r: load(r, 'eval_long.json') for _, _, r in runs}
    att = {r: load(r, 'attention.json') for _, _, r in runs}
    tm = {r: load(r, 'times.json') for _, _, r in runs}
    T = ev[runs[0][2]]['block_size']
    lengths = [str(L) for L in ev[runs[0][2]]['lengths']]
    by_variant = {n: [r for v, _, r in runs if v == n] for n in chosen}

    def spread(values, fmt='{:.2f}'):
        """'mean (min-max)' over the seeds, or the one value."""
        if len(values) == 1:
            return fmt.format(values[0])
        return f"{fmt.format(np.mean(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"

    pairs = ev[runs[0][2]]['pairs']
    lines = [f"Per-query accuracy (argmax, teacher-forced) on {ev[runs[0][2]]['samples']} fresh sequences of {pairs} "
             f"pairs at each length, trained at {T} tokens; mean over {seeds} seed(s), (min-max) over seeds.", '',
             '| variant | layers | ' + ' | '.join(f"{int(L) // T}× ({int(L):,})" for L in lengths)
             + f' | exact match 1× / {int(lengths[-1]) // T}× | train s | eval + analysis s |',
             '|---|---|' + '---|' * len(lengths) + '---|---|---|']
    summary = {}
    for n in chosen:
        rs = by_variant[n]
        acc = {L: [ev[r]['recall'][L]['accuracy'] for r in rs] for L in lengths}
        exact = {L: [ev[r]['recall'][L]['exact'] for r in rs] for L in lengths}
        secs = [tm[r].get('train') for r in rs]
        post = [tm[r].get('eval', 0) + tm[r].get('analysis', 0) for r in rs]
        summary[n] = dict(accuracy=acc, exact=exact, train_seconds=secs, eval_seconds=post)
        lines.append(f"| {n} | {label(n)} | " + ' | '.join(spread(acc[L]) for L in lengths)
                     + f" | {np.mean(exact[lengths[0]]):.2f} / {np.mean(exact[lengths[-1]]):.2f} | "
                     + (f"{np.mean([x for x in secs if x]):.0f}" if any(secs) else '-') + f" | {np.mean(post):.0f} |")
    lines += ['', f"Where the asked keys look: attention mass of the asked-key rows on the asked pair (its key and "
                  f"value in the haystack), per layer kind, mean over seeds, at {T} and {4 * T} tokens "
                  f"(the rest goes to the other pairs, the filler, the query region and BOS: results/recall.json).", '',
              '| variant | layers | ' + ' | '.join(f"pair mass {L}" for L in att[runs[0][2]]['results'])
              + ' | entropy |', '|---|---|' + '---|' * (len(att[runs[0][2]]['results']) + 1)]
    for n in chosen:
        rs = by_variant[n]
        for kind in att[rs[0]]['results'][str(T)]['kinds']:
            cells = [np.mean([att[r]['results'][L]['kinds'][kind]['mass']['pair'] for r in rs])
                     for L in att[rs[0]]['results']]
            ent = np.mean([att[r]['results'][str(T)]['kinds'][kind]['entropy'] for r in rs])
            lines.append(f"| {n} | `{kind}` ×{att[rs[0]]['results'][str(T)]['kinds'][kind]['layers']} | "
                         + ' | '.join(f"{c:.3f}" for c in cells) + f" | {ent:.2f} |")
            summary[n].setdefault('pair_mass', {})[kind] = dict(zip(att[rs[0]]['results'], cells))
    table = '\n'.join(lines) + '\n'
    write_atomic(os.path.join(results, 'recall.md'), lambda tmp: open(tmp, 'w').write(table))
    write_atomic(os.path.join(results, 'recall.json'), lambda tmp: json.dump(
        dict(block_size=T, lengths=lengths, pairs=pairs, seeds=seeds, variants=summary,
             runs={r: dict(eval=ev[r], attention={L: x['kinds'] for L, x in att[r]['results'].items()}, times=tm[r])
                   for _, _, r in runs}), open(tmp, 'w'), indent=1))
    print('\n' + table)
    plt = plt_or_none()
    if plt is None:
        print(f"wrote {results}/recall.md and recall.json (pip install matplotlib for the plots)")
        sys.exit(0)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    x = [int(L) // T for L in lengths]
    for n in chosen:
        acc = summary[n]['accuracy']
        line, = ax.plot(x, [np.mean(acc[L]) for L in lengths], marker='o', label=f"{n} ({label(n).replace('`', '')})")
        ax.fill_between(x, [min(acc[L]) for L in lengths], [max(acc[L]) for L in lengths], color=line.get_color(), alpha=0.2)
    ax.set(xscale='log', xlabel=f'context / training length ({T} tokens)', ylabel='per-query accuracy',
           title=f'associative recall, {pairs} pairs: mean and min-max over {seeds} seeds', ylim=(-0.02, 1.02))
    ax.set_xticks(x, [f"{v}×" for v in x])
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(results, 'recall_accuracy.png'), dpi=80)
    plt.close(fig)
    shown = [n for n in ('rope', 'rnope_swa') if n in chosen] or chosen[:2]
    fig, axes = plt.subplots(1, len(shown), figsize=(5.2 * len(shown), 3.2), squeeze=False)
    for ax, n in zip(axes[0], shown):
        draw_heatmap(ax, ev[by_variant[n][0]]['recall_depth'], f"{n} ({label(n).replace('`', '')}), seed 0",
                     xlabel='depth of the asked pair in the haystack', fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(results, 'recall_depth.png'), dpi=80)
    plt.close(fig)
    print(f"wrote {results}/recall.md, recall.json, recall_accuracy.png, recall_depth.png")
    sys.exit(0)


# -----------------------------------------------------------------------------
# one table, and the plots side by side
ev = {n: load(n, 'eval_long.json') for n in chosen}
att = {n: load(n, 'attention.json') for n in chosen}
T = ev[chosen[0]]['block_size']
Lmax = max(ev[chosen[0]]['lengths'])


def split(table, pick=lambda r: r.values()):
    """'a / b': the mean over contexts up to the training length, and beyond it."""
    short = avg(v for L, r in table.items() if int(L) <= T for v in pick(r))
    long = avg(v for L, r in table.items() if int(L) > T for v in pick(r))
    return f"{short:.2f} / {long:.2f}"


lines = [f"| variant | layers | val loss at {T} | loss over the first {T} / {Lmax} tokens | passkey | NIAH | RULER | "
         f"passkey gain (nats) | NIAH gain (nats) |", '|---|---|---|---|---|---|---|---|---|']
for n in chosen:
    e = ev[n]
    ruler_by_length = {L: [e['ruler'][task][L] for task in e['ruler']] for L in e['ruler']['single']}
    lines.append('| ' + ' | '.join([
        n, label(n),
        f"{e['short_val_loss']:.3f}",
        f"{e['ppl']['by_length'][str(T)]:.3f} / {e['ppl']['by_length'][str(Lmax)]:.3f}",
        split(e['passkey']), split(e['niah']), split(ruler_by_length, pick=lambda r: r),
        split(e['passkey_gain']), split(e['niah_gain'])]) + ' |')
lines += ['', f"Retrieval columns: mean over contexts up to the training length ({T}) / beyond it (up to {Lmax}). "
              "Gain: NLL of another number minus NLL of the needle's number after the question (0 = the needle is not used).",
          '']
for L in att[chosen[0]]['results']:
    lines += [f"Attention of the question+answer rows on needle prompts of {L} tokens, averaged over the layers of "
              f"each kind: mass on the first {att[chosen[0]]['sink']} tokens (begin), the needle, the rest of the "
              f"context and the question+answer; entropy in nats:", '',
              '| variant | layers | begin | needle | context | question | entropy |', '|---|---|---|---|---|---|---|']
    for n in chosen:
        for kind, r in att[n]['results'][L]['kinds'].items():
            lines.append(f"| {n} | `{kind}` ×{r['layers']} | " + ' | '.join(f"{r['mass'][s]:.3f}" for s in
                                                                             ('begin', 'needle', 'context', 'question'))
                         + f" | {r['entropy']:.2f} |")
    lines.append('')
table = '\n'.join(lines) + '\n'
write_atomic(os.path.join(results, 'results.md'), lambda tmp: open(tmp, 'w').write(table))
print('\n' + table)

plt = plt_or_none()
if plt is None:
    print(f"wrote {results}/results.md (pip install matplotlib for the plots)")
    sys.exit(0)
from analyze_attention import draw_distance
from eval_long import draw_heatmap, draw_ppl

# needle in a haystack: per variant, exact match (top) and retrieval gain (bottom) over lengths x depths
fig, axes = plt.subplots(2, len(chosen), figsize=(2.6 * len(chosen) + 0.6, 5.2), squeeze=False)
for col, n in enumerate(chosen):
    draw_heatmap(axes[0][col], ev[n]['niah'], f"{n}: exact match", fontsize=6)
    draw_heatmap(axes[1][col], ev[n]['niah_gain'], f"{n}: gain, nats", vmin=-3, vmax=3, cmap='RdBu', fontsize=6)
fig.suptitle(f"needle in a haystack, trained at {T} tokens", fontsize=9)
fig.tight_layout()
fig.savefig(os.path.join(results, 'niah.png'), dpi=80)
plt.close(fig)

# loss by position, all variants on one plot
fig, ax = plt.subplots(figsize=(6, 3.6))
draw_ppl(ax, {n: ev[n]['ppl']['buckets'] for n in chosen}, T)
fig.tight_layout()
fig.savefig(os.path.join(results, 'ppl_by_position.png'), dpi=80)
plt.close(fig)

# attention against distance, per layer kind of every variant, at the training length
fig, ax = plt.subplots(figsize=(6, 3.6))
for n in chosen:
    draw_distance(ax, att[n]['results'][str(T)]['layers'], f'attention by distance, context {T}', prefix=f"{n} ")
fig.tight_layout()
fig.savefig(os.path.join(results, 'attention_distance.png'), dpi=80)
plt.close(fig)
print(f"wrote {results}/results.md, niah.png, ppl_by_position.png, attention_distance.png")
