"""Tests of the long-context evaluation (tasks.py, eval_long.py) and the attention analysis
(analyze_attention.py): the task generators, the scoring, the attention statistics against
hand-computed answers, and both scripts end to end on a tiny random checkpoint."""

import json
import math
import os
import re
from collections import Counter

import numpy as np
import pytest
import torch

import eval_long
import tasks
from analyze_attention import SEGMENTS, analyze, needle_batch, needle_prompt
from corpus import HELD_OUT_NAMES, builtin_corpus, get_tokenizer, recall_batch
from eval_long import grid
from model import GPT, GPTConfig
from tasks import RULER_TASKS, Haystack, score, task_heldout, task_niah, task_passkey
from conftest import DATASET, run

ENC = get_tokenizer('gpt2')
TASKS = dict(passkey=task_passkey, niah=task_niah, heldout=task_heldout, **RULER_TASKS)


@pytest.fixture(scope='module')
def hays():
    text = builtin_corpus()[0][1][:40000]
    return dict(grass=Haystack(ENC, ENC.encode_ordinary(tasks.PASSKEY_FILLER * 300)),
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


@pytest.mark.parametrize('k', [2, 4])
def test_binding_prompts_differ_only_in_their_keys(k, hays):
    """The binding task's needles share the held-out wording, with distinct held-out keys and
    values; the question asks for the first, whose span and value come first."""
    rng = np.random.default_rng(k)
    for length in (300, 1000):
        tokens, values, spans, question = tasks.binding_prompt(ENC, hays, length, k, rng)
        assert len(tokens) == length and len(values) == len(set(values)) == len(spans) == k
        needles = [ENC.decode(tokens[a:b].tolist()) for a, b in spans]
        found = [re.fullmatch(r' The vault combination for (\w+ \w+) is '
                              r'(\d+)\.', n).groups() for n in needles]
        assert [v for _, v in found] == values and len({key for key, _ in found}) == k
        assert all(set(key.split()) <= set(HELD_OUT_NAMES) for key, _ in found)
        assert question == (f"What is the vault combination for {found[0][0]}? "
                            f"The vault combination for {found[0][0]} is")
        assert ENC.decode(tokens.tolist()).endswith('\n' + question)


def test_binding_scoring_tells_another_needle_from_a_hit():
    values = ['482913', '551200', '907311']
    assert tasks.binding_outcome(' 482913.', values) == 'asked'
    # the wording matched, the key not
    assert tasks.binding_outcome(' 551200. The', values) == 'other'
    assert tasks.binding_outcome(' 907311', values) == 'other'
    # the first number, whole, decides
    assert tasks.binding_outcome(' 4829135.', values) == 'none'
    assert tasks.binding_outcome(' and then 551200, 482913', values) == 'other'
    assert tasks.binding_outcome(' thee, and the world', values) == 'none'


def test_needle_depth_is_where_asked(hays):
    rng = np.random.default_rng(1)
    for depth in (0.0, 0.5, 1.0):
        tokens, refs, [(a, b)], _ = task_passkey(ENC, hays, 1000, depth, rng)
        assert abs(a / 1000 - depth) < 0.08


def test_passkey_exact_match():
    assert score(' 48213. Remember', ['48213'], exact=True) == 1.0
    assert score(' 148213.', ['48213'], exact=True) == 0.0   # contains it, but is not it
    assert score(' 4821', ['48213'], exact=True) == 0.0
    # partial credit for multi-answer tasks
    assert score(' 1 and 3', ['1', '2', '3', '4']) == 0.5


def copying_model(model, enc, prompts, max_new_tokens, prefill_chunk, values=None, rng=None):
    """A stand-in for a perfect model: answer by reading the needle the question asks about."""
    out = []
    for p in prompts:
        text = enc.decode(list(p))
        key = re.search(r'number for (\S+) mentioned in the provided text is$', text)
        held = re.search(r'vault combination for ([^?]+) is$', text)
        value = re.search(rf'numbers for {re.escape(key.group(1))} is: (\d+)' if key else
                          rf'combination for {re.escape(held.group(1))} is '
                          rf'(\d+)' if held else r'pass key is (\d+)', text)
        out.append(f" {value.group(1)}.")
    return out, None


def noise_model(model, enc, prompts, max_new_tokens, prefill_chunk, values=None, rng=None):
    return [' ' + ''.join(np.random.default_rng(len(p)).choice(list('0123456789 ,.'), 12))
            for p in prompts], None


@pytest.mark.parametrize('task', [task_passkey, task_niah, task_heldout, RULER_TASKS['multikey']])
def test_a_copying_model_scores_one_and_noise_zero(task, hays, monkeypatch):
    for fake, expected in [(copying_model, 1.0), (noise_model, 0.0)]:
        monkeypatch.setattr(eval_long, 'answers', fake)
        table, _ = grid(None, ENC, task, hays, [300, 600], [0.0, 0.5, 1.0], 3,
                        np.random.default_rng(2), 64, exact=task is task_passkey)
        assert all(v == expected for row in table.values() for v in row.values())


def test_answer_gain_equals_full_forward(hays):
    """The gain from one prefill and two cached continuations equals the NLL difference of the two
    whole sequences through the plain forward pass; the greedy answer after it equals the uncached
    one."""
    model = tiny_model('SN', window=16)
    tokens, [value], _, _ = task_niah(ENC, hays, 200, 0.5, np.random.default_rng(6))
    [text], [gain] = eval_long.answers(model, ENC, [tokens], 5, 64, [value],
                                       np.random.default_rng(7))
    out = model.generate(torch.tensor([tokens.tolist()]), 5, temperature=0)
    assert ENC.decode(out[0, 200:].tolist()) == text
    rng, other = np.random.default_rng(7), value
    while other == value:
        other = str(rng.integers(10 ** (len(value) - 1), 10 ** len(value)))

    def nll(v):
        ans = ENC.encode_ordinary(' ' + v)
        logits, _ = model(torch.tensor([tokens.tolist() + ans]))
        return torch.nn.functional.cross_entropy(logits[0, len(tokens) - 1:-1], torch.tensor(ans),
                                                 reduction='sum').item()
    assert gain == pytest.approx(nll(other) - nll(value), abs=1e-3)
    assert gain != 0


def tiny_model(pattern, window=16, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(n_layer=len(pattern), n_head=2, n_kv_head=1, n_embd=32, block_size=128,
                         vocab_size=50304,
                         layer_pattern=pattern, sliding_window=window)).eval()


def test_attention_segments_sum_to_one(hays):
    rng = np.random.default_rng(3)
    batch = needle_batch([needle_prompt(ENC, hays['text'], 300, rng) for _ in range(2)], SEGMENTS,
                         10, 'cpu')
    layers = analyze(tiny_model('SRN'), *batch, SEGMENTS, 10)
    assert [l['kind'] for l in layers] == ['S', 'R', 'N']
    for layer in layers:
        assert sum(layer['mass'].values()) == pytest.approx(1.0, abs=1e-5)
        assert all(v >= 0 for v in layer['mass'].values())


def test_binding_attention_segments_tell_the_asked_needle_from_the_others(hays):
    """analyze_attention.py --needles=2: one row, the question's last token; the asked needle's
    tokens are 'needle', the other's 'other needles'; attention all on the other needle counts
    there, not as a hit."""
    from analyze_attention import BINDING_SEGMENTS
    import analyze_attention
    tokens, spans, q_start, row = needle_prompt(ENC, hays['text'], 400, np.random.default_rng(6),
                                                needles=2)
    assert len(tokens) == 400 and row == 399 and len(spans) == 2 and q_start < row
    idx, rows, seg = needle_batch([(tokens, spans, q_start, row)], BINDING_SEGMENTS, 10, 'cpu')
    assert rows.tolist() == [399]
    for (a, b), name in zip(spans, ('needle', 'other needles')):
        assert (seg[0, 0, a:b] == BINDING_SEGMENTS.index(name)).all()
        assert (seg[0, 0] == BINDING_SEGMENTS.index(name)).sum() == b - a
    other = spans[1][0]

    def on_the_other(attn, x, rows, cos, sin):
        w = torch.zeros(x.size(0), attn.n_head, len(rows), x.size(1))
        w[..., other] = 1.0
        return w
    with pytest.MonkeyPatch.context() as m:
        m.setattr(analyze_attention, 'attention_rows', on_the_other)
        [layer] = analyze(tiny_model('N'), idx, rows, seg, BINDING_SEGMENTS, 10)
    assert layer['mass']['other needles'] == pytest.approx(1.0) and layer['mass']['needle'] == 0


def test_attention_analysis_of_uniform_attention(hays):
    """With q = 0 every visible key gets the same weight, so the masses, entropies and the distance
    profile follow from counting keys: a full layer spreads over all p + 1 keys, an 'S' layer over
    its window of W, and nothing at all beyond it."""
    W, T, sink = 16, 300, 10
    model = tiny_model('SN', window=W)
    for block in model.transformer.h:
        torch.nn.init.zeros_(block.attn.q_proj.weight)
    tokens, [(n0, n1)], q_start, _ = needle_prompt(ENC, hays['text'], T, np.random.default_rng(4))
    assert n1 < q_start - W  # the needle lies outside the window of every query row
    batch = needle_batch([(tokens, [(n0, n1)], q_start, q_start)], SEGMENTS, sink, 'cpu')
    s_layer, n_layer = analyze(model, *batch, SEGMENTS, sink)
    p = np.arange(q_start, T)  # query positions
    expect = dict(begin=np.mean(sink / (p + 1)), needle=np.mean((n1 - n0) / (p + 1)),
                  question=np.mean((p - q_start + 1) / (p + 1)))
    expect['context'] = 1 - sum(expect.values())
    for s in SEGMENTS:
        assert n_layer['mass'][s] == pytest.approx(expect[s], abs=1e-4)
    assert n_layer['entropy'] == pytest.approx(np.mean(np.log(p + 1)), abs=1e-4)
    # the 'S' layer: question rows see only the last W keys, which are question tokens and context
    assert s_layer['mass']['begin'] == pytest.approx(0, abs=1e-6)
    assert s_layer['mass']['needle'] == pytest.approx(0, abs=1e-6)
    assert s_layer['entropy'] == pytest.approx(math.log(W), abs=1e-4)
    for lo, hi, v in s_layer['distance']:
        assert v == pytest.approx(1 / W if hi <= W else 0.0, abs=1e-6), (lo, hi)


def test_eval_and_analysis_run_end_to_end(dataset, tmp_path):
    model = tiny_model('SSN', window=32)
    torch.save(dict(model=model.state_dict(), model_args=vars(model.config), tokenizer='gpt2',
                    config=dict(dataset=DATASET)), tmp_path / 'ckpt.pt')
    p = run('eval_long.py', f'--out_dir={tmp_path}', '--lengths=128,512', '--depths=0,1',
            '--samples=2', '--plots=False', '--prefill_chunk=100')
    assert all(t in p.stdout for t in ('passkey retrieval', 'RULER', 'loss by position'))
    results = json.load(open(tmp_path / 'eval_long.json'))
    for task in ('passkey', 'niah'):
        assert all(0 <= v <= 1 for row in results[task].values() for v in row.values())
    # too short for five variables and the question: shown as '-'
    assert results['ruler']['vt']['128'] is None
    assert all(isinstance(v, float) for row in results['niah_gain'].values() for v in row.values())
    assert 10 < results['short_val_loss'] < 11.5  # an untrained model: about ln(50257) = 10.8
    p = run('analyze_attention.py', f'--out_dir={tmp_path}', '--lengths=200', '--samples=2',
            '--plots=False')
    layers = json.load(open(tmp_path / 'attention.json'))['results']['200']['layers']
    assert [l['kind'] for l in layers] == ['S', 'S', 'N']


def test_plots_skipped_without_matplotlib_say_so(dataset, tmp_path, without_matplotlib):
    """Without the optional extra, eval_long.py and analyze_attention.py still write their tables,
    and each names the plot it skipped and how to install matplotlib, in one line. (bench.py's and
    reproduce.py's notices are checked in their own tests.)"""
    model = tiny_model('SSN', window=32)
    torch.save(dict(model=model.state_dict(), model_args=vars(model.config), tokenizer='gpt2',
                    config=dict(dataset=DATASET)), tmp_path / 'ckpt.pt')
    p = run('eval_long.py', f'--out_dir={tmp_path}', '--tasks=niah', '--lengths=128', '--depths=0',
            '--samples=1', env=without_matplotlib)
    assert (f"matplotlib is not installed: skipped {tmp_path}/niah.png (pip install matplotlib)"
            in p.stdout)
    assert os.path.exists(tmp_path / 'eval_long.json') and not os.path.exists(tmp_path / 'niah.png')
    p = run('analyze_attention.py', f'--out_dir={tmp_path}', '--lengths=200', '--samples=1',
            env=without_matplotlib)
    assert (f"matplotlib is not installed: skipped {tmp_path}/attention_distance.png (pip install "
            f"matplotlib)"
            in p.stdout)
    assert os.path.exists(tmp_path / 'attention.json')


def test_eval_bad_input_is_one_line(tmp_path):
    for args in (['--out_dir=' + str(tmp_path)], ['--tasks=passkey,foo'], ['--lengths=0.5']):
        p = run('eval_long.py', *args, ok=False)
        assert p.returncode != 0 and p.stderr.count('\n') == 1, p.stderr
        assert p.stderr.startswith('error:'), p.stderr


@pytest.mark.parametrize('target', ['sink', 'needle'])
def test_attention_analysis_of_one_hot_attention(target, hays, monkeypatch):
    """Attention that puts all its weight on one key: all the mass in that key's segment, zero
    entropy, and a distance profile that is zero everywhere but at that key's distance (and left out
    for the sink)."""
    import analyze_attention
    T, sink = 300, 10
    tokens, [(n0, n1)], q_start, _ = needle_prompt(ENC, hays['text'], T, np.random.default_rng(5))
    key = 0 if target == 'sink' else n0

    def one_hot(attn, x, rows, cos, sin):
        w = torch.zeros(x.size(0), attn.n_head, len(rows), x.size(1))
        w[..., key] = 1.0
        return w
    monkeypatch.setattr(analyze_attention, 'attention_rows', one_hot)
    batch = needle_batch([(tokens, [(n0, n1)], q_start, q_start)], SEGMENTS, sink, 'cpu')
    [layer] = analyze(tiny_model('N'), *batch, SEGMENTS, sink)
    assert layer['mass'][{'sink': 'begin', 'needle': 'needle'}[target]] == pytest.approx(1.0)
    assert layer['entropy'] == pytest.approx(0.0, abs=1e-6)
    for lo, hi, v in layer['distance']:
        # the rows' distances to the key
        hit = target == 'needle' and lo <= T - 1 - key and q_start - key < hi
        assert (v > 0) == hit, (lo, hi, v)


def test_reproduce_refuses_eval_lengths_without_the_training_length(tmp_path):
    p = run('reproduce.py', '--track=recall', f'--out_root={tmp_path}/out',
            '--eval_lengths=256,512', ok=False)
    assert p.returncode == 2 and 'Traceback' not in p.stderr and p.stderr.count('\n') == 1, p.stderr
    assert 'eval_lengths=256,512 must include the training length, 128' in p.stderr
    assert not os.path.exists(tmp_path / 'out')  # refused before anything ran


def test_reproduce_trains_evaluates_and_tabulates(dataset, tmp_path):
    args = ['reproduce.py', '--variants=rnope_swa', '--seeds=1', '--max_iters=2',
            f'--dataset={DATASET}',
            f'--out_root={tmp_path}/out', f'--results={tmp_path}/results', '--eval_samples=1',
            '--eval_lengths=128,256,512']
    log = tmp_path / 'results' / 'logs' / 'rnope_swa-s0.log'
    log.parent.mkdir(parents=True)
    log.write_text("$ python train.py (an earlier track's run, as a fresh clone holds it)\n")
    p = run(*args)
    assert open(log).read().count('$ python train.py') == 1  # a run from scratch: a fresh log
    table = open(tmp_path / 'results' / 'results.md').read()
    assert '| rnope_swa (1) | `SSSN` |' in table and '**a needle format' in table
    assert '**binding: 2 needles in one wording' in table and '**binding: 4 needles' in table
    # the asked needle's mass
    assert re.search(r"\| rnope_swa \| `N` ×2 \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", table)
    assert os.path.exists(tmp_path / 'out' / 'rnope_swa-s0' / 'attention_needles2.json')
    assert all(s in p.stdout for s in ('train.py', 'eval_long.py', 'analyze_attention.py'))
    # one run alone: every core, its output shown
    assert 'iter 0:' in p.stdout and "with 1 run at a time on" in table
    p = run(*args)  # everything is done already: nothing is trained or evaluated again
    assert 'train.py' not in p.stdout and 'eval_long.py' not in p.stdout
    assert open(tmp_path / 'results' / 'results.md').read() == table


def test_reproduce_stops_at_a_failed_run_in_one_line(tmp_path):
    """Runs side by side that fail (a dataset that does not exist): the track stops with one line
    naming the script and its log, exit 2, no traceback, nothing tabulated."""
    p = run('reproduce.py', '--variants=rope,nope,rnope', '--seeds=1', '--max_iters=2',
            '--dataset=no_such_set',
            '--jobs=2', f'--out_root={tmp_path}/out', f'--results={tmp_path}/results', ok=False)
    assert p.returncode == 2 and 'Traceback' not in p.stderr and p.stderr.count('\n') == 1, p.stderr
    assert re.search(r'train\.py failed \(exit 2\); its output is in '
                     r'.*logs/(rope|nope|rnope)-s0\.log', p.stderr)
    log = open(tmp_path / 'results' / 'logs' / 'rope-s0.log').read()
    assert "dataset 'no_such_set' not found" in log
    assert not os.path.exists(tmp_path / 'results' / 'results.md')


# --- associative recall ---------------------------------------------------------------

@pytest.mark.parametrize('length,pairs', [(10, 2), (34, 8), (128, 8), (129, 4), (600, 16)])
def test_recall_layout_is_exact(length, pairs):
    x, y, where = recall_batch(np.random.default_rng(length), 64, length, pairs)
    H = length - 2 * pairs - 2  # haystack: positions 1..H
    assert x.shape == y.shape == (64, length) and where.shape == (64, pairs)
    assert (x[:, 0] == 0).all() and (x[:, H + 1] == 1).all()  # BOS, then QUERY at L - 2n - 1
    asked = np.arange(H + 2, length, 2)
    for row in range(64):
        keys, answers = x[row, asked], x[row, asked + 1]
        # distinct keys, each asked once
        assert len(set(keys)) == pairs and ((2 <= keys) & (keys < 66)).all()
        assert ((66 <= answers) & (answers < 130)).all()
        assert (y[row, asked] == answers).all()
        assert (y[row][np.setdiff1d(np.arange(length), asked)] == -1).all()
        hay = x[row, 1:H + 1]
        is_pair = (hay < 130)
        # the pairs are the only non-filler in the haystack: none overlap
        assert is_pair.sum() == 2 * pairs
        # each asked key sits in the haystack with its value after it
        for k, v, w in zip(keys, answers, where[row]):
            assert 1 <= w and w + 1 <= H and x[row, w] == k and x[row, w + 1] == v
        starts = np.sort(where[row])
        # never overlapping, never in the query region
        assert (np.diff(starts) >= 2).all() and starts[-1] + 1 <= H


def test_recall_too_short_is_an_error():
    with pytest.raises(ValueError, match='do not fit'):
        recall_batch(np.random.default_rng(0), 1, 16, 4)  # a haystack of 6 cannot hold 4 pairs


class RecallOracle(torch.nn.Module):
    """A stand-in model with hidden() and lm_head: 'copy' answers every asked key with the value
    after its first occurrence (a perfect recall circuit); 'constant' always answers the same
    value."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.lm_head = torch.nn.Identity()
        self.lm_head.weight = torch.zeros(1)

    def hidden(self, idx):
        out = torch.zeros(*idx.shape, 256)
        for b, row in enumerate(idx.tolist()):
            for t, tok in enumerate(row):
                first = row.index(tok)
                copies = self.kind == 'copy' and 2 <= tok < 66 and first + 1 < len(row)
                answer = row[first + 1] if copies else 70
                out[b, t, answer] = 1.0
        return out


def test_recall_scores_a_copying_model_one_and_a_constant_one_in_64():
    bins = [0.0, 0.5]
    copy = eval_long.recall_scores(RecallOracle('copy'), 64, 4, 40, np.random.default_rng(0), bins,
                                   batch_tokens=200)
    assert copy['accuracy'] == copy['exact'] == 1.0 and copy['by_depth'] == {0.0: 1.0, 0.5: 1.0}
    const = eval_long.recall_scores(RecallOracle('constant'), 64, 8, 400, np.random.default_rng(1),
                                    bins)
    assert abs(const['accuracy'] - 1 / 64) < 0.01 and const['exact'] == 0.0


def test_recall_far_past_the_training_length_equals_the_reference_attention():
    """Recall at 20 times a model's training length, read as eval_long.py reads it (one forward pass
    through the fast kernels: the blocked sliding window, SDPA's causal kernel), gives the logits
    and the scores of the explicit softmax over an explicit mask."""
    torch.manual_seed(0)
    config = dict(n_layer=4, n_head=2, n_kv_head=1, n_embd=32, block_size=32, vocab_size=256,
                  layer_pattern='SSSN', sliding_window=8)
    fast, reference = (GPT(GPTConfig(**config, attention=a)).eval() for a in ('auto', 'reference'))
    reference.load_state_dict(fast.state_dict())
    x, _, _ = recall_batch(np.random.default_rng(4), 3, 640, 16)
    x, asked = torch.as_tensor(x), torch.arange(640 - 32, 640, 2)
    with torch.no_grad():
        fast_logits, reference_logits = (m.lm_head(m.hidden(x)[:, asked])
                                         for m in (fast, reference))
    torch.testing.assert_close(fast_logits, reference_logits, atol=1e-5, rtol=1e-5)
    bins = [0.0, 0.5]
    a, b = (eval_long.recall_scores(m, 640, 16, 6, np.random.default_rng(5), bins,
                                    batch_tokens=1280)
            for m in (fast, reference))
    assert a == b


@pytest.mark.parametrize('pattern', ['SSSS', 'SSSN'])
def test_the_temperature_at_evaluation_keeps_the_weights_and_touches_only_nope_layers(pattern):
    """eval_long.py's inference-time temperature: the same weights; beta 0 is the identity; without
    'N' layers it changes nothing, and with them it changes the logits only where its scale departs
    from 1 (position p with p + 1 >= floor, here 16)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=4, n_head=2, n_kv_head=1, n_embd=32, block_size=32,
                          vocab_size=256,
                          layer_pattern=pattern, sliding_window=8)).eval()
    idx = torch.randint(0, 256, (2, 40))
    hot_model = eval_long.with_nope_temperature(model, 0.5, 16)
    with torch.no_grad():
        off_model = eval_long.with_nope_temperature(model, 0.0, 16)
        plain, off, hot = (m(idx)[0] for m in (model, off_model, hot_model))
    assert all(torch.equal(a, b)
               for a, b in zip(model.state_dict().values(), hot_model.state_dict().values()))
    assert torch.equal(off, plain)
    assert torch.equal(hot[:, :15], plain[:, :15])
    assert torch.allclose(hot[:, 15:], plain[:, 15:]) == (pattern == 'SSSS')


