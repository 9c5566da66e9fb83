"""End-to-end tests of the scripts: prepare_data.py, train.py (one process, resumed, DDP) and
sample.py, on a small slice of the built-in corpus and a tiny model, plus their answers to bad input."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from prepare_data import DATA, builtin_corpus, get_tokenizer, prepare, read_documents, retrieval_sequence

HERE = os.path.dirname(os.path.abspath(__file__))
DATASET = '_pytest_slice'
TINY = ['--dataset=' + DATASET, '--n_layer=2', '--n_head=2', '--n_kv_head=1', '--n_embd=32', '--block_size=64',
        '--sliding_window=16', '--batch_size=2', '--eval_iters=2', '--log_interval=1', '--warmup_iters=2',
        '--lr_decay_iters=8', '--learning_rate=0.01', '--peak_flops=1e9']


def run(*args, ok=True):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    p = subprocess.run(list(args), cwd=HERE, capture_output=True, text=True, env=env, timeout=300)
    if ok:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def logged_losses(stdout):
    """{iteration: loss} from train.py's plain log lines."""
    return {int(i): float(loss) for i, loss in re.findall(r'^iter (\d+): loss ([\d.]+)', stdout, re.M)}


@pytest.fixture(scope='module')
def dataset():
    """Six plays, cut to their first 20k characters, as data/_pytest_slice."""
    docs = [(title, text[:20000]) for title, text in builtin_corpus()[:6]]
    meta = prepare(docs, DATASET, val_fraction=0.2)
    yield meta
    shutil.rmtree(os.path.join(DATA, DATASET))


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


@pytest.fixture(scope='module')
def trained(dataset, tmp_path_factory):
    """A tiny model trained for 8 iterations: (out_dir, what train.py printed)."""
    out = str(tmp_path_factory.mktemp('trained'))
    p = run(sys.executable, 'train.py', *TINY, '--max_iters=8', '--eval_interval=4', '--out_dir=' + out)
    return out, p.stdout


def test_training_lowers_the_loss_and_writes_a_checkpoint(trained):
    out, stdout = trained
    evals = [float(v) for v in re.findall(r'^eval \d+: train loss [\d.]+, val loss ([\d.]+)', stdout, re.M)]
    assert len(evals) == 3 and evals[-1] < evals[0] - 0.5
    assert os.path.exists(os.path.join(out, 'ckpt.pt')) and os.path.exists(os.path.join(out, 'metrics.jsonl'))


def test_resume_reproduces_an_uninterrupted_run(trained, tmp_path):
    """Stopped at iteration 4 and resumed to 8, a run logs the losses of the run that never stopped."""
    out = str(tmp_path / 'b')
    run(sys.executable, 'train.py', *TINY, '--max_iters=4', '--eval_interval=4', '--out_dir=' + out)
    resumed = run(sys.executable, 'train.py', *TINY, '--max_iters=8', '--eval_interval=4', '--out_dir=' + out,
                  '--init_from=resume')
    expected, got = logged_losses(trained[1]), logged_losses(resumed.stdout)
    assert sorted(got) == [5, 6, 7, 8]
    for i in got:
        assert got[i] == pytest.approx(expected[i], abs=2e-4)


def test_sample_continues_a_file_longer_than_the_training_context(trained, tmp_path):
    prompt = tmp_path / 'doc.txt'
    prompt.write_text(builtin_corpus()[7][1][:2000])  # ~500 tokens, far past block_size=64
    out = run(sys.executable, 'sample.py', '--out_dir=' + trained[0], f'--start=FILE:{prompt}', '--max_new_tokens=20')
    assert 'longer than the training context' in out.stderr and 'prefill' in out.stderr and out.stdout.strip()


def test_ddp_matches_one_process(dataset, tmp_path):
    """Two CPU processes (gloo), one micro-batch each, log the losses of one process that runs
    both micro-batches: the same global batch."""
    common = [*TINY, '--max_iters=3', '--eval_interval=100', '--gradient_accumulation_steps=2']
    one = run(sys.executable, 'train.py', *common, '--out_dir=' + str(tmp_path / 'one'))
    two = run(sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py',
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
])
def test_bad_input_is_one_line_without_traceback(args, words, dataset, tmp_path):
    p = run(sys.executable, *args, ok=False)
    assert p.returncode != 0
    assert 'Traceback' not in p.stderr and p.stderr.count('\n') == 1 and words in p.stderr, p.stderr


def test_empty_prompt_file(trained, tmp_path):
    empty = tmp_path / 'empty.txt'
    empty.write_text('')
    p = run(sys.executable, 'sample.py', '--out_dir=' + trained[0], f'--start=FILE:{empty}', ok=False)
    assert p.returncode != 0 and 'Traceback' not in p.stderr and p.stderr.count('\n') == 1 and 'empty' in p.stderr


def test_bench_runs_every_section(tmp_path):
    """bench.py end to end at toy sizes: every table printed, the JSON written (no timing is asserted)."""
    out = tmp_path / 'bench.json'
    p = run(sys.executable, 'bench.py', '--n_layer=4', '--n_embd=32', '--n_head=2', '--n_kv_head=1',
            '--sliding_window=16', '--train_lengths=32,64', '--train_tokens=128', '--attn_lengths=64,128',
            '--attn_forward_length=256', '--prefill_lengths=64,128', '--decode_lengths=32,64', '--decode_tokens=2',
            '--recompute_lengths=32,64', '--reps=1', f'--out={out}', '--plot=')
    for title in ('training step', 'one attention layer', 'prefill', 'decode through the KV cache', 'without a cache'):
        assert title in p.stdout
    results = json.load(open(out))
    assert {r['pattern'] for r in results['prefill']} == {'SSSN', 'R'}
    kv = {(r['T'], r['pattern']): r['kv_bytes'] for r in results['decode']['rows']}
    assert kv[64, 'SSSN'] / kv[64, 'R'] == pytest.approx(results['decode']['kv_ideal_ratio']['64'], rel=0.05)
