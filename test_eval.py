"""Tests of the long-context evaluation (eval_long.py) and the attention analysis (analyze_attention.py):
the task generators, the scoring, the attention statistics against hand-computed answers, and both
scripts end to end on a tiny random checkpoint."""

import json
import math
import os
import re
from collections import Counter

import numpy as np
import pytest
import torch

import eval_long
from analyze_attention import SEGMENTS, analyze, needle_prompt
from eval_long import RULER_TASKS, Haystack, grid, score, task_niah, task_passkey
from model import GPT, GPTConfig
from prepare_data import builtin_corpus, get_tokenizer
from test_train import DATASET, dataset, run  # noqa: F401 (dataset is a fixture)

ENC = get_tokenizer('gpt2')
TASKS = dict(passkey=task_passkey, niah=task_niah, **RULER_TASKS)


@pytest.fixture(scope='module')
def hays():
    text = builtin_corpus()[0][1][:40000]
    return dict(grass=Haystack(ENC, ENC.encode_ordinary(eval_long.PASSKEY_FILLER * 300)),
                text=Haystack(ENC, ENC.encode_ordinary(text)))


@pytest.mark.parametrize('name', list(TASKS))
def test_task_prompts_hold_their_answers(name, hays):
    rng = np.random.default_rng(0)
    for length, depth in [(400, 0.0), (700, 0.5), (1000, 1.0)]:
        tokens, refs, spans, max_new = TASKS[name](ENC, hays, length, depth, rng)
        assert len(tokens) == length and max_new > 0
        text = ENC.decode(tokens.tolist())
        for ref in refs:  # every reference string is in the prompt, so a copying model can find it
            assert ref in text
        needles = [ENC.decode(tokens[a:b].tolist()) for a, b in spans]  # whole sentences
        assert all(n.startswith(' ') and n.endswith('.') for n in needles)
        if spans:  # each reference is in a needle (cwe has none: its list is the haystack)
            assert all(any(r in n for n in needles) for r in refs)
        assert score(' ' + ', '.join(refs) + '.', refs, exact=name == 'passkey') == 1.0
        assert score(' the the the, and so on.', refs, exact=name == 'passkey') == 0.0
    if name == 'cwe':  # the ten references really are the ten most frequent words of the list
        counts = Counter(re.findall(r'\d+\. (\w+)', text))
        assert {w for w, _ in counts.most_common(10)} == set(refs)
        assert min(counts[w] for w in refs) > max(c for w, c in counts.items() if w not in refs)


def test_needle_depth_is_where_asked(hays):
    rng = np.random.default_rng(1)
    for depth in (0.0, 0.5, 1.0):
        tokens, refs, [(a, b)], _ = task_passkey(ENC, hays, 1000, depth, rng)
        assert abs(a / 1000 - depth) < 0.08


def test_passkey_exact_match():
    assert score(' 48213. Remember', ['48213'], exact=True) == 1.0
    assert score(' 148213.', ['48213'], exact=True) == 0.0   # contains it, but is not it
    assert score(' 4821', ['48213'], exact=True) == 0.0
    assert score(' 1 and 3', ['1', '2', '3', '4']) == 0.5     # partial credit for multi-answer tasks


def copying_model(model, enc, prompts, max_new_tokens, prefill_chunk):
    """A stand-in for a perfect model: answer by reading the needle the question asks about."""
    out = []
    for p in prompts:
        text = enc.decode(list(p))
        key = re.search(r'number for (\S+) mentioned in the provided text is$', text)
        value = re.search(rf'numbers for {re.escape(key.group(1))} is: (\d+)' if key else r'pass key is (\d+)', text)
        out.append(f" {value.group(1)}.")
    return out


def noise_model(model, enc, prompts, max_new_tokens, prefill_chunk):
    return [' ' + ''.join(np.random.default_rng(len(p)).choice(list('0123456789 ,.'), 12)) for p in prompts]