def test_recall_attention_segments(tmp_path):
    """The recall analysis's segments: the asked pair's key and value are 'pair', every other pair
    'other pairs', and attention that copies the value after the matching key puts all its mass on
    'pair'."""
    from analyze_attention import RECALL_SEGMENTS, recall_batch_segments
    idx, rows, seg = recall_batch_segments(np.random.default_rng(3), 4, 64, 4, 'cpu')
    names = list(RECALL_SEGMENTS)
    for b in range(4):
        for j, r in enumerate(rows.tolist()):
            key = idx[b, r].item()
            w = (idx[b, :r] == key).nonzero()[0].item()  # the key's place in the haystack
            assert seg[b, j, w] == seg[b, j, w + 1] == names.index('pair')
            assert (seg[b, j] == names.index('pair')).sum() == 2
            assert (seg[b, j] == names.index('other pairs')).sum() == 2 * 3
    assert (seg[:, :, 0] == names.index('begin')).all()
    assert (seg[:, :, -9:] == names.index('query')).all()


def test_recall_checkpoint_trains_evaluates_and_analyses(tmp_path):
    """train.py with dataset='recall' and stages, then eval_long.py and analyze_attention.py on its
    checkpoint."""
    out = str(tmp_path / 'r')
    p = run('train.py', 'config/recall.py', f'--out_dir={out}', '--max_iters=6',
            '--eval_interval=3',
            '--eval_iters=1', '--log_interval=1', '--peak_flops=1e9',
            '--stages=((0, 10, 8), (3, 40, 4))')
    assert all(s in p.stdout for s in ('from iter 0: context 10', 'from iter 3: context 40',
                                       '2 pairs'))
    assert re.search(r'^eval 6: .* val accuracy [\d.]+$', p.stdout, re.M)
    p = run('eval_long.py', f'--out_dir={out}', '--recall_samples=8', '--plots=False')
    results = json.load(open(os.path.join(out, 'eval_long.json')))
    assert results['lengths'] == [40, 80, 160, 320, 640] and results['pairs'] == [8]
    assert all(0 <= r['accuracy'] <= 1 for r in results['recall']['8'].values())
    # fits neither length
    p = run('eval_long.py', f'--out_dir={out}', '--recall_pairs=64', '--lengths=40,80', ok=False)
    assert p.returncode == 2 and p.stderr.count('\n') == 1, p.stderr
    assert 'lower --recall_pairs' in p.stderr, p.stderr
    p = run('analyze_attention.py', f'--out_dir={out}', '--recall_samples=4', '--plots=False')
    layers = json.load(open(os.path.join(out, 'attention.json')))['results']['40']['layers']
    assert [l['kind'] for l in layers] == ['S', 'S', 'S', 'N']
    assert sum(layers[3]['mass'].values()) == pytest.approx(1)


