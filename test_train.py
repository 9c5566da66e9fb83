"""End-to-end tests of the scripts: prepare_data.py, train.py (one process, resumed, DDP) and
sample.py, on a small slice of the built-in corpus and a tiny model, plus their answers to bad input."""

import json
import os
import pickle
import re
import shutil

import numpy as np
import pytest
import torch

from configurator import configure, in_range
from model import GPT
from prepare_data import DATA, builtin_corpus, get_tokenizer, read_documents, retrieval_sequence

from conftest import DATASET, TINY, run, script_settings


def logged_losses(stdout):
    """{iteration: loss} from train.py's plain log lines."""
    return {int(i): float(loss) for i, loss in re.findall(r'^iter (\d+): loss ([\d.]+)', stdout, re.M)}


def test_tokenizer_works_offline():
    enc = get_tokenizer('gpt2')
    assert enc.encode('Hello world') == [15496, 995]
    assert enc.eot_token == 50256 and enc.n_vocab == 50257
    text = "To be, or not to be: that is the question.\n"
    assert enc.decode(enc.encode(text)) == text


def test_prepare_splits_by_whole_documents(dataset):
    enc = get_tokenizer()
    docs = dict(builtin_corpus()[:6])
    for split in ('train', 'val'):
        arr = np.fromfile(os.path.join(DATA, DATASET, f'{split}.bin'), dtype=np.uint16)
        assert len(arr) == dataset[f'{split}_tokens']
        for d in dataset[f'{split}_docs']:
            ids = arr[d['offset']:d['offset'] + d['tokens']]
            assert ids[-1] == enc.eot_token  # each document ends with <|endoftext|>
            assert enc.decode(ids[:-1].tolist()) == docs[d['title']][:20000]
    assert len(dataset['train_docs']) + len(dataset['val_docs']) == 6 and dataset['val_docs']


def test_inputs_a_folder_and_jsonl(tmp_path, capsys):
    (tmp_path / 'notes').mkdir()
    (tmp_path / 'notes' / 'a.txt').write_text('first')
    (tmp_path / 'notes' / 'b.md').write_text('second')
    (tmp_path / 'notes' / 'skip.csv').write_text('not a document')
    assert read_documents(str(tmp_path / 'notes'), 'text') == [('a.txt', 'first'), ('b.md', 'second')]
    jsonl = tmp_path / 'docs.jsonl'
    jsonl.write_text('{"body": "one"}\n\n{"body": "two"}\n')
    assert [text for _, text in read_documents(str(jsonl), 'body')] == ['one', 'two']
    with pytest.raises(SystemExit):
        read_documents(str(jsonl), 'text')  # no such field: one line naming the line and the fix
    assert "line 1" in capsys.readouterr().err


def test_retrieval_sequences_hold_their_needles_and_answers():
    enc = get_tokenizer()
    filler = np.array(enc.encode("The grass is green. " * 300), dtype=np.uint16)
    rng = np.random.default_rng(0)
    counts = set()
    for _ in range(40):
        seq, answers = retrieval_sequence(enc, filler, 257, rng, needles=3)
        text = enc.decode(seq.tolist())
        first_question = text.index('What is the')
        assert len(seq) == 257 and 1 <= len(answers) <= 3
        for answer in answers:  # each value is in a needle before the questions...
            assert answer.strip(' .') in text[:first_question]
        qa = re.findall(r'What is the (?:pass key|special magic number for (\S+) mentioned in the provided text)\? '
                        r'The (?:pass key|special magic number for \1 mentioned in the provided text) is( \d+\.)', text)
        assert [a for _, a in qa] == answers  # ...and each question is answered, in the order returned
        for key, answer in qa:  # the answer is the value of the needle with the question's key
            if key:
                assert f"special magic numbers for {key} is:{answer}" in text[:first_question]
        counts.add(len(answers))
    assert counts == {1, 2, 3}


def test_training_lowers_the_loss_and_writes_a_checkpoint(trained):
    out, stdout = trained
    evals = [float(v) for v in re.findall(r'^eval \d+: train loss [\d.]+, val loss ([\d.]+)', stdout, re.M)]
    assert len(evals) == 3 and evals[-1] < evals[0] - 0.5
    assert os.path.exists(os.path.join(out, 'ckpt.pt')) and os.path.exists(os.path.join(out, 'metrics.jsonl'))


def test_resume_reproduces_an_uninterrupted_run(trained, tmp_path):
    """Stopped at iteration 4 and resumed to 8, a run logs the losses of the run that never stopped."""
    out = str(tmp_path / 'b')
    run('train.py', *TINY, '--max_iters=4', '--eval_interval=4', '--out_dir=' + out)
    resumed = run('train.py', *TINY, '--max_iters=8', '--eval_interval=4', '--out_dir=' + out,
                  '--init_from=resume')
    expected, got = logged_losses(trained[1]), logged_losses(resumed.stdout)
    assert sorted(got) == [5, 6, 7, 8]
    for i in got:
        assert got[i] == pytest.approx(expected[i], abs=2e-4)


