"""
What the scripts share beyond their settings, each problem again one line from configurator.fail():
where to run, how to write a file, how to load a checkpoint, and how to count FLOPs for MFU.
"""

import os
import sys
import time
from dataclasses import asdict, fields

import torch

from configurator import fail
from hub import local_folder
from model import GPT, GPTConfig

DTYPES = ('float32', 'bfloat16', 'float16')


def resolve_device(device, dtype):
    """The settings device ('auto', 'cpu', 'cuda', 'cuda:1', 'mps') and dtype ('auto' or one of
    DTYPES) -> (device string, torch dtype). 'auto' picks a CUDA GPU, else Apple's MPS, else the
    CPU; and bfloat16 on a GPU that has it, else float32."""
    if device == 'auto':
        mps = torch.backends.mps.is_available()
        device = 'cuda' if torch.cuda.is_available() else 'mps' if mps else 'cpu'
    kind = device.split(':')[0]
    if kind not in ('cpu', 'cuda', 'mps'):
        fail(f"device={device!r} must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if (kind == 'cuda' and not torch.cuda.is_available()
            or kind == 'mps' and not torch.backends.mps.is_available()):
        fail(f"device={device!r} but this machine has no such device: use --device=cpu (or auto)")
    if dtype == 'auto':
        dtype = 'bfloat16' if kind == 'cuda' and torch.cuda.is_bf16_supported() else 'float32'
    if dtype not in DTYPES:
        fail(f"dtype={dtype!r} must be 'auto' or one of {', '.join(DTYPES)}")
    return device, getattr(torch, dtype)


def write_atomic(path, write):
    """write(tmp) to a temporary name, then rename it to path: a crash never leaves half a file."""
    tmp = path + '.tmp'
    write(tmp)
    os.replace(tmp, path)


def load_checkpoint(path, device='cpu', dtype=None):
    """(model in eval mode on device, in dtype if given, the checkpoint dict) from train.py's
    ckpt.pt. Anything else raises ValueError: one line naming the file, what is wrong and the fix.
    weights_only=True: unpickling may build tensors and plain values only, never run code."""
    refuse = lambda problem: ValueError(f"{path} is not loaded: {problem}")
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # a folder, text, a truncated file, a pickle that would run code...
        why = (str(e) or type(e).__name__).splitlines()[0]
        raise refuse(f"not a checkpoint of tensors and plain values ({why})")
    args, state = (ckpt.get(k) if isinstance(ckpt, dict) else None for k in ('model_args', 'model'))
    if not isinstance(args, dict) or not isinstance(state, dict):
        bare = (isinstance(ckpt, dict) and ckpt
                and all(isinstance(v, torch.Tensor) for v in ckpt.values()))
        raise refuse(("it holds a bare state_dict; " if bare else "") + "a checkpoint is "
                     "dict(model=model.state_dict(), model_args=dataclasses.asdict(model.config)), "
                     "as train.py writes it")
    unknown = sorted(map(str, set(args) - {f.name for f in fields(GPTConfig)}))
    if unknown:
        raise refuse(f"settings this model.py does not know ({', '.join(unknown)}), from a newer "
                     f"version: update it")
    try:
        model = GPT(GPTConfig(**args))
    except (TypeError, ValueError, ArithmeticError) as e:
        raise refuse(f"its model_args do not make a model ({e})")
    # names as a compiled or a DDP-wrapped model writes them
    state = {k.removeprefix('_orig_mod.').removeprefix('module.'): v for k, v in state.items()}
    want = model.state_dict()
    shape = lambda t: f"shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else 'none'
    for name in sorted(set(want) | set(state)):
        if shape(state.get(name)) != shape(want.get(name)):
            raise refuse(f"tensor {name}: the checkpoint holds {shape(state.get(name))}, its "
                         f"model_args make {shape(want.get(name))}; the settings do not match the "
                         f"weights")
        if state[name].is_floating_point() and not torch.isfinite(state[name]).all():
            raise refuse(f"{name} holds non-finite values (nan or inf): the run diverged; use an "
                         f"earlier checkpoint")
    model.load_state_dict(state)
    ckpt.setdefault('config', {})  # settings and tokenizer: a hand-made one may lack them
    ckpt.setdefault('tokenizer', 'gpt2' if model.config.vocab_size >= 50257 else None)
    if ckpt['tokenizer'] == 'gpt2' and model.config.vocab_size < 50257:
        raise refuse(f"vocab_size={model.config.vocab_size} is smaller than its tokenizer's "
                     f"(GPT-2, 50257 tokens)")
    return model.eval().to(device=device, dtype=dtype), ckpt