def test_reproduce_recall_track_runs_end_to_end(tmp_path, without_matplotlib):
    args = ['reproduce.py', '--track=recall', '--variants=rope,rnope_swa_temp', '--seeds=2',
            '--max_iters=3', f'--out_root={tmp_path}/out', f'--results={tmp_path}/results',
            '--eval_lengths=128,256', '--jobs=3']
    p = run(*args)
    assert p.stdout.count('$ python train.py '
                          'config/recall.py') == 4 and '--nope_temperature=0.1' in p.stdout
    # three at a time, their output in their logs; the fourth alone after them, its output shown
    assert p.stdout.count(' done: train ') == 4 and p.stdout.count('iter 0:') == 1
    assert p.stdout.index('rope-s1 done') < p.stdout.index('iter 0:')
    assert 'iter 0:' in open(tmp_path / 'results' / 'logs' / 'rope-s1.log').read()
    table = open(tmp_path / 'results' / 'recall.md').read()
    assert "each run's wall clock, with 1 run at a time on" in table
    assert "or 3 runs at a time on" in table
    assert '| rope | `R` |' in table and '| rnope_swa_temp | `SSSN` +NoPE temp. β=0.1 |' in table
    summary = json.load(open(tmp_path / 'results' / 'recall.json'))
    assert summary['seeds'] == {'rope': 2, 'rnope_swa_temp': 2}
    assert len(summary['variants']['rope']['accuracy']['256']) == 2
    assert set(summary['variants']['rnope_swa_temp']['pair_mass']) == {'S', 'N'}
    p = run(*args, env=without_matplotlib)  # everything is done already: nothing is trained or
                                            # evaluated again
    assert 'train.py' not in p.stdout and 'eval_long.py' not in p.stdout
    assert open(tmp_path / 'results' / 'recall.md').read() == table
    assert (f"matplotlib is not installed: skipped the plots of {tmp_path}/results/recall.md "
            f"(pip install matplotlib)" in p.stdout)


