"""
nanoGPT-style configuration. A script defines its settings as plain globals, then calls
configure(globals()) to override them from the command line:

    python train.py config/hybrid_long.py --batch_size=8 --compile=False --out_dir=out-test

Arguments apply left to right. A config/*.py file is plain Python that assigns some of the
settings; --key=value sets one, the value read as a Python literal (strings may go bare:
--init_from=resume; a list is a tuple: --lengths=512,2048). A setting keeps its default's type
(an int may stand for a float, one value for a 1-tuple; a default of None takes any literal).

A config file may begin with include('other.py') (relative to itself) and then set only what
differs.

A numeric setting declares its valid range once, as its annotation, in interval notation:

    batch_size: '[1, inf)' = 2        # at least 1
    dropout: '[0, 1)' = 0.0           # from 0 included to 1 excluded
    learning_rate: '(0, inf)' = 2e-3  # above 0

A tuple's every element must lie in the range; None is always allowed. Any mistake (an unknown
setting, a wrong type, a value out of range, a missing file) ends the program with one line on
stderr, exit code 2.
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
        fail(f"unknown setting {key!r} in {source}{nearest(key, settings)}; see --help for the "
             f"list")
    default = settings[key]
    if default is None or type(value) is type(default):
        return value
    if isinstance(default, float) and type(value) is int:
        return float(value)
    if isinstance(default, tuple) and isinstance(value, (int, float, str)):
        return (value,)  # --lengths=512 means the 1-tuple (512,); --lengths=512,2048 parses as a
                         # tuple
    fail(f"{key} in {source} expects {type(default).__name__} (default {default!r}), got {value!r}")


def in_range(value, interval):
    """Whether the number value lies in an interval such as '[1, inf)': [ ] include their end, ( )
    exclude it."""
    m = re.fullmatch(r'\s*([\[(])\s*([^,]+?)\s*,\s*([^,]+?)\s*([\])])\s*', interval)
    if not m:
        raise ValueError(f"{interval!r} is not an interval like '[1, inf)'")
    lo, hi = float(m.group(2)), float(m.group(3))
    return ((value >= lo if m.group(1) == '[' else value > lo)
            and (value <= hi if m.group(4) == ']' else value < hi))


def read_config(path):
    """The settings a config file assigns: {name: value}. A config can start from another one with
    include('hybrid_long.py') (a path relative to the including file), then assign only what
    differs."""
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
            if not k.startswith('_')
            and not isinstance(v, (types.ModuleType, types.FunctionType, type))}


def configure(settings, argv=None):
    """Apply config files and --key=value arguments (default: sys.argv[1:]) to `settings`,
    a script's globals. Only lower-case names bound to plain literals count as settings.
    Returns every setting with its final value (to store beside a checkpoint)."""
    known = {k: v for k, v in settings.items()
             if k.islower() and not k.startswith('_') and isinstance(v, LITERALS)}
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
                # the config files beside the one asked for
                found = glob.glob(os.path.join(os.path.dirname(arg) or 'config', '*.py'))
                listed = f" (config files: {', '.join(sorted(found))})"
                hint = (nearest(arg, found) or listed) if found else ""
                fail(f"config file {arg!r} not found{hint}")
            for key, value in read_config(arg).items():
                changed[key] = checked(key, value, known, arg)
        known.update(changed)
    # every setting's range, final values only
    for key, interval in settings.get('__annotations__', {}).items():
        value = known[key]
        for v in value if isinstance(value, tuple) else (value,):
            number = isinstance(v, (int, float)) and not isinstance(v, bool)
            if v is not None and not (number and in_range(v, interval)):
                fail(f"{key}={value!r} is out of range: it must be in {interval}")
    settings.update(changed)
    return known
