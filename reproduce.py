"""
The paper's ablation at toy scale, in one command per track:

    python reproduce.py                          # the text track: 2 h 1 min on 2 cores (12-07)
    python reproduce.py --track=recall           # the recall track: ~1 hour on 2 cores (--jobs=1)
    python reproduce.py --track=recall-window    # its window ablation, to 512x: ~53 min (--jobs=1)
    python reproduce.py --variants=rope,rnope_swa --max_iters=40 --results=results-quick  # a look

Text track: the seven variants below trained with train.py on Shakespeare with retrieval sequences,
on the same data and budget (config/repro.py plus the variant's own layer settings), two seeds for
rope and rnope_swa and one for the others, then eval_long.py (passkey, needle in a haystack, the
held-out format, RULER-style tasks, loss by position, at 1x to 8x the training length) and
analyze_attention.py on each; the tables in results/text/results.md, with the spread over seeds, and
the plots beside them.

Recall track: the same variants trained on multi-query associative recall (config/recall.py), three
seeds each; accuracy at 1x to 16x the training length, heat maps of accuracy by depth, and the
attention on the asked pair, in results/recall/recall.md and beside it.

Recall-window track: RNoPE-SWA on the recall task with windows of 16 to 128 and RRRN, two seeds
each, evaluated at 1x to 512x with 8, 32 and 64 pairs (with the NoPE temperature at evaluation too
where the window is wide), and analysed at 1x and 64x: results/window/window.md, window.png and
window.json.

Each track's folder also holds logs/, one log per run (tail -f follows a run), and the track's
report, README.md, written by hand: the predictions, written before the track ran, beside what it
measured.

Runs go two at a time (--jobs), each with its share of the cores, and an odd one left over goes
alone after them, with every core; their output goes to their logs (and a lone run's to the
terminal). A run whose checkpoint has already finished is not trained again, one that stopped part
way continues from its last checkpoint, and one whose evaluation exists is not evaluated again, so
an interrupted run picks up where it stopped (delete out_root to start afresh).
"""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from common import have_matplotlib, write_atomic
from configurator import configure, fail, read_config
from tasks import draw_distance, draw_heatmap, draw_ppl, results_file

# The paper's variants (section 3), each a config file that changes only the attention of
# config/hybrid_long.py (which it includes); a track trains every variant with its own recipe
# (config/repro.py, config/recall.py) plus what the variant's file changes. rnope_swa_temp,
# RNoPE-SWA with a length-dependent NoPE temperature, is in no paper (config/rnope_swa_temp.py).
VARIANTS = ('rope', 'nope', 'rope_qknorm', 'rnope', 'rnope_swa', 'rnope_theta1m', 'rnope_swa_temp')


# The recall-window track: RNoPE-SWA on the recall task with windows from an eighth of the training
# length (128) to all of it, beside RRRN (the limit of a window as long as the input), and the NoPE
# temperature where the hybrid is expected to degrade, the wide windows: trained with it
# (window128_temp), or given it at evaluation only (TEMPERATURE_AT_EVAL).
TEMPERATURE = dict(nope_temperature=0.1, nope_temperature_floor=16)  # config/rnope_swa_temp.py's
WINDOWS = {f'window{W}': dict(sliding_window=W) for W in (16, 32, 64, 128)}
WINDOWS['window128_temp'] = dict(sliding_window=128, **TEMPERATURE)
TEMPERATURE_AT_EVAL = ('window64', 'window128')


def variant(name):
    """What config/<name>.py changes from config/hybrid_long.py, or a window variant's settings:
    {setting: value}."""
    if name in WINDOWS:
        return WINDOWS[name]
    main = read_config('config/hybrid_long.py')
    return {k: v for k, v in read_config(f'config/{name}.py').items()
            if k != 'out_dir' and main.get(k) != v}


