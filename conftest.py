"""What the test files share: a tiny dataset, a tiny trained checkpoint, and a way to run the
scripts. Paths are relative to this file and scripts run with this interpreter (sys.executable), so
the suite passes from any directory and from a virtual environment that is not activated."""

import ast
import os
import shutil
import subprocess
import sys

import pytest

from corpus import DATA, builtin_corpus, prepare

HERE = os.path.dirname(os.path.abspath(__file__))
DATASET = '_pytest_slice'
TINY = ['--dataset=' + DATASET, '--n_layer=2', '--n_head=2', '--n_kv_head=1', '--n_embd=32',
        '--block_size=64', '--sliding_window=16', '--batch_size=2', '--eval_iters=2',
        '--log_interval=1', '--warmup_iters=2',
        '--lr_decay_iters=8', '--learning_rate=0.01', '--peak_flops=1e9']


def run(script, *args, ok=True, env=None):
    """Run a repo script (e.g. 'train.py') with this Python, from the repo, on one thread, with the
    variables of env added to the environment; return the result."""
    env = dict(os.environ, OMP_NUM_THREADS='1', **(env or {}))
    module = [script] if script.endswith('.py') else ['-m', script]  # a script, or pytest etc.
    command = [sys.executable, *module, *args]
    p = subprocess.run(command, cwd=HERE, capture_output=True, text=True, env=env, timeout=300)
    if ok:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def one_line_error(p, code=2):
    """Whether a script stopped as bad input should: exit code `code`, one line on stderr, no
    traceback."""
    return p.returncode == code and 'Traceback' not in p.stderr and p.stderr.count('\n') == 1


@pytest.fixture(scope='session')
def dataset():
    """Six plays, cut to their first 20k characters, as data/_pytest_slice."""
    docs = [(title, text[:20000]) for title, text in builtin_corpus()[:6]]
    meta = prepare(docs, DATASET, val_fraction=0.2)
    yield meta
    shutil.rmtree(os.path.join(DATA, DATASET))


@pytest.fixture
def without_matplotlib(tmp_path):
    """Environment variables under which `import matplotlib` fails, as on a machine without the
    extra."""
    blocker = tmp_path / 'no_matplotlib' / 'matplotlib'
    blocker.mkdir(parents=True)
    (blocker / '__init__.py').write_text("raise ImportError('matplotlib is blocked for this "
                                         "test')\n")
    return dict(PYTHONPATH=str(blocker.parent))


@pytest.fixture(scope='session')
def trained(dataset, tmp_path_factory):
    """A tiny model trained for 8 iterations: (out_dir, what train.py printed)."""
    out = str(tmp_path_factory.mktemp('trained'))
    p = run('train.py', *TINY, '--max_iters=8', '--eval_interval=4', '--out_dir=' + out)
    return out, p.stdout


def script_settings(path):
    """A script's settings as configure() sees them, read from its source without running it: {name:
    default}, with the ranges of the annotated ones in '__annotations__'. Settings are the
    assignments of literals at the top level (or under `if __name__ == '__main__':`) before the
    script calls configure()."""
    tree = ast.parse(open(os.path.join(HERE, path)).read())
    body = [n for top in tree.body for n in (top.body if isinstance(top, ast.If) else [top])]
    settings, ranges = {}, {}
    for node in body:
        if isinstance(node, ast.Expr) and 'configure(globals())' in ast.unparse(node):
            break
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \
                and 'configure(globals())' in ast.unparse(node):
            break
        target = (node.target if isinstance(node, ast.AnnAssign)
                  else node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id.islower():
            try:
                settings[target.id] = ast.literal_eval(node.value)
            except ValueError:
                continue
            if isinstance(node, ast.AnnAssign):
                ranges[target.id] = ast.literal_eval(node.annotation)
    assert settings, path
    return dict(settings, __annotations__=ranges)