def test_sample_continues_a_file_longer_than_the_training_context(trained, tmp_path):
    prompt = tmp_path / 'doc.txt'
    prompt.write_text(builtin_corpus()[7][1][:2000])  # ~500 tokens, far past block_size=64
    out = run('sample.py', '--out_dir=' + trained[0], f'--start=FILE:{prompt}', '--max_new_tokens=20')
    assert 'longer than the training context' in out.stderr and 'prefill' in out.stderr and out.stdout.strip()


def test_ddp_matches_one_process(dataset, tmp_path):
    """Two CPU processes (gloo), one micro-batch each, log the losses of one process that runs
    both micro-batches: the same global batch."""
    common = [*TINY, '--max_iters=3', '--eval_interval=100', '--gradient_accumulation_steps=2']
    one = run('train.py', *common, '--out_dir=' + str(tmp_path / 'one'))
    two = run('torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py',
              *common, '--out_dir=' + str(tmp_path / 'two'))
    a, b = logged_losses(one.stdout), logged_losses(two.stdout)
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for i in a:
        assert b[i] == pytest.approx(a[i], abs=1e-3)


@pytest.mark.parametrize('args,words', [
    (['train.py', '--n_layers=3'], "unknown setting 'n_layers'"),
    (['train.py', '--n_layer=three'], 'n_layer'),
    (['train.py', '--dataset=' + DATASET, '--layer_pattern=SSXN'], 'layer_pattern'),
    (['train.py', 'config/hybrid_lnog.py'], 'config/hybrid_long.py'),
    (['train.py', '--dataset=no_such_data'], 'prepare_data.py'),
    (['train.py', '--init_from=resume', '--out_dir=/nonexistent'], 'no checkpoint'),
    (['sample.py', '--out_dir=/nonexistent'], 'no checkpoint'),
    (['sample.py', '--start=FILE:/nonexistent.txt'], 'not found'),
    (['prepare_data.py', '--input=/nonexistent'], 'not found'),
    (['train.py', '--batch_size=0'], 'batch_size=0 is out of range: it must be in [1, inf)'),
    (['train.py', '--gradient_accumulation_steps=0'], 'gradient_accumulation_steps=0 is out of range'),
    (['train.py', '--block_size=0'], 'block_size=0 is out of range'),
    (['train.py', '--learning_rate=-1'], 'learning_rate=-1.0 is out of range: it must be in (0, inf)'),
    (['train.py', '--n_layer=0'], 'n_layer=0 is out of range'),
    (['train.py', '--max_iters=-1'], 'max_iters=-1 is out of range'),
    (['train.py', '--retrieval_rate=2'], 'retrieval_rate=2.0 is out of range: it must be in [0, 1]'),
    (['sample.py', '--temperature=-1'], 'temperature=-1.0 is out of range'),
    (['sample.py', '--num_samples=0'], 'num_samples=0 is out of range'),
    (['eval_long.py', '--samples=0'], 'samples=0 is out of range'),
])
def test_bad_input_is_one_line_without_traceback(args, words, dataset, tmp_path):
    p = run(*args, ok=False)
    assert p.returncode == 2
    assert 'Traceback' not in p.stderr and p.stderr.count('\n') == 1 and words in p.stderr, p.stderr


def test_empty_prompt_file(trained, tmp_path):
    empty = tmp_path / 'empty.txt'
    empty.write_text('')
    p = run('sample.py', '--out_dir=' + trained[0], f'--start=FILE:{empty}', ok=False)
    assert p.returncode != 0 and 'Traceback' not in p.stderr and p.stderr.count('\n') == 1 and 'empty' in p.stderr


class CodeOnLoad:
    """Unpickled with weights_only=False, this would call open(path, 'w'): a stand-in for any code a
    downloaded checkpoint could run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, 'w')


def test_a_checkpoint_that_would_run_code_is_refused(trained, tmp_path):
    """Every script loads checkpoints with weights_only=True: a crafted pickle is refused in one line and its
    code never runs, while train.py's own checkpoints load."""
    model, checkpoint = GPT.from_checkpoint(os.path.join(trained[0], 'ckpt.pt'))
    assert checkpoint['iter_num'] == 8 and not model.training
    crafted, ran = tmp_path / 'crafted', tmp_path / 'the code ran'
    crafted.mkdir()
    torch.save({'model_args': CodeOnLoad(str(ran))}, crafted / 'ckpt.pt')
    with pytest.raises(pickle.UnpicklingError):
        GPT.from_checkpoint(str(crafted / 'ckpt.pt'))
    for script, *args in [('sample.py',), ('eval_long.py', '--tasks=short'), ('analyze_attention.py',),
                          ('export_hf.py',), ('train.py', *TINY, '--init_from=resume')]:
        p = run(script, *args, f'--out_dir={crafted}', ok=False)
        assert p.returncode == 2 and 'Traceback' not in p.stderr and p.stderr.count('\n') == 1, (script, p.stderr)
        assert 'not loaded' in p.stderr, (script, p.stderr)
    assert not ran.exists()