def label(name):
    """How the tables name a variant's attention as the track trains it, e.g. `RRRN` θ=1e+06."""
    settings = {**read_config(config_file), **variant(name)}
    beta = settings.get('nope_temperature')
    return (f"`{settings['layer_pattern']}`"
            + (f" W={settings['sliding_window']}" if name in WINDOWS else '')
            + (' +QK-Norm' if settings.get('qk_norm') else '')
            + (f" θ={settings['rope_theta']:g}" if settings.get('rope_theta', 1e4) != 1e4 else '')
            + (f" +NoPE temp. β={beta:g}" if beta else ''))


# track: (its recipe, its variants, where its runs go, where its tables go, seeds per variant:
# {variant: seeds}, and for the others)
TRACKS = {'text': ('config/repro.py', VARIANTS, 'out-repro', 'results/text',
                   {'rope': 2, 'rnope_swa': 2}, 1),
          'recall': ('config/recall.py', VARIANTS, 'out-recall', 'results/recall', {}, 3),
          'recall-window': ('config/recall.py', tuple(WINDOWS) + ('rnope',), 'out-recall-window',
                            'results/window', {}, 2)}

track = 'text'                  # 'text', 'recall' or 'recall-window'
variants = ''                   # which to run, comma-separated; '' = every variant of the track
seeds: '[0, inf)' = 0                     # seeds per variant (1337, 1338, ...); 0 = the track's: 3
                                          # on the recall track; on the text track 2 for rope and
                                          # rnope_swa, 1 for the others
max_iters: '[0, inf)' = 0                 # 0 = the track's config budget
dataset = 'shakespeare'         # text track: the training text
out_root = ''                   # checkpoints and evaluations: out_root/<run>/; '' = out-repro or
                                # out-recall
results = ''                    # where the tables, the plots and logs/ go; '' = results/<the
                                # track's folder>
eval_samples: '[1, inf)' = 4              # text track: prompts per eval grid cell
eval_lengths: '[1, inf)' = ()             # eval_long.py's --lengths; () = 1x-8x the training length
                                          # (text), 1x-16x (recall)
jobs: '[1, inf)' = 2                      # runs at a time, the cores shared out among them: on 2
                                          # cores two at a time used the machine better than one
                                          # (2026-12-02: ~8 min of it per run, 11-12 one at a time)
configure(globals())
python = sys.executable
# the scripts, config/ and out_root are relative to the repo
os.chdir(os.path.dirname(os.path.abspath(__file__)))

if track not in TRACKS:
    fail(f"track={track!r} must be one of {', '.join(TRACKS)}")
config_file, track_variants, default_root, default_results, seeds_of, other_seeds = TRACKS[track]
out_root, results = out_root or default_root, results or default_results
chosen = [v for v in variants.split(',') if v] or list(track_variants)
if set(chosen) - set(track_variants):
    fail(f"variants={variants!r}: the {track} track has {','.join(track_variants)}")


