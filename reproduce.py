"""
The paper's ablation at toy scale, in one command:

    python reproduce.py                                    # ~1 hour on 2 CPU cores
    python reproduce.py --variants=rope,rnope_swa --max_iters=40 --results=results-quick   # a quick look

Trains every variant below with train.py on the same data, budget and seed (config/repro.py, plus
the variant's own layer settings), then runs eval_long.py and analyze_attention.py on each and
gathers one markdown table and the plots in results/. A variant whose checkpoint has already
finished is not trained again, and one whose evaluation exists is not evaluated again, so an
interrupted run picks up where it stopped (delete out-repro/ to start afresh).
"""

import json
import math
import os
import subprocess
import sys

import numpy as np

from configurator import configure, fail
from prepare_data import write_atomic

# The paper's variants (section 3): what differs is only the attention of each layer.
VARIANTS = {
    'rope':          dict(layer_pattern='R'),                      # the RoPE baseline
    'nope':          dict(layer_pattern='N'),                      # no positional encoding anywhere
    'rope_qknorm':   dict(layer_pattern='R', qk_norm=True),        # RoPE + QK-Norm
    'rnope':         dict(layer_pattern='RRRN'),                   # RoPE and NoPE interleaved 3:1
    'rnope_swa':     dict(layer_pattern='SSSN'),                   # ... with windowed RoPE layers: RNoPE-SWA
    'rnope_theta1m': dict(layer_pattern='RRRN', rope_theta=1e6),   # RNoPE with a 100x larger RoPE theta
}

variants = ','.join(VARIANTS)   # which to run, comma-separated
max_iters = 0                   # 0 = config/repro.py's budget
dataset = 'shakespeare'
out_root = 'out-repro'          # checkpoints and evaluations: out_root/<variant>/
results = 'results'             # where the logs, the table and the plots go
eval_samples = 4                # prompts per eval grid cell
eval_lengths = ()               # eval_long.py's --lengths; () = its default, 0.5x to 8x the training length
configure(globals())
python = sys.executable
os.chdir(os.path.dirname(os.path.abspath(__file__)))  # the scripts, config/ and out-repro/ are relative to the repo

chosen = [v for v in variants.split(',') if v]
if not chosen or set(chosen) - set(VARIANTS):
    fail(f"variants={variants!r}: choose from {','.join(VARIANTS)}")


def run(args, log_path):
    """Run a repo script, its output to the terminal and to log_path; stop on failure."""
    shown = ' '.join(['python'] + args[1:])
    print(f"$ {shown}", flush=True)
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


def finished(out_dir, iters):
    path = os.path.join(out_dir, 'metrics.jsonl')
    if not os.path.exists(os.path.join(out_dir, 'ckpt.pt')) or not os.path.exists(path):
        return False
    return any(json.loads(line).get('iter') == iters and 'val_loss' in line for line in open(path))


# -----------------------------------------------------------------------------
# train and evaluate every variant
budget = {}
exec(open('config/repro.py').read(), {}, budget)
iters = max_iters or budget['max_iters']
os.makedirs(results, exist_ok=True)
for name in chosen:
    out_dir = os.path.join(out_root, name)
    log_path = os.path.join(results, f'{name}.log')
    extra = [f"--{k}={v}" for k, v in VARIANTS[name].items()]
    if not finished(out_dir, iters):
        if os.path.exists(os.path.join(out_dir, 'ckpt.pt')):
            os.remove(os.path.join(out_dir, 'ckpt.pt'))  # an unfinished or differently budgeted run: start over
            os.remove(os.path.join(out_dir, 'metrics.jsonl'))
        run([python, 'train.py', 'config/repro.py', f'--out_dir={out_dir}', f'--max_iters={iters}',
             f'--dataset={dataset}'] + extra, log_path)
    if not os.path.exists(os.path.join(out_dir, 'eval_long.json')):
        run([python, 'eval_long.py', f'--out_dir={out_dir}', f'--samples={eval_samples}']
            + ([f"--lengths={','.join(map(str, eval_lengths))}"] if eval_lengths else []), log_path)
    if not os.path.exists(os.path.join(out_dir, 'attention.json')):
        run([python, 'analyze_attention.py', f'--out_dir={out_dir}', f'--samples={eval_samples}'], log_path)