def test_bench_runs_every_section(tmp_path):
    """bench.py end to end at toy sizes: every table printed, the JSON written (no timing is asserted)."""
    out = tmp_path / 'bench.json'
    p = run('bench.py', '--n_layer=4', '--n_embd=32', '--n_head=2', '--n_kv_head=1',
            '--sliding_window=16', '--train_lengths=32,64', '--train_tokens=128', '--attn_lengths=64,128',
            '--attn_forward_length=256', '--prefill_lengths=64,128', '--decode_lengths=32,64', '--decode_tokens=2',
            '--recompute_lengths=32,64', '--loss_length=32', '--loss_steps=2', '--reps=1', f'--out={out}', '--plot=')
    for title in ('training step, ', 'one attention layer', 'prefill', 'decode through the KV cache', 'without a cache',
                  'a training step of SSSN'):
        assert title in p.stdout
    results = json.load(open(out))
    assert [(r['loss'], r['freed_memory']) for r in results['loss']] == [('plain', 'keep'), ('chunked', 'keep'),
                                                                          ('chunked', 'release')]
    assert {r['pattern'] for r in results['prefill']} == {'SSSN', 'R'}
    kv = {(r['T'], r['pattern']): r['kv_bytes'] for r in results['decode']['rows']}
    assert kv[64, 'SSSN'] / kv[64, 'R'] == pytest.approx(results['decode']['kv_ideal_ratio']['64'], rel=0.05)


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(trained, tmp_path):
    out = tmp_path / 'blown'
    shutil.copytree(trained[0], out)
    before = torch.load(out / 'ckpt.pt', weights_only=True)
    p = run('train.py', *TINY, '--max_iters=12', '--eval_interval=4', f'--out_dir={out}',
            '--init_from=resume', '--learning_rate=1e30', '--min_lr=1e30', ok=False)
    assert p.returncode == 2 and 'Traceback' not in p.stderr and p.stderr.count('\n') == 1, p.stderr
    assert 'stopped without updating' in p.stderr and 'last good checkpoint' in p.stderr
    after = torch.load(out / 'ckpt.pt', weights_only=True)  # still iteration 8's weights: nothing blown up was saved
    assert after['iter_num'] == before['iter_num'] == 8
    assert all(torch.equal(after['model'][k], v) for k, v in before['model'].items())


# --- every numeric setting of every script has a range, and its boundaries are checked -----------------

SCRIPTS = ['train.py', 'sample.py', 'eval_long.py', 'analyze_attention.py', 'prepare_data.py', 'bench.py', 'reproduce.py']


@pytest.mark.parametrize('script', SCRIPTS)
def test_every_numeric_setting_declares_its_range(script):
    settings = script_settings(script)
    for name, default in settings.items():
        numbers = default if isinstance(default, tuple) else (default,)
        if numbers and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
            assert name in settings['__annotations__'], f"{script}: {name} = {default!r} has no range"
    configure(dict(settings), [])  # every default lies in its range


def outside_and_inside(interval, integer):
    """Values just outside the interval (and 0 and -1 where those are outside), and its ends where included."""
    m = re.fullmatch(r'([\[(])(.+), (.+)([\])])', interval)
    lo, hi, step = float(m.group(2)), float(m.group(3)), 1 if integer else 0.5
    outside, inside = [0, -1], []
    if m.group(1) == '[':
        outside.append(lo - step)
        inside.append(lo)
    else:
        outside.append(lo)
        inside.append(lo + step if hi == float('inf') else (lo + hi) / 2)
    if hi != float('inf'):
        outside.append(hi if m.group(4) == ')' else hi + step)
        if m.group(4) == ']':
            inside.append(hi)
    return [v for v in outside if not in_range(v, interval)], inside


@pytest.mark.parametrize('script', SCRIPTS)
def test_settings_out_of_range_are_refused_in_one_line(script, capsys):
    settings = script_settings(script)
    for name, interval in settings['__annotations__'].items():
        default = settings[name]
        sample = default[0] if isinstance(default, tuple) and default else default
        integer = isinstance(sample, int) or sample is None or (isinstance(default, tuple) and not default)
        outside, inside = outside_and_inside(interval, integer)
        for value in outside:
            text = str(int(value) if integer else value)
            with pytest.raises(SystemExit) as exit:
                configure(dict(settings), [f'--{name}={text}'])
            err = capsys.readouterr().err
            assert exit.value.code == 2 and err.count('\n') == 1, (script, name, value, err)
            assert f"{name}=" in err and interval in err, (script, name, value, err)
        for value in inside:
            configure(dict(settings), [f'--{name}={int(value) if integer else value}'])
