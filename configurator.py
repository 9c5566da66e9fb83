"""
nanoGPT-style configuration. A script defines its settings as plain globals, then calls
configure(globals()) to override them from the command line:

    python train.py config/hybrid_long.py --batch_size=8 --compile=False --out_dir=out-test

Arguments apply left to right. A config/*.py file is plain Python that assigns some of the
settings; --key=value sets one, the value read as a Python literal (strings may go bare:
--init_from=resume; a list is a tuple: --lengths=512,2048). A setting keeps its default's type
(an int may stand for a float, one value for a 1-tuple; a default of None takes any literal).

A config file may begin with include('other.py') (relative to itself) and then set only what differs.

A numeric setting declares its valid range once, as its annotation, in interval notation:

    batch_size: '[1, inf)' = 2        # at least 1
    dropout: '[0, 1)' = 0.0           # from 0 included to 1 excluded
    learning_rate: '(0, inf)' = 2e-3  # above 0

A tuple's every element must lie in the range; None is always allowed. Any mistake (an unknown setting,
a wrong type, a value out of range, a missing file) ends the program with one line on stderr, exit code 2.
"""

import ast
import difflib
import glob
import os
import re
import sys
import types

LITERALS = (bool, int, float, str, tuple, type(None))


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def nearest(word, candidates):
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def checked(key, value, settings, source):
    """value, converted to the type of settings[key]; fail() on an unknown key or a wrong type."""
    if key not in settings:
        fail(f"unknown setting {key!r} in {source}{nearest(key, settings)}; see --help for the list")
    default = settings[key]
    if default is None or type(value) is type(default):
        return value
    if isinstance(default, float) and type(value) is int:
        return float(value)
    if isinstance(default, tuple) and isinstance(value, (int, float, str)):
        return (value,)  # --lengths=512 means the 1-tuple (512,); --lengths=512,2048 parses as a tuple
    fail(f"{key} in {source} expects {type(default).__name__} (default {default!r}), got {value!r}")


def in_range(value, interval):
    """Whether the number value lies in an interval such as '[1, inf)': [ ] include their end, ( ) exclude it."""
    m = re.fullmatch(r'\s*([\[(])\s*([^,]+?)\s*,\s*([^,]+?)\s*([\])])\s*', interval)
    if not m:
        raise ValueError(f"{interval!r} is not an interval like '[1, inf)'")
    lo, hi = float(m.group(2)), float(m.group(3))
    return (value >= lo if m.group(1) == '[' else value > lo) and (value <= hi if m.group(4) == ']' else value < hi)


def read_config(path):
    """The settings a config file assigns: {name: value}. A config can start from another one with
    include('hybrid_long.py') (a path relative to the including file), then assign only what differs."""
    namespace = {}

    def include(name):
        namespace.update(read_config(os.path.join(os.path.dirname(path), name)))

    if not os.path.isfile(path):
        fail(f"config file {path!r} not found")
    try:
        exec(open(path).read(), {'include': include}, namespace)
    except Exception as e:
        fail(f"config file {path!r} does not run: {type(e).__name__}: {e}")
    return {k: v for k, v in namespace.items()
            if not k.startswith('_') and not isinstance(v, (types.ModuleType, types.FunctionType, type))}


def configure(settings, argv=None):
    """Apply config files and --key=value arguments (default: sys.argv[1:]) to `settings`,
    a script's globals. Only lower-case names bound to plain literals count as settings.
    Returns every setting with its final value (to store beside a checkpoint)."""
    known = {k: v for k, v in settings.items() if k.islower() and not k.startswith('_') and isinstance(v, LITERALS)}
    changed = {}
    for arg in sys.argv[1:] if argv is None else argv:
        if arg in ('-h', '--help'):
            width = max(map(len, known))
            print('\n'.join(f"  --{k:<{width}} = {v!r}" for k, v in known.items()))
            sys.exit(0)
        if arg.startswith('--'):
            key, eq, text = arg[2:].partition('=')
            if not eq:
                fail(f"argument {arg!r} needs a value: --{key}=VALUE")
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text  # a bare string
            changed[key] = checked(key, value, known, f"--{key}={text}")
        else:
            if not os.path.isfile(arg):
                found = glob.glob(os.path.join(os.path.dirname(arg) or 'config', '*.py'))  # beside the file asked for
                hint = (nearest(arg, found) or f" (config files: {', '.join(sorted(found))})") if found else ""
                fail(f"config file {arg!r} not found{hint}")
            for key, value in read_config(arg).items():
                changed[key] = checked(key, value, known, arg)
        known.update(changed)
    for key, interval in settings.get('__annotations__', {}).items():  # every setting's range, final values only
        value = known[key]
        for v in value if isinstance(value, tuple) else (value,):
            if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and in_range(v, interval)):
                fail(f"{key}={value!r} is out of range: it must be in {interval}")
    settings.update(changed)
    return known