def run(args, log_path, share):
    """Run a repo script, its output to log_path (and to the terminal when it runs alone), with its
    part of the cores when `share` runs go side by side. Returns the seconds it took."""
    shown = ' '.join(['python'] + args[1:])
    print(f"$ {shown}", flush=True)
    t0 = time.time()
    threads = max(1, (os.cpu_count() or 1) // share)  # torch's threads
    with open(log_path, 'a') as log:
        log.write(f"$ {shown}\n")
        log.flush()
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
        for line in proc.stdout:
            log.write(line)
            log.flush()  # tail -f shows the runs as they go
            if share == 1 and not line.startswith('\r'):
                sys.stdout.write(line)
                sys.stdout.flush()
        if proc.wait():  # stops the track: the main thread says so in one line
            raise RuntimeError(f"{args[1]} failed (exit {proc.returncode}); its output is in "
                               f"{log_path}")
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
# train, evaluate and analyse every run: (variant, seed)
recipe = read_config(config_file)
iters = max_iters or recipe['max_iters']
last = recipe['stages'][-1] if recipe.get('stages') else (0, recipe['block_size'])
T_train = max(last[1], last[3] if len(last) > 3 else 0)  # the training length: as train.py takes it
if eval_lengths and T_train not in eval_lengths:  # the tables measure every length against it
    fail(f"eval_lengths={','.join(map(str, eval_lengths))} must include the training length, "
         f"{T_train}")
# text: 1x to 8x the training length
EVAL_ARGS = {'text': [f'--samples={eval_samples}', '--multiples=1,2,4,8', '--ppl_windows=8'],
             'recall': [],
             'recall-window': ['--multiples=1,2,4,8,16,64,512', '--recall_pairs=8,32,64',
                               '--recall_tokens=65536']}
ANALYSIS_ARGS = {'text': [f'--samples={eval_samples}'], 'recall': [],
                 'recall-window': [f'--lengths={T_train},{64 * T_train}']}
TEMPERATURE_ARGS = [f'--{k}={v}' for k, v in TEMPERATURE.items()]
temperature_file = results_file(tuple(TEMPERATURE.values()))
runs = [(n, s, f"{n}-s{s}") for n in chosen for s in range(seeds or seeds_of.get(n, other_seeds))]
os.makedirs(os.path.join(results, 'logs'), exist_ok=True)


def train_and_evaluate(name, s, run_name, share):
    out_dir = os.path.join(out_root, run_name)
    log_path = os.path.join(results, 'logs', f"{run_name}.log")
    times_path = os.path.join(out_dir, 'times.json')
    times = json.load(open(times_path)) if os.path.exists(times_path) else {}
    extra = [f"--{k}={v}" for k, v in variant(name).items()] + [f"--seed={1337 + s}"]
    if track == 'text':
        extra.append(f"--dataset={dataset}")
    done = lambda f: os.path.exists(os.path.join(out_dir, f))
    # never trained, or stopped part way: continue from its last checkpoint, evaluated afresh
    if not finished(out_dir, iters):
        for f in ('eval_long.json', 'attention.json', 'attention_needles2.json'):
            if done(f):
                os.remove(os.path.join(out_dir, f))
        resume = ['--init_from=resume'] if done('ckpt.pt') else []
        if not resume:  # a run from scratch starts its log afresh (one that stopped adds to it)
            open(log_path, 'w').close()
        train = [python, 'train.py', config_file, f'--out_dir={out_dir}', f'--max_iters={iters}']
        # with how many runs shared how many cores, for the tables
        times = {'train': run(train + extra + resume, log_path, share), 'jobs': share,
                 'cores': os.cpu_count()}
    lengths_arg = [f"--lengths={','.join(map(str, eval_lengths))}"] if eval_lengths else []
    evaluate = [python, 'eval_long.py', f'--out_dir={out_dir}'] + EVAL_ARGS[track] + lengths_arg
    analyse = [python, 'analyze_attention.py', f'--out_dir={out_dir}'] + ANALYSIS_ARGS[track]
    if not done('eval_long.json'):
        times['eval'] = run(evaluate, log_path, share)
    # the same weights, with the temperature at evaluation only
    if track == 'recall-window' and name in TEMPERATURE_AT_EVAL and not done(temperature_file):
        times['eval'] += run(evaluate + TEMPERATURE_ARGS, log_path, share)
    if not done('attention.json'):
        times['analysis'] = run(analyse, log_path, share)
    if track == 'text' and not done('attention_needles2.json'):  # binding: two needles, one asked
        times['analysis'] = (times.get('analysis', 0)
                             + run(analyse + ['--needles=2'], log_path, share))
    write_atomic(times_path, lambda tmp: json.dump(times, open(tmp, 'w')))
    spent = ', '.join(f"{k} {v:.0f} s" for k, v in times.items() if k not in ('jobs', 'cores'))
    print(f"{run_name} done: {spent}", flush=True)


# each run's train -> eval -> analysis in order; the runs `jobs` at a time, and those left over
# when they do not divide evenly (all of them, when fewer than `jobs`) after them, the cores shared
# among fewer (a last run alone gets them all: torch cannot take more threads once a run started)
left = len(runs) % jobs
batches = [(runs[:len(runs) - left], jobs), (runs[len(runs) - left:], left)]
for batch, share in [(b, n) for b, n in batches if b]:
    with ThreadPoolExecutor(share) as pool:
        try:
            for done in [pool.submit(train_and_evaluate, *r, share) for r in batch]:
                done.result()
        # start no other run; one under way finishes, kept for a rerun
        except RuntimeError as failed:
            pool.shutdown(cancel_futures=True)
            fail(str(failed))


def avg(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else float('nan')


def save(fig, name):
    """Write a figure to the track's folder and close it; returns the name."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(os.path.join(results, name), dpi=80)
    plt.close(fig)
    return name


def finish(md, text, json_name, data, draw):
    """Every track's end: text into <results>/<md>, data into <results>/<json_name>, the table
    printed, then the plots (draw(plt) saves them and returns their names), or one line on how to
    get them."""
    write_atomic(os.path.join(results, md), lambda tmp: open(tmp, 'w').write(text))
    write_atomic(os.path.join(results, json_name),
                 lambda tmp: json.dump(data, open(tmp, 'w'), indent=1))
    print('\n' + text)
    print(f"wrote {results}/{md} and {json_name}")
    if have_matplotlib(f"the plots of {results}/{md}"):
        import matplotlib.pyplot as plt
        print(f"wrote {', '.join(draw(plt))}")
    sys.exit(0)


# -----------------------------------------------------------------------------
# the tables, with the spread over seeds, and the plots
ev = {r: load(r, 'eval_long.json') for _, _, r in runs}
att = {r: load(r, 'attention.json') for _, _, r in runs}
tm = {r: load(r, 'times.json') for _, _, r in runs}
T = ev[runs[0][2]]['block_size']
lengths = [str(L) for L in ev[runs[0][2]]['lengths']]
by_variant = {n: [r for v, _, r in runs if v == n] for n in chosen}
n_seeds = {n: len(rs) for n, rs in by_variant.items()}
sharing = sorted({(tm[r].get('jobs', 1), tm[r].get('cores')) for _, _, r in runs}, key=str)
TIMES = ("Train s, eval + analysis s: each run's wall clock, with "
         + ' or '.join(f"{j} run{'s' * (j > 1)} at a time" + (f" on {c} cores" if c else '')
                       for j, c in sharing) + '.')


def spread(values, fmt='{:.2f}'):
    """'mean (min-max)' over the seeds, or the one value; '-' where there is none (pairs that do not
    fit)."""
    values = np.array(values, dtype=float)  # None becomes NaN
    if np.isnan(values).all():
        return '-'
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(np.mean(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def seconds(run_names):
    """'train s | eval + analysis s' cells: the mean over the runs."""
    secs = [tm[r].get('train') for r in run_names]
    post = [tm[r].get('eval', 0) + tm[r].get('analysis', 0) for r in run_names]
    train = f"{np.mean([x for x in secs if x]):.0f}" if any(secs) else '-'
    return f"{train} | {np.mean(post):.0f}"


def draw_by_length(ax, values, T, title, ylabel):
    """values {variant: {length: [one value per seed]}} against length / T: the mean, the min-max
    shaded. A variant's curve is named by label(); other names (a variant evaluated differently) as
    they are."""
    x = [int(L) / T for L in lengths]
    for n, by_length in values.items():
        # None (pairs that do not fit): a gap
        by_length = {L: np.array(by_length[L], dtype=float) for L in lengths}
        line, = ax.plot(x, [np.mean(by_length[L]) for L in lengths], marker='o',
                        linestyle='-' if n in chosen else '--',
                        label=f"{n} ({label(n).replace('`', '')})" if n in chosen else n)
        ax.fill_between(x, [min(by_length[L]) for L in lengths],
                        [max(by_length[L]) for L in lengths], color=line.get_color(), alpha=0.2)
    ax.set(xscale='log', xlabel=f'context / training length ({T} tokens)', ylabel=ylabel,
           title=title, ylim=(-0.02, 1.02))
    ax.set_xticks(x, [f"{v:g}×" for v in x])
    ax.minorticks_off()  # a log axis labels its minor ticks too ('3×10⁰') where they fall between
    ax.legend(fontsize=6)


if track == 'recall-window':
    pair_counts = [str(p) for p in ev[runs[0][2]]['pairs']]
    hot = [n for n in chosen if n in TEMPERATURE_AT_EVAL]  # evaluated with the temperature too
    with_temp = {r: load(r, temperature_file) for n in hot for r in by_variant[n]}
    att_lengths = list(att[runs[0][2]]['results'])
    acc = {(n, p, how): {L: [(with_temp if how else ev)[r]['recall'][p][L]['accuracy']
                             for r in by_variant[n]] for L in lengths}
           for n in chosen for p in pair_counts for how in ((0, 1) if n in hot else (0,))}
    trained_pairs = read_config(config_file)['recall_pairs']
    per_length = ', '.join(str(v) for v in ev[runs[0][2]]['samples'].values())
    lines = [f"Per-query accuracy (argmax, teacher-forced) with {', '.join(pair_counts)} pairs, "
             f"trained at {T} tokens with {trained_pairs} pairs; sequences per length: "
             f"{per_length}; mean over seeds, (min-max) over seeds.",
             f"'+ temperature at evaluation': the same checkpoints evaluated with the NoPE "
             f"temperature (beta {TEMPERATURE['nope_temperature']}, floor "
             f"{TEMPERATURE['nope_temperature_floor']}), never trained with it.", '',
             '![accuracy against length, per window](window.png)', '']
    at_eval = lambda how: ' + temperature at evaluation' if how else ''
    for p in pair_counts:
        lines += [f"**{p} pairs**", '',
                  '| variant (seeds) | layers | ' + ' | '.join(f"{int(L) // T}×" for L in lengths)
                  + ' |', '|---|---|' + '---|' * len(lengths)]
        for (n, q, how), by_length in acc.items():
            if q == p:
                lines.append(f"| {n} ({n_seeds[n]}) | {label(n)}{at_eval(how)} | "
                             + ' | '.join(spread(by_length[L]) for L in lengths) + ' |')
        lines.append('')
    lines += [f"Where the asked keys look ({trained_pairs} pairs): attention mass of the asked-key "
              f"rows on the asked pair, per layer kind, mean over seeds, at "
              f"{' and '.join(att_lengths)} tokens. {TIMES}", '',
              '| variant | layers | ' + ' | '.join(f"pair mass {L}" for L in att_lengths)
              + ' | train s | eval + analysis s |',
              '|---|---|' + '---|' * len(att_lengths) + '---|---|']
    for n in chosen:
        rs = by_variant[n]
        for kind in att[rs[0]]['results'][att_lengths[0]]['kinds']:
            cells = [np.mean([att[r]['results'][L]['kinds'][kind]['mass']['pair'] for r in rs])
                     for L in att_lengths]
            lines.append(f"| {n} | `{kind}` | " + ' | '.join(f"{c:.3f}" for c in cells)
                         + f" | {seconds(rs)} |")

    def draw(plt):
        fig, axes = plt.subplots(1, len(pair_counts), figsize=(6.4 * len(pair_counts), 4.2),
                                 squeeze=False)
        for ax, p in zip(axes[0], pair_counts):
            draw_by_length(ax, {n if not how else f"{n} + temperature at evaluation": v
                                for (n, q, how), v in acc.items() if q == p},
                           T, f'associative recall, {p} pairs: mean and min-max over seeds',
                           'per-query accuracy')
        return [save(fig, 'window.png')]

    finish('window.md', '\n'.join(lines) + '\n', 'window.json', dict(
        block_size=T, lengths=lengths, seeds=n_seeds, temperature=TEMPERATURE,
        accuracy={f"{n} {p} pairs{' temperature at evaluation' if how else ''}": v
                  for (n, p, how), v in acc.items()},
        runs={r: dict(eval=ev[r], temperature_at_evaluation=with_temp.get(r),
                      attention={L: x['kinds'] for L, x in att[r]['results'].items()}, times=tm[r])
              for _, _, r in runs}), draw)

if track == 'recall':
    pairs = str(ev[runs[0][2]]['pairs'][0])  # the pairs of training
    lines = [f"Per-query accuracy (argmax, teacher-forced) on "
             f"{ev[runs[0][2]]['samples'][lengths[0]]} fresh sequences of {pairs} pairs at each "
             f"length, trained at {T} tokens; mean over seeds, (min-max) over seeds. {TIMES}", '',
             '| variant | layers | ' + ' | '.join(f"{int(L) // T}× ({int(L):,})" for L in lengths)
             + f' | exact match 1× / {int(lengths[-1]) // T}× | train s | eval + analysis s |',
             '|---|---|' + '---|' * len(lengths) + '---|---|---|']
    summary = {}
    for n in chosen:
        rs = by_variant[n]
        acc = {L: [ev[r]['recall'][pairs][L]['accuracy'] for r in rs] for L in lengths}
        exact = {L: [ev[r]['recall'][pairs][L]['exact'] for r in rs] for L in lengths}
        summary[n] = dict(accuracy=acc, exact=exact,
                          train_seconds=[tm[r].get('train') for r in rs],
                          eval_seconds=[tm[r].get('eval', 0) + tm[r].get('analysis', 0)
                                        for r in rs])
        lines.append(f"| {n} | {label(n)} | " + ' | '.join(spread(acc[L]) for L in lengths)
                     + f" | {np.mean(exact[lengths[0]]):.2f} / {np.mean(exact[lengths[-1]]):.2f} | "
                     f"{seconds(rs)} |")
    att_lengths = att[runs[0][2]]['results']
    lines += ['', f"Where the asked keys look: attention mass of the asked-key rows on the asked "
                  f"pair (its key and value in the haystack), per layer kind, mean over seeds, at "
                  f"{T} and {4 * T} tokens (the rest goes to the other pairs, the filler, the "
                  f"query region and BOS: recall.json).", '',
              '| variant | layers | ' + ' | '.join(f"pair mass {L}" for L in att_lengths)
              + ' | entropy |', '|---|---|' + '---|' * (len(att_lengths) + 1)]
    for n in chosen:
        rs = by_variant[n]
        for kind in att[rs[0]]['results'][str(T)]['kinds']:
            cells = [np.mean([att[r]['results'][L]['kinds'][kind]['mass']['pair'] for r in rs])
                     for L in att[rs[0]]['results']]
            ent = np.mean([att[r]['results'][str(T)]['kinds'][kind]['entropy'] for r in rs])
            layers = att[rs[0]]['results'][str(T)]['kinds'][kind]['layers']
            lines.append(f"| {n} | `{kind}` ×{layers} | "
                         + ' | '.join(f"{c:.3f}" for c in cells) + f" | {ent:.2f} |")
            summary[n].setdefault('pair_mass', {})[kind] = dict(zip(att[rs[0]]['results'], cells))

    def draw(plt):
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        draw_by_length(ax, {n: summary[n]['accuracy'] for n in chosen}, T,
                       f'associative recall, {pairs} pairs: mean and min-max over seeds',
                       'per-query accuracy')
        names = [save(fig, 'recall_accuracy.png')]
        shown = [n for n in ('rope', 'rnope_swa') if n in chosen] or chosen[:2]
        fig, axes = plt.subplots(1, len(shown), figsize=(5.2 * len(shown), 3.2), squeeze=False)
        for ax, n in zip(axes[0], shown):
            draw_heatmap(ax, ev[by_variant[n][0]]['recall_depth'][pairs],
                         f"{n} ({label(n).replace('`', '')}), seed 0",
                         xlabel='depth of the asked pair in the haystack', fontsize=7)
        return names + [save(fig, 'recall_depth.png')]

    finish('recall.md', '\n'.join(lines) + '\n', 'recall.json', dict(
        block_size=T, lengths=lengths, pairs=pairs, seeds=n_seeds, variants=summary,
        runs={r: dict(eval=ev[r], attention={L: x['kinds'] for L, x in att[r]['results'].items()},
                      times=tm[r]) for _, _, r in runs}), draw)

# -----------------------------------------------------------------------------
# the text track: per task, retrieval by length with the spread over seeds; language modelling;
# attention
RETRIEVAL = dict(passkey='passkey, exact match',
                 niah='needle in a haystack (RULER\'s magic number), held-out text',
                 heldout='a needle format training never uses, held-out text')
first = ev[runs[0][2]]  # the first run's evaluation: the settings every run shares
columns = ' | '.join(f"{int(L) // T}× ({int(L):,})" for L in lengths)
summary = {n: {} for n in chosen}
lines = [f"Trained at {T} tokens; each cell the mean over the variant's seeds (seeds in the first "
         f"column), (min-max) over seeds where there are several. Retrieval: mean over "
         f"{len(first['depths'])} depths x {first['samples']} prompts per length, greedy "
         f"answers.", '']
for task, title in [*RETRIEVAL.items(), ('ruler', 'RULER-style tasks, mean of the six')]:
    lines += [f"**{title}**", '', f"| variant (seeds) | layers | {columns} |",
              '|---|---|' + '---|' * len(lengths)]
    for n in chosen:
        # {length: {depth: score}}, or RULER's {task: {length: score}}
        rows = [ev[r][task] for r in by_variant[n]]
        by_length = {L: [avg(row[t][L] for t in row) if task == 'ruler' else avg(row[L].values())
                         for row in rows] for L in lengths}
        summary[n][task] = by_length
        lines.append(f"| {n} ({n_seeds[n]}) | {label(n)} | "
                     + ' | '.join(spread(by_length[L]) for L in lengths) + ' |')
    lines.append('')
for k in first.get('binding', {}):  # retrieval by key: needles in one wording, one asked
    lines += [f"**binding: {k} needles in one wording (the held-out one), one asked: the asked "
              f"needle's value, and in brackets another needle's** ({first['binding_samples']} "
              f"prompts a cell)", '', f"| variant (seeds) | layers | {columns} |",
              '|---|---|' + '---|' * len(lengths)]
    for n in chosen:
        got = {o: {L: [ev[r]['binding'][k][L][o] for r in by_variant[n]] for L in lengths}
               for o in ('asked', 'other')}
        summary[n][f'binding{k}'] = got
        lines.append(f"| {n} ({n_seeds[n]}) | {label(n)} | "
                     + ' | '.join(f"{spread(got['asked'][L])} ({spread(got['other'][L])})"
                                  for L in lengths) + ' |')
    lines.append('')
lines += [f"**Language modelling**: validation loss at the training length ({T}), and mean loss "
          f"over the first {T} and {lengths[-1]} tokens of held-out documents (loss by position: "
          f"ppl_by_position.png). {TIMES}", '',
          '| variant (seeds) | layers | val loss at T | loss over T | over 8T | train s '
          '| eval + analysis s |', '|---|---|---|---|---|---|---|']
for n in chosen:
    rs = by_variant[n]
    summary[n]['short_val_loss'] = [ev[r]['short_val_loss'] for r in rs]
    over = lambda L: spread([ev[r]['ppl']['by_length'][L] for r in rs], '{:.3f}')
    lines.append(f"| {n} ({n_seeds[n]}) | {label(n)} | "
                 f"{spread(summary[n]['short_val_loss'], '{:.3f}')} | {over(str(T))} | "
                 f"{over(lengths[-1])} | {seconds(rs)} |")
for L in att[runs[0][2]]['results']:
    lines += ['', f"Attention of the question+answer rows on needle prompts of {L} tokens, "
                  f"averaged over the layers of each kind and over seeds: mass on the first "
                  f"{att[runs[0][2]]['sink']} tokens (begin), the needle, the rest of the context "
                  f"and the question+answer; entropy in nats:", '',
              '| variant | layers | begin | needle | context | question | entropy |',
              '|---|---|---|---|---|---|---|']
    for n in chosen:
        rs = by_variant[n]
        for kind, r in att[rs[0]]['results'][L]['kinds'].items():
            mass = {seg: np.mean([att[x]['results'][L]['kinds'][kind]['mass'][seg] for x in rs])
                    for seg in ('begin', 'needle', 'context', 'question')}
            ent = np.mean([att[x]['results'][L]['kinds'][kind]['entropy'] for x in rs])
            lines.append(f"| {n} | `{kind}` ×{r['layers']} | "
                         + ' | '.join(f"{v:.3f}" for v in mass.values()) + f" | {ent:.2f} |")
bind = {r: load(r, 'attention_needles2.json') for _, _, r in runs}
for L in bind[runs[0][2]]['results']:
    lines += ['', f"Attention of the question's last token (it predicts the answer), two needles "
                  f"in one wording ({L} tokens), averaged over the layers of each kind and over "
                  f"seeds: mass on the asked needle and on the other:", '',
              '| variant | layers | asked needle | other needle | ratio |', '|---|---|---|---|---|']
    for n in chosen:
        rs = by_variant[n]
        for kind, x in bind[rs[0]]['results'][L]['kinds'].items():
            asked, other = (np.mean([bind[r]['results'][L]['kinds'][kind]['mass'][s] for r in rs])
                            for s in ('needle', 'other needles'))
            lines.append(f"| {n} | `{kind}` ×{x['layers']} | {asked:.3f} | {other:.3f} | "
                         f"{asked / max(other, 1e-9):.1f} |")


def draw(plt):
    # retrieval against length, one panel per task
    panels = [(task, {n: summary[n][task] for n in chosen},
               'exact match' if task == 'passkey' else 'found') for task in RETRIEVAL]
    panels += [(f'binding, {k} needles', {n: summary[n][f'binding{k}']['asked'] for n in chosen},
                'asked value') for k in first.get('binding', {})]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, values, ylabel) in zip(axes[0], panels):
        draw_by_length(ax, values, T, title, ylabel)
    names = [save(fig, 'retrieval_by_length.png')]
    # needle in a haystack: per variant (its first seed), the score over lengths x depths
    fig, axes = plt.subplots(1, len(chosen), figsize=(2.6 * len(chosen) + 0.6, 2.8), squeeze=False)
    for ax, n in zip(axes[0], chosen):
        draw_heatmap(ax, ev[by_variant[n][0]]['niah'], f"{n}", fontsize=6)
    fig.suptitle(f"needle in a haystack, trained at {T} tokens", fontsize=9)
    names.append(save(fig, 'niah.png'))
    # loss by position, all variants (first seeds) on one plot
    fig, ax = plt.subplots(figsize=(6, 3.6))
    draw_ppl(ax, {n: ev[by_variant[n][0]]['ppl']['buckets'] for n in chosen}, T)
    names.append(save(fig, 'ppl_by_position.png'))
    # attention against distance, per layer kind of every variant (first seeds), at the training
    # length
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for n in chosen:
        draw_distance(ax, att[by_variant[n][0]]['results'][str(T)]['layers'],
                      f'attention by distance, context {T}', prefix=f"{n} ")
    return names + [save(fig, 'attention_distance.png')]


finish('results.md', '\n'.join(lines) + '\n', 'results.json', dict(
    block_size=T, lengths=lengths, seeds=n_seeds, variants=summary,
    runs={r: dict(eval=ev[r], times=tm[r]) for _, _, r in runs}), draw)