def load_model(out_dir, device='cpu', dtype=None, init_from=''):
    """load_checkpoint(out_dir/ckpt.pt): (the model in eval mode, the checkpoint dict), or one line
    from fail() naming what is wrong: no checkpoint, or one that is not a train.py checkpoint of
    finite weights that fit its settings. Loaded with weights_only=True, so a checkpoint from
    elsewhere can hold tensors and plain values but never code: a pickle that would run some is
    refused too. With init_from, a transformers checkpoint instead (hub.py: a hub name or a
    folder), with its own tokenizer."""
    if init_from:
        try:
            folder = local_folder(init_from)
            model = GPT.from_pretrained(folder, dtype or torch.float32)
        except ValueError as e:
            fail(str(e))
        return model.to(device), dict(model_args=asdict(model.config), config={}, tokenizer=folder)
    path = os.path.join(out_dir, 'ckpt.pt')
    if os.path.isfile(out_dir):
        fail(f"--out_dir={out_dir} is a file: give the directory that holds ckpt.pt")
    if not os.path.exists(path):
        fail(f"no checkpoint at {path}: train one (python train.py config/hybrid_tiny.py) or set "
             f"--out_dir")
    if not os.path.isfile(path):
        fail(f"{path} is not a file: remove it, or set --out_dir")
    try:
        return load_checkpoint(path, device, dtype)
    except ValueError as e:
        fail(str(e))


def output_dir(out_dir, init_from):
    """Where a script reads ckpt.pt and writes what it measures: out_dir if given; else, for an
    imported model (init_from), out-<its name>; else the main job's out-hybrid-long."""
    if out_dir:
        return out_dir
    return f"out-{os.path.basename(init_from.rstrip('/'))}" if init_from else 'out-hybrid-long'


def flops_per_token(model, T):
    """Training FLOPs (forward + backward = 3x forward) per token of model.GPT `model` at context
    length T: MFU's numerator, beside matmul_peak_flops. Matmuls: 2 FLOPs per weight per token
    forward, so 6N in all; the tied embedding matrix counts once, as the lm_head matmul (the
    embedding lookup itself is free). Attention: q.k and att.v cost 4 * hd FLOPs per (query head,
    visible key) pair forward, so 12 * nh * hd per pair in all. Only visible keys count: on average
    (T+1)/2 for a causal layer, fewer under a window W. GQA shrinks N (smaller k and v projections)
    but not the attention term."""
    cfg = model.config
    N = sum(p.numel() for p in model.parameters() if p.dim() == 2)
    hd = cfg.n_embd // cfg.n_head
    full_keys = (T + 1) / 2
    W = min(cfg.sliding_window, T)
    window_keys = (W * (W + 1) / 2 + (T - W) * W) / T  # mean over i of min(i + 1, W)
    keys = sum(window_keys if kind == 'S' else full_keys for kind in cfg.layer_kinds())
    return 6 * N + 12 * cfg.n_head * hd * keys


def matmul_peak_flops(device, dtype, n=2048, repeat=10):
    """This device's achievable FLOP/s: the best of `repeat` timed n x n matmuls in `dtype`.
    MFU against it says how close training runs to what the hardware really does."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    best = float('inf')
    for _ in range(repeat + 1):  # the first call warms up
        if device.type == 'cuda':
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device.type == 'cuda':
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def keep_freed_memory():
    """On Linux CPUs: glibc returns every large freed buffer (activations, gradients, a loss chunk's
    logits) to the OS, and the next step page-faults it back in, 4 KiB at a time. Keeping freed
    memory in the process (mmap threshold 1 GiB, no trimming) still pays with the chunked loss: 2-4%
    more tokens/s for about 0.1 GiB more resident memory (`python bench.py --sections=loss`,
    results/bench/README.md)."""
    if sys.platform.startswith('linux'):
        import ctypes
        libc = ctypes.CDLL('libc.so.6')
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 31)  # M_TRIM_THRESHOLD


def have_matplotlib(skipped):
    """Whether matplotlib, the optional extra for plots, is installed. Without it, one line names
    the plot skipped and how to install it: a missing picture is never silent."""
    try:
        import matplotlib
        matplotlib.use('Agg')  # files only, no window
        return True
    except ImportError:
        print(f"matplotlib is not installed: skipped {skipped} (pip install matplotlib)")
        return False