# -----------------------------------------------------------------------------
# What every script shares beyond its settings, each problem again one line from fail():
# where to run, how to write a file, how to load a checkpoint.

DTYPES = ('float32', 'bfloat16', 'float16')


def resolve_device(device, dtype):
    """The settings device ('auto', 'cpu', 'cuda', 'cuda:1', 'mps') and dtype ('auto' or one of DTYPES)
    -> (device string, torch dtype). 'auto' picks a CUDA GPU, else Apple's MPS, else the CPU; and
    bfloat16 on a GPU that has it, else float32."""
    import torch
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    kind = device.split(':')[0]
    if kind not in ('cpu', 'cuda', 'mps'):
        fail(f"device={device!r} must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if kind == 'cuda' and not torch.cuda.is_available() or kind == 'mps' and not torch.backends.mps.is_available():
        fail(f"device={device!r} but this machine has no such device: use --device=cpu (or auto)")
    if dtype == 'auto':
        dtype = 'bfloat16' if kind == 'cuda' and torch.cuda.is_bf16_supported() else 'float32'
    if dtype not in DTYPES:
        fail(f"dtype={dtype!r} must be 'auto' or one of {', '.join(DTYPES)}")
    return device, getattr(torch, dtype)


def write_atomic(path, write):
    """write(tmp) to a temporary name, then rename it to path: a crash never leaves a half-written file."""
    tmp = path + '.tmp'
    write(tmp)
    os.replace(tmp, path)


def load_model(out_dir, device='cpu', dtype=None):
    """model.GPT.from_checkpoint(out_dir/ckpt.pt): (the model in eval mode, the checkpoint dict), or one line from
    fail() naming what is wrong: no checkpoint, or one that is not a train.py checkpoint of finite weights that fit
    its settings. Loaded with weights_only=True, so a checkpoint from elsewhere can hold tensors and plain values
    but never code: a pickle that would run some is refused too."""
    from model import GPT
    path = os.path.join(out_dir, 'ckpt.pt')
    if os.path.isfile(out_dir):
        fail(f"--out_dir={out_dir} is a file: give the directory that holds ckpt.pt")
    if not os.path.exists(path):
        fail(f"no checkpoint at {path}: train one (python train.py config/hybrid_tiny.py) or set --out_dir")
    if not os.path.isfile(path):
        fail(f"{path} is not a file: remove it, or set --out_dir")
    try:
        return GPT.from_checkpoint(path, device, dtype)
    except ValueError as e:
        fail(str(e))


def flops_per_token(model, T):
    """Training FLOPs (forward + backward = 3x forward) per token of model.GPT `model` at context length T: MFU's
    numerator, beside matmul_peak_flops. Matmuls: 2 FLOPs per weight per token forward, so 6N in all; the tied
    embedding matrix counts once, as the lm_head matmul (the embedding lookup itself is free). Attention: q.k and
    att.v cost 4 * hd FLOPs per (query head, visible key) pair forward, so 12 * nh * hd per pair in all. Only
    visible keys count: on average (T+1)/2 for a causal layer, fewer under a window W. GQA shrinks N (smaller k
    and v projections) but not the attention term."""
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
    import time
    import torch
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
    """On Linux CPUs: glibc returns every large freed buffer (activations, gradients, a loss chunk's logits)
    to the OS, and the next step page-faults it back in, 4 KiB at a time. Keeping freed memory in the
    process (mmap threshold 1 GiB, no trimming) still pays with the chunked loss: 2-4% more tokens/s for
    about 0.1 GiB more resident memory (`python bench.py --sections=loss`, results/README.md)."""
    if sys.platform.startswith('linux'):
        import ctypes
        libc = ctypes.CDLL('libc.so.6')
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 31)  # M_TRIM_THRESHOLD