@pytest.mark.parametrize('task', [task_passkey, task_niah, RULER_TASKS['multikey']])
def test_a_copying_model_scores_one_and_noise_zero(task, hays, monkeypatch):
    for fake, expected in [(copying_model, 1.0), (noise_model, 0.0)]:
        monkeypatch.setattr(eval_long, 'greedy', fake)
        table, _ = grid(None, ENC, task, hays, [300, 600], [0.0, 0.5, 1.0], 3, np.random.default_rng(2), 64,
                        exact=task is task_passkey)
        assert all(v == expected for row in table.values() for v in row.values())


def test_answer_gain_equals_full_forward(hays):
    """The gain from one prefill and two cached continuations equals the NLL difference of the two whole
    sequences through the plain forward pass."""
    model = tiny_model('SN', window=16)
    tokens, [value], _, _ = task_niah(ENC, hays, 200, 0.5, np.random.default_rng(6))
    gain = eval_long.answer_gain(model, ENC, tokens, value, np.random.default_rng(7), prefill_chunk=64)
    rng, other = np.random.default_rng(7), value
    while other == value:
        other = str(rng.integers(10 ** (len(value) - 1), 10 ** len(value)))

    def nll(v):
        ans = ENC.encode_ordinary(' ' + v)
        logits, _ = model(torch.tensor([tokens.tolist() + ans]))
        return torch.nn.functional.cross_entropy(logits[0, len(tokens) - 1:-1], torch.tensor(ans), reduction='sum').item()
    assert gain == pytest.approx(nll(other) - nll(value), abs=1e-3)
    assert gain != 0


def tiny_model(pattern, window=16, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(n_layer=len(pattern), n_head=2, n_kv_head=1, n_embd=32, block_size=128, vocab_size=50304,
                         layer_pattern=pattern, sliding_window=window)).eval()


def test_attention_segments_sum_to_one(hays):
    rng = np.random.default_rng(3)
    layers = analyze(tiny_model('SRN'), [needle_prompt(ENC, hays['text'], 300, rng) for _ in range(2)], sink=10)
    assert [l['kind'] for l in layers] == ['S', 'R', 'N']
    for layer in layers:
        assert sum(layer['mass'].values()) == pytest.approx(1.0, abs=1e-5)
        assert all(v >= 0 for v in layer['mass'].values())


def test_attention_analysis_of_uniform_attention(hays):
    """With q = 0 every visible key gets the same weight, so the masses, entropies and the distance
    profile follow from counting keys: a full layer spreads over all p + 1 keys, an 'S' layer over its
    window of W, and nothing at all beyond it."""
    W, T, sink = 16, 300, 10
    model = tiny_model('SN', window=W)
    for block in model.transformer.h:
        torch.nn.init.zeros_(block.attn.q_proj.weight)
    tokens, (n0, n1), q_start = needle_prompt(ENC, hays['text'], T, np.random.default_rng(4))
    assert n1 < q_start - W  # the needle lies outside the window of every query row
    s_layer, n_layer = analyze(model, [(tokens, (n0, n1), q_start)], sink)
    p = np.arange(q_start, T)  # query positions
    expect = dict(begin=np.mean(sink / (p + 1)), needle=np.mean((n1 - n0) / (p + 1)),
                  question=np.mean((p - q_start + 1) / (p + 1)))
    expect['context'] = 1 - sum(expect.values())
    for s in SEGMENTS:
        assert n_layer['mass'][s] == pytest.approx(expect[s], abs=1e-4)
    assert n_layer['entropy'] == pytest.approx(np.mean(np.log(p + 1)), abs=1e-4)
    # the 'S' layer: question rows see only the last W keys, which are question tokens and context
    assert s_layer['mass']['begin'] == pytest.approx(0, abs=1e-6) and s_layer['mass']['needle'] == pytest.approx(0, abs=1e-6)
    assert s_layer['entropy'] == pytest.approx(math.log(W), abs=1e-4)
    for lo, hi, v in s_layer['distance']:
        assert v == pytest.approx(1 / W if hi <= W else 0.0, abs=1e-6), (lo, hi)


