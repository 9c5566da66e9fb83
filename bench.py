"""
Speed and memory of the hybrid ('SSSN') against a full-attention RoPE model ('R') of the same
size, side by side in one run. Prints tables and writes results/bench/bench.json and bench.png (with
matplotlib):

    python bench.py                                  # about 10 minutes on 2 CPU cores
    python bench.py --sections=decode,recompute      # some sections only
    python bench.py --n_layer=12 --n_embd=768 --n_head=12 --n_kv_head=4 --sliding_window=1024

Sections:
  train      a training step (forward, backward, AdamW): tokens/s and MFU against the measured
             matmul peak, and the speed-up of the hybrid next to the one its FLOP count predicts
  attention  one attention layer alone, forward+backward: a sliding-window 'S' layer against a
             full one, and how each grows with T (forward only at the longest length)
  prefill    a long prompt through the KV cache in chunks: time and peak memory (each in a fresh
             process, so the peak is its own; RSS on the CPU, max_memory_allocated on a GPU)
  decode     ms per token at a given context, eager and with the one-token step compiled
             (GPT.decode_step under torch.compile), the KV cache's bytes, and the memory-bandwidth
             bound: the time to read the weights and the cache once at the measured copy bandwidth
  recompute  the same decode step without a cache, recomputing the whole context (as nanoGPT's
             generate does)
  loss       a training step with the chunked loss (kernels.ChunkedCrossEntropy) against the plain
             one that makes every logit of the batch (F.cross_entropy), and with and without keeping
             freed memory (common.keep_freed_memory): tokens/s and peak memory, each run in a fresh
             process
  load       not in the default sections: a random SmolLM3-shaped model of 1.08B parameters written
             as a transformers folder in bfloat16 (2.0 GiB), then GPT.from_pretrained in bfloat16
             and one forward pass (which reads every weight) in a fresh process: its peak resident
             memory against the weights' bytes (python bench.py --sections=load
             --out=results/bench/load.json --plot=)
  prepare    not in the default sections: prepare_data.py on generated corpora of jsonl.gz
             (documents of random passages of the plays) with 1 and more worker processes: tokens
             per second, against tiktoken's encode_ordinary_batch on one thread in one process, and
             the peak memory of the process and its workers together (Linux; python bench.py
             --sections=prepare --out=results/bench/prepare.json --plot=)

The two models alternate (A B A B ...) so that machine noise falls on both, and every figure is the
median of `reps` runs. Weights are random: speed and memory do not depend on them.
"""

import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from common import (flops_per_token, have_matplotlib, keep_freed_memory, matmul_peak_flops,
                    resolve_device, write_atomic)
from configurator import configure, fail
from model import GPT, GPTConfig, attend

# the model: hybrid_long's shape when the figures in results/ were measured (it has since become 2
# heads of 64, each with its own k/v, and a window of 16)
n_layer: '[1, inf)' = 8
n_head: '[1, inf)' = 4
n_kv_head: '[1, inf)' = 2
n_embd: '[2, inf)' = 128
sliding_window: '[1, inf)' = 256
patterns = ('SSSN', 'R')           # the hybrid and its full-attention twin
# what to measure
sections = 'train,attention,prefill,decode,recompute,loss'
train_lengths: '[1, inf)' = (512, 2048, 8192)
train_tokens: '[1, inf)' = 4096           # tokens per training step (batch = train_tokens // T, at
                                          # least 1)
attn_lengths: '[1, inf)' = (1024, 4096, 16384)
attn_forward_length: '[1, inf)' = 65536   # forward only, at this length
prefill_lengths: '[1, inf)' = (4096, 16384, 32768)
prefill_chunk: '[1, inf)' = 1024
decode_lengths: '[1, inf)' = (1024, 8192, 32768)
decode_tokens: '[2, inf)' = 64            # tokens per decode measurement; the steps after the first
                                          # are timed
decode_modes = ('eager', 'compiled')       # compiled: GPT.decode_step under torch.compile, compiled
                                           # once per shape
recompute_lengths: '[1, inf)' = (1024, 8192)
loss_length: '[1, inf)' = 2048            # the loss section's context (batch train_tokens //
                                          # loss_length)