def test_reproduce_recall_window_track_runs_end_to_end(tmp_path):
    """The window ablation at toy size: SSSN with a window and RRRN trained, evaluated with 8 and 64
    pairs, the windowed run also with the NoPE temperature at evaluation only, analysed, and
    tabulated. (Training with the temperature is the recall track's test.)"""
    args = ['reproduce.py', '--track=recall-window', '--variants=window64,rnope', '--seeds=1',
            '--max_iters=3', f'--out_root={tmp_path}/out', f'--results={tmp_path}/results',
            '--eval_lengths=128,512']
    p = run(*args)
    assert p.stdout.count('$ python train.py '
                          'config/recall.py') == 2 and '--sliding_window=64' in p.stdout
    # window64 evaluated with it, never trained with it
    assert p.stdout.count('--nope_temperature=0.1') == 1
    assert os.path.exists(tmp_path / 'out' / 'window64-s0' / 'eval_long_temp0.1_16.json')
    table = open(tmp_path / 'results' / 'window.md').read()
    assert '| window64 (1) | `SSSN` W=64 + temperature at evaluation |' in table
    assert '**64 pairs**' in table
    # 64 pairs do not fit 128 tokens
    assert '| rnope (1) | `RRRN` | - |' in table.split('**64 pairs**')[1]
    summary = json.load(open(tmp_path / 'results' / 'window.json'))
    assert len(summary['accuracy']['window64 64 pairs temperature at evaluation']['512']) == 1
    assert summary['accuracy']['rnope 64 pairs']['128'] == [None]
    p = run(*args)  # everything is done already
    assert 'train.py' not in p.stdout and 'eval_long.py' not in p.stdout