def test_eval_and_analysis_run_end_to_end(dataset, tmp_path):
    model = tiny_model('SSN', window=32)
    torch.save(dict(model=model.state_dict(), model_args=vars(model.config), tokenizer='gpt2',
                    config=dict(dataset=DATASET)), tmp_path / 'ckpt.pt')
    p = run('python', 'eval_long.py', f'--out_dir={tmp_path}', '--lengths=128,512', '--depths=0,1', '--samples=2',
            '--plots=False', '--prefill_chunk=100')
    assert 'passkey retrieval' in p.stdout and 'RULER' in p.stdout and 'loss by position' in p.stdout
    results = json.load(open(tmp_path / 'eval_long.json'))
    for task in ('passkey', 'niah'):
        assert all(0 <= v <= 1 for row in results[task].values() for v in row.values())
    assert results['ruler']['vt']['128'] is None  # too short for five variables and the question: shown as '-'
    assert all(isinstance(v, float) for row in results['niah_gain'].values() for v in row.values())
    assert 10 < results['short_val_loss'] < 11.5  # an untrained model: about ln(50257) = 10.8
    p = run('python', 'analyze_attention.py', f'--out_dir={tmp_path}', '--lengths=200', '--samples=2', '--plots=False')
    layers = json.load(open(tmp_path / 'attention.json'))['results']['200']['layers']
    assert [l['kind'] for l in layers] == ['S', 'S', 'N']


def test_eval_bad_input_is_one_line(tmp_path):
    for args in (['--out_dir=' + str(tmp_path)], ['--tasks=passkey,foo'], ['--lengths=0.5']):
        p = run('python', 'eval_long.py', *args, ok=False)
        assert p.returncode != 0 and p.stderr.count('\n') == 1 and p.stderr.startswith('error:'), p.stderr


@pytest.mark.parametrize('target', ['sink', 'needle'])
def test_attention_analysis_of_one_hot_attention(target, hays, monkeypatch):
    """Attention that puts all its weight on one key: all the mass in that key's segment, zero entropy,
    and a distance profile that is zero everywhere but at that key's distance (and left out for the sink)."""
    import analyze_attention
    T, sink = 300, 10
    tokens, (n0, n1), q_start = needle_prompt(ENC, hays['text'], T, np.random.default_rng(5))
    key = 0 if target == 'sink' else n0

    def one_hot(attn, x, rows, cos, sin):
        w = torch.zeros(x.size(0), attn.n_head, len(rows), x.size(1))
        w[..., key] = 1.0
        return w
    monkeypatch.setattr(analyze_attention, 'attention_rows', one_hot)
    [layer] = analyze(tiny_model('N'), [(tokens, (n0, n1), q_start)], sink)
    assert layer['mass'][{'sink': 'begin', 'needle': 'needle'}[target]] == pytest.approx(1.0)
    assert layer['entropy'] == pytest.approx(0.0, abs=1e-6)
    for lo, hi, v in layer['distance']:
        hit = target == 'needle' and lo <= T - 1 - key and q_start - key < hi  # the rows' distances to the key
        assert (v > 0) == hit, (lo, hi, v)


def test_reproduce_trains_evaluates_and_tabulates(dataset, tmp_path):
    args = ['python', 'reproduce.py', '--variants=rnope_swa', '--max_iters=2', f'--dataset={DATASET}',
            f'--out_root={tmp_path}/out', f'--results={tmp_path}/results', '--eval_samples=1', '--eval_lengths=128,256,512']
    p = run(*args)
    table = open(tmp_path / 'results' / 'results.md').read()
    assert '| rnope_swa | `SSSN` |' in table
    assert 'train.py' in p.stdout and 'eval_long.py' in p.stdout and 'analyze_attention.py' in p.stdout
    p = run(*args)  # everything is done already: nothing is trained or evaluated again
    assert 'train.py' not in p.stdout and 'eval_long.py' not in p.stdout
    assert open(tmp_path / 'results' / 'results.md').read() == table