# -----------------------------------------------------------------------------
# one table, and the plots side by side
def load(name, file):
    with open(os.path.join(out_root, name, file)) as f:
        return json.load(f)


def avg(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else float('nan')


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
        n, f"`{VARIANTS[n]['layer_pattern']}`" + (' +QK-Norm' if VARIANTS[n].get('qk_norm') else '')
        + (f" θ={VARIANTS[n]['rope_theta']:g}" if 'rope_theta' in VARIANTS[n] else ''),
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

try:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
except ImportError:
    print(f"wrote {results}/results.md (pip install matplotlib for the plots)")
    sys.exit(0)

# needle in a haystack: per variant, exact match (top) and retrieval gain (bottom) over lengths x depths
fig, axes = plt.subplots(2, len(chosen), figsize=(2.6 * len(chosen) + 0.6, 5.2), squeeze=False, sharey=True)
for col, n in enumerate(chosen):
    for row, (key, vmin, vmax, cmap, label) in enumerate([('niah', 0, 1, 'RdYlGn', 'exact match'),
                                                          ('niah_gain', -3, 3, 'RdBu', 'gain, nats')]):
        grid, ax = ev[n][key], axes[row][col]
        lengths, depths = list(grid), list(next(iter(grid.values())))
        ax.imshow([[np.nan if grid[L][d] is None else grid[L][d] for d in depths] for L in lengths],
                  vmin=vmin, vmax=vmax, cmap=cmap, aspect='auto')
        for i, L in enumerate(lengths):
            for j, d in enumerate(depths):
                ax.text(j, i, '-' if grid[L][d] is None else f"{grid[L][d]:.1f}", ha='center', va='center', fontsize=6)
        ax.set_xticks(range(len(depths)), [f"{float(d):g}" for d in depths], fontsize=7)
        ax.set_yticks(range(len(lengths)), [f"{int(L):,}" for L in lengths], fontsize=7)
        ax.set_title(f"{n}: {label}", fontsize=8)
        if row == 1:
            ax.set_xlabel('needle depth', fontsize=8)
    axes[0][0].set_ylabel('context (tokens)', fontsize=8)
    axes[1][0].set_ylabel('context (tokens)', fontsize=8)
fig.suptitle(f"needle in a haystack, trained at {T} tokens", fontsize=9)
fig.tight_layout()
fig.savefig(os.path.join(results, 'niah.png'), dpi=80)
plt.close(fig)

# loss by position, all variants on one plot
fig, ax = plt.subplots(figsize=(6, 3.6))
for n in chosen:
    b = ev[n]['ppl']['buckets']
    ax.plot([math.sqrt(lo * hi) for lo, hi, _ in b], [v for _, _, v in b], marker='.', label=n)
ax.axvline(T, color='gray', linestyle=':', label='training length')
ax.set(xscale='log', xlabel='position in a held-out play (tokens)', ylabel='loss (nats/token)',
       title='loss by position')
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(os.path.join(results, 'ppl_by_position.png'), dpi=80)
plt.close(fig)

# attention against distance, per layer kind of every variant
fig, ax = plt.subplots(figsize=(6, 3.6))
for n in chosen:
    layers = att[n]['results'][str(T)]['layers']  # at the training length
    for kind in sorted({l['kind'] for l in layers}):
        curves = [l['distance'] for l in layers if l['kind'] == kind]
        x = [math.sqrt(max(lo, 0.5) * hi) for lo, hi, _ in curves[0]]
        ax.plot(x, np.mean([[v for _, _, v in c] for c in curves], axis=0), marker='.', label=f"{n} '{kind}'")
ax.set(xscale='log', yscale='log', xlabel='distance to key (tokens)', ylabel='mean attention per key',
       title=f'attention by distance, context {T}')
ax.legend(fontsize=6, ncol=2)
fig.tight_layout()
fig.savefig(os.path.join(results, 'attention_distance.png'), dpi=80)
plt.close(fig)
print(f"wrote {results}/results.md, niah.png, ppl_by_position.png, attention_distance.png")