loss_steps: '[2, inf)' = 12               # training steps per process; the median of the second
                                          # half (steady state)
prepare_runs = ((100, 1), (100, 2), (1000, 2))  # (MB of jsonl.gz, worker processes) per run
reps: '[1, inf)' = 3                      # runs per measurement (median), after a warm-up; the
                                          # longest run once
device = 'auto'
dtype = 'float32'
out = 'results/bench/bench.json'
plot = 'results/bench/bench.png'   # '' = no plot
worker = ''                        # internal: 'prefill:PATTERN:LENGTH',
                                   # 'loss:plain|chunked:keep|release' or 'load:FOLDER' runs one
                                   # measurement and prints its JSON
configure(globals())

device, ptdtype = resolve_device(device, dtype)
dev = torch.device(device)
cuda = dev.type == 'cuda'


def model_for(pattern, block_size=2048):
    cfg = GPTConfig(n_layer=n_layer, n_head=n_head, n_kv_head=n_kv_head, n_embd=n_embd,
                    block_size=block_size,
                    layer_pattern=pattern, sliding_window=sliding_window)
    torch.manual_seed(0)
    return GPT(cfg).to(dev)


def sync():
    if cuda:
        torch.cuda.synchronize()


def timed(fn):
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def alternate(fns, n):
    """{name: median seconds} of n runs of each fn, taken in turn (A B A B ...) after one warm-up
    each. Runs so long that a warm-up would not matter (n = 1, or a warm-up over 10 s) are timed
    once."""
    if n > 1:
        warm = [timed(fn) for fn in fns.values()]
        n = n if max(warm) < 10 else 1
    times = {name: [] for name in fns}
    for _ in range(n):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def table(title, header, rows):
    print(f"\n{title}")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header] + rows:
        print('  '.join(f"{str(x):>{w}}" for x, w in zip(row, widths)))


def peak_memory():
    """Peak bytes so far: GPU memory allocated, or the process's peak resident memory (VmHWM on
    Linux: unlike ru_maxrss, it starts afresh at exec instead of inheriting the parent's peak)."""
    if cuda:
        return torch.cuda.max_memory_allocated()
    if os.path.exists('/proc/self/status'):
        return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status')
                    if l.startswith('VmHWM'))
    unit = 1 if sys.platform == 'darwin' else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit


def in_child(job):
    """Run one measurement (`worker`) in a fresh process with this run's settings: its JSON as a
    dict, or None."""
    cmd = [sys.executable, __file__, f'--worker={job}', f'--device={device}', f'--dtype={dtype}',
           f'--n_layer={n_layer}', f'--n_head={n_head}', f'--n_kv_head={n_kv_head}',
           f'--n_embd={n_embd}',
           f'--sliding_window={sliding_window}', f'--prefill_chunk={prefill_chunk}',
           f'--patterns={tuple(patterns)!r}',
           f'--train_tokens={train_tokens}', f'--loss_length={loss_length}',
           f'--loss_steps={loss_steps}']
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        print(f"{job} failed: {proc.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -----------------------------------------------------------------------------
# prefill and loss run in child processes: a process's peak memory only ever grows, so each
# measurement gets its own
autocast = nullcontext() if ptdtype == torch.float32 else torch.autocast(dev.type, dtype=ptdtype)
if worker.startswith('prefill:'):
    _, pattern, length = worker.split(':')
    model = model_for(pattern).eval().to(ptdtype)
    idx = torch.randint(0, 50257, (1, int(length)), device=dev)
    base = peak_memory()

    @torch.no_grad()
    def prefill():
        cache = model.new_cache(1, idx.size(1), ptdtype, dev)
        for chunk in idx.split(prefill_chunk, dim=1):
            h = model.hidden(chunk, cache)
        return model.lm_head(h[:, -1]), cache
    seconds = timed(prefill)
    print(json.dumps(dict(seconds=seconds, peak_bytes=peak_memory(), base_bytes=base)))
    sys.exit(0)
if worker.startswith('loss:'):
    _, loss_mode, memory = worker.split(':')
    if memory == 'keep' and not cuda:
        keep_freed_memory()
    model = model_for(patterns[0], loss_length)
    opt = model.configure_optimizers(0.1, 1e-4, (0.9, 0.95), dev.type)
    x = torch.randint(0, 50257, (max(1, train_tokens // loss_length), loss_length), device=dev)

    def step():
        with autocast:
            # what GPT.forward did before the chunked loss: every logit of the batch at once
            if loss_mode == 'plain':
                logits = model.lm_head(model.hidden(x))
                loss = F.cross_entropy(logits.flatten(0, 1).float(), x.flatten())
            else:
                _, loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    seconds = [timed(step) for _ in range(loss_steps)]
    print(json.dumps(dict(seconds=statistics.median(seconds[loss_steps // 2:]),
                          first_seconds=seconds[:loss_steps // 2], peak_bytes=peak_memory())))
    sys.exit(0)
if worker.startswith('load:'):
    base = peak_memory()  # the interpreter and torch, before any weight
    model = GPT.from_pretrained(worker[len('load:'):], dtype=torch.bfloat16)
    with torch.no_grad():
        # every weight read once: the lm_head is the whole embedding
        model(torch.zeros(1, 16, dtype=torch.long))
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    print(json.dumps(dict(peak_bytes=peak_memory(), base_bytes=base, weight_bytes=weight_bytes)))
    sys.exit(0)
if not cuda:
    # as train.py does (not in the prefill processes above: sample.py does not either)
    keep_freed_memory()
wanted = [s for s in sections.split(',') if s]
if not wanted or set(wanted) - {'train', 'attention', 'prefill', 'decode', 'recompute', 'loss',
                                'load', 'prepare'}:
    fail(f"sections={sections!r}: choose from train,attention,prefill,decode,recompute,loss,load,"
         f"prepare (comma-separated)")
if 'prepare' in wanted and not os.path.exists('/proc/self/smaps_rollup'):
    fail("the prepare section reads memory from /proc (Linux): run it there, or leave it out")
if not decode_modes or set(decode_modes) - {'eager', 'compiled'}:
    fail(f"decode_modes={decode_modes!r}: choose from eager,compiled (comma-separated)")


def device_name():
    if cuda:
        return torch.cuda.get_device_name(dev)
    try:
        return next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo')
                    if l.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor() or 'CPU'


name = device_name()
machine = dict(device=name, threads=torch.get_num_threads(), torch=torch.__version__, dtype=dtype,
               date=time.strftime('%Y-%m-%d'))
print(f"{name}, {machine['threads']} threads, torch {torch.__version__}, {dtype}; model: {n_layer} "
      f"layers, "
      f"n_embd {n_embd}, {n_head} heads ({n_kv_head} kv), window {sliding_window}; patterns "
      f"{patterns}")
results = dict(machine=machine, model=dict(n_layer=n_layer, n_head=n_head, n_kv_head=n_kv_head,
                                           n_embd=n_embd,
                                           sliding_window=sliding_window), patterns=list(patterns))
t_start = time.time()

# -----------------------------------------------------------------------------
if 'train' in wanted:
    peak = matmul_peak_flops(dev, ptdtype, n=8192 if cuda else 2048)
    print(f"\nmatmul peak of this device ({dtype}): {peak / 1e9:,.0f} GFLOP/s")
    rows, results['train'] = [], dict(peak_flops=peak, rows=[])
    for T in train_lengths:
        models = {p: model_for(p, T) for p in patterns}
        opts = {p: m.configure_optimizers(0.1, 1e-4, (0.9, 0.95), dev.type)
                for p, m in models.items()}
        B = max(1, train_tokens // T)
        x = torch.randint(0, 50257, (B, T), device=dev)

        def step(p):
            def run():
                with autocast:
                    _, loss = models[p](x, x)
                loss.backward()
                opts[p].step()
                opts[p].zero_grad(set_to_none=True)
            return run
        dt = alternate({p: step(p) for p in patterns}, reps)
        flops = {p: flops_per_token(models[p], T) for p in patterns}
        a, b = patterns[0], patterns[-1]
        measured, predicted = dt[b] / dt[a], flops[b] / flops[a]
        for p in patterns:
            tok_s = B * T / dt[p]
            mfu = flops[p] * tok_s / peak
            speedup = ([f"{predicted:.2f}x", f"{measured:.2f}x",
                        f"{100 * measured / predicted:.0f}%"] if p == a else ['', '', ''])
            rows.append([T, p, f"{tok_s:,.0f}", f"{100 * mfu:.0f}%", f"{flops[p] / 1e6:.0f}"]
                        + speedup)
            results['train']['rows'].append(dict(T=T, pattern=p, batch=B, seconds=dt[p],
                                                 tokens_per_s=tok_s, mfu=mfu,
                                                 flops_per_token=flops[p]))
        results['train'].setdefault('speedup', {})[T] = dict(predicted=predicted, measured=measured)
        del models, opts
    table(f"training step, {train_tokens} tokens per step (median of {reps} after a warm-up; steps "
          f"over 10 s: one)",
          ['T', 'layers', 'tokens/s', 'MFU', 'MFLOP/token', 'predicted speed-up', 'measured',
           'measured/predicted'], rows)

# -----------------------------------------------------------------------------
if 'attention' in wanted:
    hd = n_embd // n_head
    rows, results['attention'] = [], []

    def attention(T, window, backward):
        q = torch.randn(1, n_head, T, hd, device=dev, dtype=ptdtype, requires_grad=backward)
        k, v = (torch.randn(1, n_kv_head, T, hd, device=dev, dtype=ptdtype, requires_grad=backward)
                for _ in range(2))
        pos = torch.arange(T, device=dev)

        def run():
            with torch.set_grad_enabled(backward):
                y = attend(q, k, v, pos, pos, window)
                if backward:
                    y.backward(torch.ones_like(y))
        return run
    for T, backward in [(T, True) for T in attn_lengths] + [(attn_forward_length, False)]:
        n = reps if T <= 16384 else 1
        dt = alternate({'S': attention(T, sliding_window, backward),
                        'full': attention(T, None, backward)}, n)
        results['attention'].append(dict(T=T, backward=backward, S=dt['S'], full=dt['full']))
        rows.append([T, 'fwd+bwd' if backward else 'fwd', f"{dt['S'] * 1e3:,.1f}",
                     f"{dt['full'] * 1e3:,.1f}", f"{dt['full'] / dt['S']:.1f}x"])
    grow = [r for r in results['attention'] if r['backward']]
    # how the time grows with T: 4x for linear cost, 16x for quadratic
    for r0, r1 in zip(grow, grow[1:]):
        rows.append([f"{r1['T']}/{r0['T']}", 'growth', f"x{r1['S'] / r0['S']:.2f}",
                     f"x{r1['full'] / r0['full']:.2f}", ''])
    table(f"one attention layer ({n_head} heads, {n_kv_head} kv, head dim {hd}, window "
          f"{sliding_window}; median of {reps} after a warm-up; 1 run at {attn_forward_length})",
          ['T', 'pass', "'S' ms", 'full ms', 'full / S'], rows)

# -----------------------------------------------------------------------------
if 'prefill' in wanted:
    rows, results['prefill'] = [], []
    for L in prefill_lengths:
        for p in patterns:
            r = in_child(f'prefill:{p}:{L}')
            if r is None:
                continue
            r.update(T=L, pattern=p)
            results['prefill'].append(r)
            rows.append([L, p, f"{r['seconds']:.1f}", f"{L / r['seconds']:,.0f}",
                         f"{r['peak_bytes'] / 2**20:,.0f}",
                         f"{(r['peak_bytes'] - r['base_bytes']) / 2**20:,.0f}"])
    what = 'GPU memory allocated' if cuda else 'resident memory of the process'
    table(f"prefill in chunks of {prefill_chunk} (one run each, each in a fresh process; peak "
          f"{what})",
          ['tokens', 'layers', 'seconds', 'tokens/s', 'peak MiB', 'above model MiB'], rows)

# -----------------------------------------------------------------------------
if 'decode' in wanted or 'recompute' in wanted:
    n_bytes = 256 * 2 ** 20  # initialised: copying never-touched memory reads the zero page and
                             # looks faster
    src, dst = torch.randn(n_bytes // 4, device=dev), torch.randn(n_bytes // 4, device=dev)
    copy_s = min(timed(lambda: dst.copy_(src)) for _ in range(6))
    bandwidth = 2 * n_bytes / copy_s  # bytes read + written per second (STREAM's convention for
                                      # copy)
    del src, dst
    print(f"\ncopy bandwidth: {bandwidth / 1e9:.1f} GB/s (a {n_bytes // 2**20} MiB copy, read + "
          f"write)")
    models = {p: model_for(p).eval().to(ptdtype) for p in patterns}
    weight_bytes = {p: sum(t.numel() * t.element_size() for t in m.parameters())
                    for p, m in models.items()}
    results['decode'] = dict(bandwidth=bandwidth, rows=[])
    rows = []

    def filled_cache(model, L):
        """A KV cache holding L positions of random keys and values, as a prefill would leave it."""
        cache = model.new_cache(1, L + decode_tokens + 1, ptdtype, dev)
        for c in cache:
            kv = torch.randn(1, c.k.size(1), L, c.k.size(3), device=dev, dtype=ptdtype)
            c.update(kv, kv, torch.arange(L, device=dev))
        return cache

    def decode(model, cache, L, mode):
        """Seconds per token of greedy decoding through the cache, as sample.py runs it: from the
        first token yielded (the prefill's) to the last, so decode_tokens - 1 steps, each one token
        through every layer."""
        for c in cache:
            c.seen = L  # every run decodes positions L, L + 1, ... again: the same work each time
        x = torch.zeros(1, 1, dtype=torch.long, device=dev)
        when = []
        for _ in model.stream(x, decode_tokens, temperature=0, cache=cache,
                              compile=mode == 'compiled'):
            sync()
            when.append(time.perf_counter())
        return (when[-1] - when[0]) / (decode_tokens - 1)

    if 'decode' in wanted:
        for L in decode_lengths:
            caches = {p: filled_cache(models[p], L) for p in patterns}
            runs = {(p, m): (lambda p=p, m=m: decode(models[p], caches[p], L, m))
                    for p in patterns for m in decode_modes}
            # not alternate(): the runs time themselves, and even with reps = 1 need
            for run in runs.values():
                run()  # a warm-up, outside the timing, in which the first compiled run compiles
            times = {k: [] for k in runs}
            for _ in range(reps):  # in turn, A B A B ..., as in alternate()
                for k, run in runs.items():
                    times[k].append(run())
            for p, m in runs:
                kv = sum(c.nbytes() for c in caches[p])
                kv_read = sum(c.nbytes() * min(L, c.pos.numel()) / c.pos.numel() for c in caches[p])
                bound = (weight_bytes[p] + kv_read) / bandwidth
                ms = statistics.median(times[p, m])
                results['decode']['rows'].append(dict(T=L, pattern=p, mode=m, ms_per_token=1e3 * ms,
                                                      kv_bytes=kv, bound_ms=1e3 * bound))
                rows.append([L, p, m, f"{1e3 * ms:.1f}", f"{kv / 2**20:,.1f}", f"{1e3 * bound:.1f}",
                             f"{ms / bound:.1f}x"])
            del caches
        ideal = {}
        for L in decode_lengths:
            kv = {r['pattern']: r['kv_bytes'] for r in results['decode']['rows'] if r['T'] == L}
            a, b = patterns[0], patterns[-1]
            kinds = GPTConfig(n_layer=n_layer, n_head=n_head, layer_pattern=a).layer_kinds()
            n = L + decode_tokens + 1  # the positions each cache was made for
            ideal[L] = sum(min(sliding_window, n) / n if k == 'S' else 1 for k in kinds) / n_layer
            rows.append(['', f"{a}/{b}", '', f"KV {kv[a] / kv[b]:.3f}", f"ideal {ideal[L]:.3f}", '',
                         f"{kv[a] / kv[b] / ideal[L]:.3f}x"])
        results['decode']['kv_ideal_ratio'] = ideal
        table(f"decode through the KV cache ({decode_tokens - 1} steps at each context, median of "
              f"{reps}; bound: weights "
              f"{weight_bytes[patterns[0]] / 2**20:,.0f} MiB + cache read at {bandwidth / 1e9:.1f} "
              f"GB/s)",
              ['context', 'layers', 'step', 'ms/token', 'KV MiB', 'bound ms', 'over bound'], rows)

    if 'recompute' in wanted:
        rows, results['recompute'] = [], []

        @torch.no_grad()
        def recompute(model, idx):
            # the whole context again, for one token
            return model.lm_head(model.hidden(idx)[:, -1]).argmax(-1)
        for L in recompute_lengths:
            idx = torch.randint(0, 50257, (1, L), device=dev)
            dt = alternate({p: (lambda p=p: recompute(models[p], idx)) for p in patterns},
                           1 if L > 4096 else reps)
            cached = {r['pattern']: r['ms_per_token']
                      for r in results.get('decode', {}).get('rows', [])
                      if r['T'] == L and r['mode'] == decode_modes[0]}
            for p in patterns:
                results['recompute'].append(dict(T=L, pattern=p, ms_per_token=1e3 * dt[p]))
                speedup = ([f"{cached[p]:.1f}", f"{1e3 * dt[p] / cached[p]:,.0f}x"] if p in cached
                           else ['', ''])
                rows.append([L, p, f"{1e3 * dt[p]:,.0f}"] + speedup)
        table("decode without a cache: the whole context recomputed for each token",
              ['context', 'layers', 'ms/token', 'cached ms/token', 'cache speed-up'], rows)

# -----------------------------------------------------------------------------
if 'loss' in wanted:
    # mallopt: CPU only
    modes = [('plain', 'keep'), ('chunked', 'keep')] + ([] if cuda else [('chunked', 'release')])
    runs = {m: [] for m in modes}
    for _ in range(reps):  # in turn, each in a fresh process
        for m in modes:
            r = in_child(f'loss:{m[0]}:{m[1]}')
            if r is not None:
                runs[m].append(r)
    tokens = max(1, train_tokens // loss_length) * loss_length
    rows, results['loss'] = [], []
    base = statistics.median(r['seconds'] for r in runs[modes[0]]) if runs[modes[0]] else None
    for (loss_mode, memory), rs in runs.items():
        if not rs:
            continue
        seconds = statistics.median(r['seconds'] for r in rs)
        peak = max(r['peak_bytes'] for r in rs)
        results['loss'].append(dict(loss=loss_mode, freed_memory=memory, T=loss_length,
                                    tokens=tokens, seconds=seconds,
                                    tokens_per_s=tokens / seconds, peak_bytes=peak, runs=rs))
        first = statistics.median(sum(r['first_seconds']) for r in rs)
        rows.append([loss_mode, 'kept' if memory == 'keep' else 'returned to the OS',
                     f"{tokens / seconds:,.0f}",
                     f"{base / seconds:.3f}x" if base else '', f"{first:.1f}",
                     f"{peak / 2**20:,.0f}"])
    what = 'GPU memory allocated' if cuda else 'resident memory of the process'
    table(f"a training step of {patterns[0]} at T = {loss_length}, {tokens} tokens ({loss_steps} "
          f"steps per process, median "
          f"of the second half; {reps} processes each, in turn; peak {what})",
          ['loss', 'freed memory', 'tokens/s', 'speed vs plain', f'first {loss_steps // 2} steps s',
           'peak MiB'], rows)

# -----------------------------------------------------------------------------
if 'load' in wanted:
    from safetensors.torch import save_file  # an optional extra (transformers installs it)
    # SmolLM3-3B's width and heads, 16 of its 36 layers
    C, L, H, KV, F_, V = 2048, 16, 16, 4, 8192, 50304
    hd, gen = C // H, torch.Generator().manual_seed(0)
    rand = lambda *shape: (torch.randn(*shape, generator=gen)
                           * shape[-1] ** -0.5).to(torch.bfloat16)
    ones = lambda: torch.ones(C, dtype=torch.bfloat16)
    weights = {'model.embed_tokens.weight': rand(V, C), 'model.norm.weight': ones()}
    for i in range(L):
        weights.update({f'model.layers.{i}.{name}.weight': w for name, w in (
            ('self_attn.q_proj', rand(C, C)), ('self_attn.k_proj', rand(KV * hd, C)),
            ('self_attn.v_proj', rand(KV * hd, C)), ('self_attn.o_proj', rand(C, C)),
            ('mlp.gate_proj', rand(F_, C)), ('mlp.up_proj', rand(F_, C)),
            ('mlp.down_proj', rand(C, F_)),
            ('input_layernorm', ones()), ('post_attention_layernorm', ones()))})
    with tempfile.TemporaryDirectory() as folder:
        save_file(weights, os.path.join(folder, 'model.safetensors'), metadata={'format': 'pt'})
        del weights
        json.dump(dict(model_type='smollm3', vocab_size=V, hidden_size=C, intermediate_size=F_,
                       num_hidden_layers=L,
                       num_attention_heads=H, num_key_value_heads=KV,
                       max_position_embeddings=65536),
                  open(os.path.join(folder, 'config.json'), 'w'))
        t = time.time()
        r = in_child(f'load:{folder}')
    if r is not None:
        r['seconds'] = time.time() - t
        results['load'] = r
        table("GPT.from_pretrained of a 1.08B-parameter SmolLM3 folder in bfloat16, then one "
              "forward pass (a fresh process; peak resident memory)",
              ['weights MiB', 'peak MiB', 'before loading MiB', 'peak / weights',
                                                 '(peak - before) / weights', 'seconds'],
              [[f"{r['weight_bytes'] / 2**20:,.0f}", f"{r['peak_bytes'] / 2**20:,.0f}",
                f"{r['base_bytes'] / 2**20:,.0f}",
                f"{r['peak_bytes'] / r['weight_bytes']:.2f}",
                f"{(r['peak_bytes'] - r['base_bytes']) / r['weight_bytes']:.2f}",
                f"{r['seconds']:.1f}"]])

# -----------------------------------------------------------------------------
if 'prepare' in wanted:
    import gzip
    import numpy as np
    from corpus import DATA, builtin_corpus, get_tokenizer

    def tree_memory(pid):
        """(PSS, RSS) bytes of a process and its children: PSS counts pages that forked workers
        share once, RSS once in each process (an upper bound)."""
        pids, total = [pid], [0, 0]
        for p in pids:
            try:
                pids += map(int, open(f'/proc/{p}/task/{p}/children').read().split())
                for i, (file, field) in enumerate((('smaps_rollup', 'Pss:'), ('status', 'VmRSS:'))):
                    total[i] += next(int(l.split()[1]) * 1024 for l in open(f'/proc/{p}/{file}')
                                     if l.startswith(field))
            except (OSError, StopIteration):  # a process that ended meanwhile
                pass
        return total

    plays, rng = [text for _, text in builtin_corpus()], np.random.default_rng(0)
    results['prepare'], made = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for mb, procs in prepare_runs:
            path = os.path.join(folder, f'{mb}mb.jsonl.gz')
            if path not in made:  # documents of 200 to 8,000 characters from random places
                with open(path, 'wb') as raw, gzip.GzipFile(fileobj=raw, mode='wb') as f:
                    docs = 0
                    while raw.tell() < mb * 1e6:
                        play = plays[rng.integers(len(plays))]
                        at, n = rng.integers(len(play)), rng.integers(200, 8000)
                        f.write((json.dumps(dict(text=play[at:at + n])) + '\n').encode())
                        docs += 1
                made[path] = docs
            name = f'_bench_prepare_{mb}'
            proc = subprocess.Popen([sys.executable, 'prepare_data.py', f'--input={path}',
                                     f'--name={name}', f'--num_proc={procs}'],
                                    cwd=os.path.dirname(os.path.abspath(__file__)),
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            t, peak = time.time(), [0, 0]
            while proc.poll() is None:
                peak = [max(a, b) for a, b in zip(peak, tree_memory(proc.pid))]
                time.sleep(0.1)
            seconds = time.time() - t
            meta = json.load(open(os.path.join(DATA, name, 'meta.json')))
            shutil.rmtree(os.path.join(DATA, name))
            tokens = meta['train_tokens'] + meta['val_tokens']
            r = dict(mb=mb, num_proc=procs, documents=made[path], tokens=tokens, seconds=seconds,
                     tokens_per_s=tokens / seconds, peak_pss=peak[0], peak_rss=peak[1],
                     printed=proc.stdout.read().strip().splitlines()[-1])
            results['prepare'].append(r)
            print(r['printed'])
        # the reference: tiktoken alone on the first 20 MB of text of the smallest corpus
        with gzip.open(os.path.join(folder, f'{min(m for m, _ in prepare_runs)}mb.jsonl.gz'),
                       'rt') as f:
            texts, chars = [], 0
            for line in f:
                texts.append(json.loads(line)['text'])
                chars += len(texts[-1])
                if chars > 20e6:
                    break
    enc = get_tokenizer()
    t = time.time()
    n = sum(map(len, enc.encode_ordinary_batch(texts, num_threads=1)))
    reference = n / (time.time() - t)
    results['prepare_reference_tokens_per_s'] = reference
    table(f"prepare_data.py on generated jsonl.gz (tiktoken's encode_ordinary_batch on one thread: "
          f"{reference / 1e6:.2f}M tokens/s)",
          ['jsonl.gz MB', 'processes', 'documents', 'M tokens', 'seconds', 'M tokens/s',
           'per process vs tiktoken', 'peak PSS MiB', 'peak RSS MiB (sum)'],
          [[r['mb'], r['num_proc'], f"{r['documents']:,}", f"{r['tokens'] / 1e6:,.1f}",
            f"{r['seconds']:.1f}", f"{r['tokens_per_s'] / 1e6:.2f}",
            f"{r['tokens_per_s'] / r['num_proc'] / reference:.2f}",
            f"{r['peak_pss'] / 2**20:,.0f}", f"{r['peak_rss'] / 2**20:,.0f}"]
           for r in results['prepare']])

results['seconds'] = time.time() - t_start
os.makedirs(os.path.dirname(out) or '.', exist_ok=True)
write_atomic(out, lambda tmp: json.dump(results, open(tmp, 'w'), indent=1))
print(f"\nwrote {out} ({results['seconds'] / 60:.1f} minutes)")

if plot and have_matplotlib(plot):
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.4))

    def panel(ax, series, title, xlabel, ylabel):
        for label, xs, ys in series:
            ax.plot(xs, ys, marker='o', label=label)
        ax.set_xscale('log', base=2)
        ax.set_yscale('log')
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        ax.legend(fontsize=7)

    def series(rows, field, scale=1.0):
        """One line per pattern (and per decode step, eager or compiled, where rows have one)."""
        keys = sorted({(r['pattern'], r.get('mode', '')) for r in rows},
                      key=lambda k: (patterns.index(k[0]), k[1]))
        of = lambda p, m: [r for r in rows if (r['pattern'], r.get('mode', '')) == (p, m)]
        return [(f"{p} {m}".strip(), [r['T'] for r in of(p, m)],
                 [r[field] * scale for r in of(p, m)]) for p, m in keys]

    if 'attention' in results:
        rs = [r for r in results['attention'] if r['backward']]
        panel(axes[0][0], [(f"'S' (window {sliding_window})", [r['T'] for r in rs],
                            [r['S'] for r in rs]),
                           ('full causal', [r['T'] for r in rs], [r['full'] for r in rs])],
              'one attention layer, forward+backward', 'T (tokens)', 'seconds')
    if 'prefill' in results:
        panel(axes[0][1], series(results['prefill'], 'seconds'), 'prefill time', 'prompt (tokens)',
              'seconds')
        panel(axes[0][2], series(results['prefill'], 'peak_bytes', 2 ** -30), 'prefill peak memory',
              'prompt (tokens)', 'GiB')
    if results.get('decode', {}).get('rows'):
        panel(axes[1][0], series(results['decode']['rows'], 'ms_per_token'),
              'decode with the KV cache', 'context (tokens)', 'ms per token')
        panel(axes[1][1], series(results['decode']['rows'], 'kv_bytes', 2 ** -20), 'KV cache',
              'context (tokens)', 'MiB')
    if 'recompute' in results:
        panel(axes[1][2], series(results['recompute'], 'ms_per_token'),
              'decode without a cache (recomputation)', 'context (tokens)', 'ms per token')
    fig.suptitle(f"{patterns[0]} vs {patterns[-1]}, {n_layer} layers x {n_embd}: {name}, "
                 f"{machine['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(plot, dpi=80)
    plt.close(fig)
    print(f"wrote {plot}")
