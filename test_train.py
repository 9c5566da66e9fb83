"""End-to-end tests of the scripts: prepare_data.py, train.py (one process, resumed, DDP) and
sample.py, on a small slice of the built-in corpus and a tiny model, plus their answers to bad
input."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from common import load_checkpoint
from configurator import configure, in_range
from model import GPT, GPTConfig
from corpus import (DATA, HELD_OUT_FORMAT, HELD_OUT_NAMES, HELD_OUT_WORDS, KEY_WORDS,
                    NEEDLE_FORMATS, NOUNS, builtin_corpus, get_tokenizer, pieces, read_documents,
                    retrieval_sequence)

from conftest import DATASET, HERE, TINY, one_line_error, run, script_settings


def logged_losses(stdout):
    """{iteration: loss} from train.py's plain log lines."""
    found = re.findall(r'^iter (\d+): loss ([\d.]+)', stdout, re.M)
    return {int(i): float(loss) for i, loss in found}


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
    assert list(read_documents(str(tmp_path / 'notes'), 'text')) == [('a.txt', 'first'),
                                                                     ('b.md', 'second')]
    jsonl = tmp_path / 'docs.jsonl'
    jsonl.write_text('{"body": "one"}\n\n{"body": "two"}\n')
    assert [text for _, text in read_documents(str(jsonl), 'body')] == ['one', 'two']
    with pytest.raises(SystemExit):
        list(read_documents(str(jsonl), 'text'))  # no such field: one line naming the line, the fix
    assert "line 1" in capsys.readouterr().err


def corpus_of(n=60):
    """n short documents of varied length (a few blank), the same texts in every input format."""
    rng = np.random.default_rng(0)
    plays = [text for _, text in builtin_corpus()[:3]]
    texts = []
    for i in range(n):
        play, at = plays[i % 3], int(rng.integers(0, 50000))
        texts.append('' if i % 17 == 5 else play[at:at + int(rng.integers(10, 3000))])
    return texts


def prepared(name, input, **settings):
    """prepare_data.py's output for an input: (meta.json, train tokens, val tokens, what it
    printed); the dataset is removed after."""
    args = [f'--input={input}', f'--name={name}'] + [f'--{k}={v}' for k, v in settings.items()]
    p = run('prepare_data.py', *args)
    out = os.path.join(DATA, name)
    try:
        meta = json.load(open(os.path.join(out, 'meta.json')))
        bins = [np.fromfile(os.path.join(out, f'{s}.bin'), dtype=np.uint16)
                for s in ('train', 'val')]
    finally:
        shutil.rmtree(out)
    return meta, *bins, p.stdout


def test_prepare_reads_jsonl_gz_and_txt_alike_and_splits_alike_for_any_num_proc(tmp_path):
    """A folder of .txt files and a .jsonl.gz of the same texts give the same tokens, each
    document's own with <|endoftext|> after it, split the same way by document whether one worker
    tokenizes or two; the summary line counts documents and tokens."""
    import gzip
    texts = corpus_of()
    (tmp_path / 'txt').mkdir()
    for i, text in enumerate(texts):
        (tmp_path / 'txt' / f'{i:03d}.txt').write_text(text)
    with gzip.open(tmp_path / 'docs.jsonl.gz', 'wt') as f:
        f.writelines(json.dumps(dict(body=t)) + '\n' for t in texts)
    enc = get_tokenizer()
    kept = [t for t in texts if t.strip()]
    results = [prepared('_pytest_prep', path, num_proc=n, **settings)
               for path, settings in ((tmp_path / 'txt', {}),
                                      (tmp_path / 'docs.jsonl.gz', dict(text_field='body')))
               for n in (1, 2)]
    for meta, train, val, stdout in results:
        assert meta['train_documents'] + meta['val_documents'] == len(kept)
        assert 0 < len(val) < 0.3 * (len(train) + len(val))
        assert f"{len(kept)} documents" in stdout and "tokens/s" in stdout
        assert np.array_equal(train, results[0][1]) and np.array_equal(val, results[0][2])
    # every document whole, with its end: the split's documents in input order
    meta, train, val, _ = results[0]
    for split, tokens in (('train', train), ('val', val)):
        for d in meta[f'{split}_docs']:
            ids = tokens[d['offset']:d['offset'] + d['tokens']]
            assert ids[-1] == enc.eot_token
            assert enc.decode(ids[:-1].tolist()) == texts[int(d['title'][:3])]


def test_prepare_reads_parquet_shards_as_the_same_text(tmp_path):
    """Two parquet shards named by a glob, read in name order, give the tokens of the same texts
    as .txt files; a missing column is one line naming the columns there are."""
    pyarrow = pytest.importorskip('pyarrow', reason='parquet needs pyarrow: pip install pyarrow')
    import pyarrow.parquet
    texts = corpus_of()
    (tmp_path / 'pq').mkdir()
    for k, half in enumerate((texts[:30], texts[30:])):
        pyarrow.parquet.write_table(pyarrow.table(dict(body=half)),
                                    tmp_path / 'pq' / f'part-{k}.parquet')
    (tmp_path / 'txt').mkdir()
    for i, text in enumerate(texts):
        (tmp_path / 'txt' / f'{i:03d}.txt').write_text(text)
    a = prepared('_pytest_prep', tmp_path / 'txt')
    b = prepared('_pytest_prep', tmp_path / 'pq' / '*.parquet', text_field='body')
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    p = run('prepare_data.py', f"--input={tmp_path / 'pq'}", '--name=_pytest_prep', ok=False)
    assert one_line_error(p) and "no column 'text'" in p.stderr and 'body' in p.stderr


def test_an_interrupted_preparation_leaves_the_old_dataset_whole_or_none(tmp_path, dataset):
    """Everything is written under temporary names and renamed at the end: a preparation stopped
    by bad input halfway, or killed with SIGKILL while tokenizing, leaves the dataset that was there
    byte for byte, or, where there was none, no meta.json, so that train.py refuses it in one
    line."""
    name, fresh = '_pytest_interrupted', '_pytest_interrupted_fresh'
    shutil.copytree(os.path.join(DATA, DATASET), os.path.join(DATA, name))  # a dataset to replace
    files = lambda n: {f: open(os.path.join(DATA, n, f), 'rb').read()
                       for f in sorted(os.listdir(os.path.join(DATA, n)))}
    before = files(name)
    try:
        bad = tmp_path / 'bad.jsonl'
        bad.write_text(''.join(json.dumps(dict(text=t)) + '\n' for t in corpus_of() * 20)
                       + 'not json\n')
        p = run('prepare_data.py', f'--input={bad}', f'--name={name}', ok=False)
        assert one_line_error(p) and 'not a JSON object' in p.stderr
        assert files(name) == before  # and no temporary file
        big = tmp_path / 'big.txt'  # one long document: many pieces, some seconds of work
        big.write_text(builtin_corpus()[0][1] * 100)
        for n in (name, fresh):
            command = [sys.executable, 'prepare_data.py', f'--input={big}', f'--name={n}']
            proc = subprocess.Popen(command, cwd=HERE, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            stream = os.path.join(DATA, n, 'tokens.tmp')
            while not (os.path.exists(stream) and os.path.getsize(stream)) and proc.poll() is None:
                pass
            proc.send_signal(signal.SIGKILL)
            assert proc.wait() == -signal.SIGKILL  # killed while tokenizing, not finished
        assert {k: v for k, v in files(name).items() if k != 'tokens.tmp'} == before
        assert os.listdir(os.path.join(DATA, fresh)) == ['tokens.tmp']
        p = run('train.py', *TINY, f'--dataset={fresh}', ok=False)
        assert one_line_error(p) and 'prepare_data.py' in p.stderr
    finally:
        for n in (name, fresh):
            shutil.rmtree(os.path.join(DATA, n), ignore_errors=True)


def test_runs_started_side_by_side_on_a_fresh_clone_prepare_the_text_once(tmp_path):
    """reproduce.py starts two train.py at once. On a fresh clone neither finds data/shakespeare,
    and both prepared it into the same temporary files, so that one died (found on 2026-12-06).
    Now the first prepares it under a lock while the others wait, then find it. Three runs, in a
    copy of the repo's scripts (Python finds modules beside a script's real path, so they are
    copied, not linked) whose data/ is empty."""
    for f in os.listdir(HERE):
        if f.endswith('.py'):
            shutil.copy(os.path.join(HERE, f), tmp_path)
    os.symlink(os.path.join(HERE, 'assets'), tmp_path / 'assets')
    args = [a for a in TINY if not a.startswith('--dataset')] + ['--max_iters=1', '--eval_iters=1']
    procs = [subprocess.Popen([sys.executable, 'train.py', *args, f'--out_dir=out{i}'],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env=dict(os.environ, OMP_NUM_THREADS='1'))
             for i in range(3)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert sorted(os.listdir(tmp_path / 'data' / 'shakespeare')) == ['meta.json', 'train.bin',
                                                                      'val.bin']


def test_pieces_cut_long_documents_after_newlines():
    """corpus.pieces: a document longer than the piece size is cut after newlines, its pieces in
    order and only the last marked as its end; blank documents are dropped; tasks hold about the
    size."""
    docs = [('a', 'x' * 5 + '\n' + 'y' * 9 + '\n' + 'z' * 3), ('blank', ' \n'), ('b', 'short')]
    tasks = list(pieces(docs, size=4))
    assert [titles for titles, _ in tasks] == [['a'], [], ['b']]  # the documents each begins
    assert [task for _, task in tasks] == [[('x' * 5 + '\n', False)], [('y' * 9 + '\n', False)],
                                           [('z' * 3, True), ('short', True)]]


@pytest.mark.parametrize('length,distractors',
                         [(64, 0), (257, 0), (1025, 0), (64, 4), (257, 4), (1025, 4)])
def test_retrieval_sequence_layout(length, distractors, dataset):
    """Needles inside the sequence at depths that include its very start and the end of the filler,
    distinct keys, one passkey at most, every question answered with its needle's value, exactly
    `length` tokens, and the targets scored exactly at the answers (the number and its full stop);
    with distractors, sentences shaped like "The X is Y." without a number in the haystack too, and
    the layout as without."""
    enc = get_tokenizer()
    filler = np.fromfile(os.path.join(DATA, DATASET, 'train.bin'), dtype=np.uint16)
    rng = np.random.default_rng(length)
    counts, at_start, at_end, decoys = set(), 0, 0, 0
    for _ in range(300):
        tokens, scored, asked = retrieval_sequence(enc, filler, length, rng, needles=4,
                                                   distractors=distractors)
        assert tokens.shape == scored.shape == (length,) and tokens.dtype == np.int64
        keys = [key for _, key, _, _, _ in asked]
        assert len(set(keys)) == len(keys)  # the passkey's key is None: at most one passkey
        texts = [[t.format(key=key, value=value, noun=noun) for t in NEEDLE_FORMATS[name]]
                 for name, key, value, noun, _ in asked]
        tail = length - sum(len(enc.encode_ordinary(f"\n{question} {value}."))
                            # where the questions begin
                            for (_, question), (_, _, value, _, _) in zip(texts, asked))
        expected_scored = np.zeros(length, dtype=bool)
        at = tail
        for (needle, question), (_, _, value, _, start) in zip(texts, asked):  # in the order asked
            needle = enc.encode_ordinary(' ' + needle)
            # the needle, whole, before the questions
            assert tokens[start:start + len(needle)].tolist() == needle
            assert 0 <= start and start + len(needle) <= tail
            at_start += start == 0
            at_end += start + len(needle) == tail
            question = enc.encode_ordinary('\n' + question)
            answer = enc.encode_ordinary(f" {value}.")
            assert tokens[at:at + len(question) + len(answer)].tolist() == question + answer
            assert enc.decode(answer[-1:]) == '.'
            expected_scored[at + len(question):at + len(question) + len(answer)] = True
            at += len(question) + len(answer)
        assert at == length
        assert np.array_equal(scored, expected_scored)
        counts.add(len(asked))
        decoys += len(re.findall(r' The [A-Za-z]+ is [A-Za-z]+\.',
                                 enc.decode(tokens[:tail].tolist())))
    assert counts == {1, 2, 3, 4} if length > 64 else 1 in counts  # as many needles as fit
    assert at_start > 0 and at_end > 0
    # the text holds none in these draws; with distractors about one in three 64-token sequences
    # holds one, and longer ones about two each
    assert decoys > (50 if length == 64 else 300) if distractors else decoys < 10


@pytest.mark.parametrize('shared_word', [0.0, 1.0])
def test_same_wording_sequences_bind_each_answer_to_its_key(shared_word, dataset):
    """With same_wording=1 every sequence of two needles or more has them all in one format and one
    noun, with distinct keys, and every question is answered with its own needle's value, so only
    the key tells which; with shared_word=1 every key after the first shares a word, in its place,
    with an earlier one. The held-out format's keys are never produced (nor its words: the formats
    are NEEDLE_FORMATS'; see the next test). Same-wording sequences with one needle stay as they
    were."""
    enc = get_tokenizer()
    filler = np.fromfile(os.path.join(DATA, DATASET, 'train.bin'), dtype=np.uint16)
    rng = np.random.default_rng(11)
    multi = shared = 0
    for _ in range(200):
        tokens, scored, asked = retrieval_sequence(enc, filler, 257, rng, needles=4, distractors=4,
                                                   same_wording=1.0, shared_word=shared_word)
        names, keys, values, nouns, starts = zip(*asked)
        assert len(set(keys)) == len(keys)
        # (the text may hold them)
        assert not any(set(re.split('[- ]', key.lower())) & HELD_OUT_WORDS for key in keys if key)
        if len(asked) > 1:
            multi += 1
            assert len(set(names)) == 1 and 'passkey' not in names
            assert len(set(nouns)) == 1 and None not in keys
            words = [re.split('[- ]', k) for k in keys]
            shared += all(any(w[i] == v[i] for v in words if v is not w for i in (0, 1))
                          for w in words)
        # each answer (scored run) is its own needle's value, the needle whole where asked says
        answers = np.split(tokens, np.flatnonzero(np.diff(scored.astype(int))) + 1)[1::2]
        assert [enc.decode(a.tolist()) for a in answers] == [f" {v}." for v in values]
        for name, key, value, noun, start in asked:
            text = NEEDLE_FORMATS[name][0].format(key=key, value=value, noun=noun)
            needle = enc.encode_ordinary(' ' + text)
            assert tokens[start:start + len(needle)].tolist() == needle
    assert multi > 100
    assert shared == multi if shared_word else shared < multi / 2  # by chance, sometimes (20 words)


def test_score_last_false_leaves_the_answer_elimination_gives_unscored(dataset):
    """score_last=False: a same-wording sequence scores every answer but its last (the value not yet
    given); a sequence of one needle, or of several wordings, scores all of its answers."""
    enc = get_tokenizer()
    filler = np.fromfile(os.path.join(DATA, DATASET, 'train.bin'), dtype=np.uint16)
    counts = {}
    for same_wording in (0.0, 1.0):
        rng = np.random.default_rng(5)
        for _ in range(100):
            tokens, scored, asked = retrieval_sequence(enc, filler, 257, rng, needles=4,
                                                       same_wording=same_wording,
                                                       score_last=False)
            answers = np.split(tokens, np.flatnonzero(np.diff(scored.astype(int))) + 1)[1::2]
            values = [f" {v}." for v in list(zip(*asked))[2]]
            cut = len(asked) > 1 and same_wording
            assert [enc.decode(a.tolist()) for a in answers] == values[:-1] if cut else values
            counts[same_wording, len(asked) > 1] = counts.get((same_wording, len(asked) > 1), 0) + 1
    assert min(counts.values()) > 10  # each kind of sequence was drawn


def test_text_nouns_draw_the_wording_s_noun_from_the_text_and_change_nothing_at_zero(dataset):
    """text_nouns=1: every noun is one or two words of the text, never one of NOUNS nor a held-out
    word, the needle and its question say it, and a same-wording sequence keeps one noun;
    text_nouns=0 draws exactly the sequences of a call without it."""
    enc = get_tokenizer()
    filler = np.fromfile(os.path.join(DATA, DATASET, 'train.bin'), dtype=np.uint16)
    text = enc.decode(filler.tolist())
    rng, sizes = np.random.default_rng(3), set()
    for _ in range(200):
        tokens, _, asked = retrieval_sequence(enc, filler, 257, rng, needles=4, same_wording=1.0,
                                              text_nouns=1.0)
        names, _, _, nouns, _ = zip(*asked)
        decoded = enc.decode(tokens.tolist())
        if len(asked) > 1:  # one wording
            assert len(set(nouns)) == 1
        for name, key, value, noun, start in asked:
            words = noun.split(' ')
            sizes.add(len(words))
            assert noun not in NOUNS and not {w.lower() for w in words} & HELD_OUT_WORDS
            assert all(f" {w}" in text for w in words)  # a word-token of the text
            needle = enc.encode_ordinary(' ' + NEEDLE_FORMATS[name][0].format(
                key=key, value=value, noun=noun))
            assert tokens[start:start + len(needle)].tolist() == needle
            assert NEEDLE_FORMATS[name][1].format(key=key, noun=noun) in decoded
    assert sizes == {1, 2}
    for seed in range(20):
        a, b = (retrieval_sequence(enc, filler, 257, np.random.default_rng(seed), needles=4,
                                   distractors=4, same_wording=0.5, **kw)
                for kw in ({}, {'text_nouns': 0.0}))
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_long_words_make_a_text_key_s_words_of_several_tokens_and_change_nothing_at_zero(dataset):
    """long_words=1: every word of a key taken from the text is a word of the text that the
    tokenizer splits in 2 or 3 tokens (as the held-out names are), never a held-out word;
    long_words=0 draws exactly the sequences of a call without it."""
    enc = get_tokenizer()
    filler = np.fromfile(os.path.join(DATA, DATASET, 'train.bin'), dtype=np.uint16)
    text = enc.decode(filler.tolist())
    rng, sizes = np.random.default_rng(4), []
    for _ in range(200):
        _, _, asked = retrieval_sequence(enc, filler, 257, rng, needles=4, long_words=1.0)
        for _, key, _, _, _ in asked:
            words = re.split('[- ]', key) if key else []
            if words and not {w.lower() for w in words} <= set(KEY_WORDS):  # from the text
                for w in words:
                    sizes.append(len(enc.encode_ordinary(' ' + w)))
                    assert f" {w}" in text and not any(h in w.lower() for h in HELD_OUT_WORDS)
    assert len(sizes) > 100 and set(sizes) == {2, 3}
    for seed in range(20):
        a, b = (retrieval_sequence(enc, filler, 257, np.random.default_rng(seed), needles=4,
                                   distractors=4, same_wording=0.5, text_nouns=0.5, **kw)
                for kw in ({}, {'long_words': 0.0}))
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_the_held_out_format_is_never_trained(dataset):
    """No training sequence holds the held-out format's words or its keys (names), so eval_long.py's
    heldout task asks in a format the model has never seen."""
    enc = get_tokenizer()
    filler = np.fromfile(os.path.join(DATA, DATASET, 'train.bin'), dtype=np.uint16)
    rng = np.random.default_rng(0)
    from_text = 0  # keys that are words of the text, not of KEY_WORDS
    trained = (' '.join(needle + ' ' + question for needle, question in NEEDLE_FORMATS.values())
               + ' '.join(NOUNS))
    for word in ('vault', 'combination'):  # the format's own words, banned with its names
        assert word in HELD_OUT_FORMAT[0] and word in HELD_OUT_FORMAT[1] and word not in trained
        assert word in HELD_OUT_WORDS
    assert not set(HELD_OUT_NAMES) & set(KEY_WORDS)
    for _ in range(300):
        tokens, _, asked = retrieval_sequence(enc, filler, 512, rng, needles=4, distractors=4)
        texts = [[t.format(key=key, value=value, noun=noun) for t in NEEDLE_FORMATS[name]]
                 for name, key, value, noun, _ in asked]
        for (needle, _), (_, key, _, _, start) in zip(texts, asked):
            n = len(enc.encode_ordinary(' ' + needle))
            needle = enc.decode(tokens[start:start + n].tolist())
            assert 'vault' not in needle and not any(held in needle for held in HELD_OUT_NAMES)
            words = set(re.split('[- ]', key.lower())) if key else set()
            from_text += not words <= set(KEY_WORDS)
            assert not words & HELD_OUT_WORDS
        tail = sum(len(enc.encode_ordinary(f"\n{q} {v}."))
                   for (_, q), (_, _, v, _, _) in zip(texts, asked))
        questions = enc.decode(tokens[-tail:].tolist())
        assert 'vault' not in questions and not any(held in questions for held in HELD_OUT_NAMES)
    assert from_text > 100  # about half the keys come from the text: the test sees them


def test_training_lowers_the_loss_and_writes_a_checkpoint(trained):
    out, stdout = trained
    evals = [float(v) for v in re.findall(r'^eval \d+: train loss [\d.]+, val loss '
                                          r'([\d.]+)', stdout, re.M)]
    # an untrained model stays at its first loss (11.1)
    assert len(evals) == 3 and evals[-1] < evals[0] - 0.4
    assert all(os.path.exists(os.path.join(out, f)) for f in ('ckpt.pt', 'metrics.jsonl'))


def metrics_lines(out):
    """metrics.jsonl as [(iter, what was logged)], the timings left out (they differ from run to
    run)."""
    return [(m['iter'], {k: v for k, v in m.items() if k not in ('tokens_per_s', 'mfu')})
            for m in map(json.loads, open(os.path.join(out, 'metrics.jsonl')))]


def test_a_run_killed_and_resumed_across_a_stage_change_ends_bit_identical(dataset, tmp_path):
    """kill -9 at iteration 10, after the checkpoint of iteration 8, then --init_from=resume: the
    weights at iteration 16 equal those of the run that never stopped, bit for bit, across the
    change of context at iteration 6 (where retrieval sequences join the text), and metrics.jsonl
    holds every iteration once, with the losses of the run that never stopped."""
    args = [*TINY, '--stages=((0, 32, 2), (6, 64, 2, 48, 2))', '--max_iters=16',
            '--eval_interval=8', '--lr_decay_iters=16']
    whole, cut = str(tmp_path / 'whole'), str(tmp_path / 'cut')
    run('train.py', *args, '--out_dir=' + whole)
    proc = subprocess.Popen([sys.executable, 'train.py', *args, '--out_dir=' + cut], cwd=HERE,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, OMP_NUM_THREADS='1'))
    for line in proc.stdout:
        if line.startswith('iter 10:'):  # iteration 9's metrics are written by now
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert torch.load(os.path.join(cut, 'ckpt.pt'), weights_only=True)['iter_num'] == 8
    assert max(i for i, _ in metrics_lines(cut)) >= 9  # logged past the checkpoint before the kill
    run('train.py', *args, '--out_dir=' + cut, '--init_from=resume')
    a, b = (torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True) for out in (whole, cut))
    assert a['iter_num'] == b['iter_num'] == 16
    assert all(torch.equal(a['model'][k], b['model'][k]) for k in a['model'])
    assert metrics_lines(cut) == metrics_lines(whole)
    # each line once
    assert len({(i, tuple(m)) for i, m in metrics_lines(cut)}) == len(metrics_lines(cut))


def test_a_stage_s_same_wording_share_changes_its_retrieval_sequences_only(dataset, tmp_path):
    """A stage's sixth number, the share of its multi-needle retrieval sequences in one wording,
    reaches the draws from that stage on: two runs that differ only in the second stage's share
    train identically before it (their loss at every step the same) and on other sequences after
    it (the answers' loss differs at every step), and the log names the share."""
    runs = {}
    for share in ('0.0', '1.0'):
        p = run('train.py', *TINY, f'--stages=((0, 48, 2, 48, 2), (3, 48, 2, 48, 2, {share}))',
                '--max_iters=6', '--eval_interval=100', '--retrieval_needles=3',
                '--out_dir=' + str(tmp_path / share))
        runs[share] = {int(i): (float(text), float(answers)) for i, text, answers in re.findall(
            r'^iter (\d+): loss ([\d.]+).*answer loss ([\d.]+)', p.stdout, re.M)}
        assert ('1 of those with several needles in one wording' in p.stdout) == (share == '1.0')
    assert sorted(runs['0.0']) == sorted(runs['1.0']) == [1, 2, 3, 4, 5, 6]
    before, after = ([(runs['0.0'][i], runs['1.0'][i]) for i in steps]
                     for steps in ((1, 2, 3), (4, 5, 6)))
    assert all(a == b for a, b in before)
    assert all(a[1] != b[1] for a, b in after)


def test_a_run_from_scratch_never_overwrites_a_checkpoint(trained, tmp_path):
    """Started again where a model exists, train.py refuses in one line naming that model and the
    ways on, and leaves the checkpoint as it was; a run from scratch in a folder with only old
    metrics starts them afresh."""
    out = tmp_path / 'again'
    shutil.copytree(trained[0], out)
    before = (out / 'ckpt.pt').read_bytes()
    p = run('train.py', *TINY, '--max_iters=8', f'--out_dir={out}', ok=False)
    assert p.returncode == 2 and 'Traceback' not in p.stderr and p.stderr.count('\n') == 1, p.stderr
    for words in ('iteration 8', 'val loss', '--init_from=resume', '--out_dir', 'remove it'):
        assert words in p.stderr, p.stderr
    assert (out / 'ckpt.pt').read_bytes() == before
    (out / 'ckpt.pt').unlink()
    run('train.py', *TINY, '--max_iters=2', '--eval_interval=2', f'--out_dir={out}')
    assert [i for i, _ in metrics_lines(out)] == [0, 1, 2, 2]  # the old run's lines are gone


def bad_checkpoint(case, good, folder):
    """folder/ckpt.pt made bad in the way `case` names, from the good checkpoint dict `good`;
    returns the words the one-line refusal must hold."""
    path, model = folder / 'ckpt.pt', dict(good['model'])
    broken = lambda **changes: torch.save({**good, **changes}, path)
    if case == 'text':
        path.write_text("a text file, named as a checkpoint\n")
    elif case == 'empty':
        path.write_bytes(b'')
    elif case == 'truncated':
        torch.save(good, path)
        path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    elif case == 'directory':
        path.mkdir()
        return 'not a file'
    elif case == 'state_dict':
        torch.save(good['model'], path)
        return 'bare state_dict'
    elif case == 'no_model_args':
        torch.save(dict(model=good['model']), path)
        return 'a checkpoint is dict(model=model.state_dict(), model_args='
    elif case in ('nan', 'inf'):
        model['transformer.h.1.mlp.up.weight'] = model['transformer.h.1.mlp.up.weight'].clone()
        model['transformer.h.1.mlp.up.weight'][3, 5] = float(case)
        broken(model=model)
        return 'transformer.h.1.mlp.up.weight holds non-finite values'
    elif case == 'n_embd_changed':
        broken(model_args={**good['model_args'], 'n_embd': 48})
        return ('tensor lm_head.weight: the checkpoint holds shape (50257, 32), its model_args '
                'make shape (50257, 48)')
    elif case == 'newer_setting':
        broken(model_args={**good['model_args'], 'attention_sinks': 4})
        return 'attention_sinks'
    elif case == 'missing_tensor':
        del model['transformer.h.0.attn.q_proj.weight']
        broken(model=model)
        return 'tensor transformer.h.0.attn.q_proj.weight: the checkpoint holds none'
    elif case == 'bad_setting':
        broken(model_args={**good['model_args'], 'layer_pattern': 'SXN'})
        return 'layer_pattern'
    return 'not a checkpoint of tensors and plain values'


LOADERS = [('sample.py',), ('eval_long.py', '--tasks=short'), ('analyze_attention.py',),
           ('export_hf.py',), ('train.py', *TINY, '--init_from=resume')]


@pytest.mark.parametrize('case', ['text', 'empty', 'truncated', 'directory', 'state_dict',
                                  'no_model_args', 'nan',
                                  'inf', 'n_embd_changed', 'newer_setting', 'missing_tensor',
                                  'bad_setting'])
def test_every_script_refuses_a_bad_checkpoint_in_one_line(case, trained, tmp_path):
    """Each script that loads a checkpoint stops with one line naming the file and what is wrong,
    exit 2, no traceback, and nothing written: never a traceback, and never an exit 0 on weights
    that are not finite."""
    good = torch.load(os.path.join(trained[0], 'ckpt.pt'), weights_only=True)
    words = bad_checkpoint(case, good, tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    procs = [subprocess.Popen([sys.executable, *args, f'--out_dir={tmp_path}'], cwd=HERE, env=env,
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for args in LOADERS]
    for args, proc in zip(LOADERS, procs):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2 and 'Traceback' not in err and err.count('\n') == 1, \
            (args[0], err)
        assert 'ckpt.pt' in err and words in err, (args[0], err)
    assert sorted(os.listdir(tmp_path)) == ['ckpt.pt']  # no metrics, no evaluation, no export


def test_checkpoints_that_load_though_not_from_train_py(trained, tmp_path):
    """A compiled model's state_dict (names prefixed by torch.compile) and a hand-made checkpoint
    with only 'model' and 'model_args' load and sample; the latter cannot be resumed, which train.py
    says in one line."""
    good = torch.load(os.path.join(trained[0], 'ckpt.pt'), weights_only=True)
    torch.save({**good, 'model': {'_orig_mod.' + k: v for k, v in good['model'].items()}},
               tmp_path / 'ckpt.pt')
    model, _ = load_checkpoint(str(tmp_path / 'ckpt.pt'))
    assert all(torch.equal(v, good['model'][k]) for k, v in model.state_dict().items())
    torch.save(dict(model=good['model'], model_args=good['model_args']), tmp_path / 'ckpt.pt')
    assert run('sample.py', f'--out_dir={tmp_path}', '--max_new_tokens=5').stdout.strip()
    p = run('train.py', *TINY, '--init_from=resume', f'--out_dir={tmp_path}', ok=False)
    assert p.returncode == 2 and 'Traceback' not in p.stderr and p.stderr.count('\n') == 1, p.stderr
    assert 'no training state' in p.stderr


def test_paths_that_are_not_what_they_should_be(trained, tmp_path):
    a_file = tmp_path / 'a_file'
    a_file.write_text('')
    for args, words in [(['train.py', *TINY, f'--out_dir={a_file}'], 'is a file'),
                        (['sample.py', f'--out_dir={a_file}'], 'is a file'),
                        (['export_hf.py', f'--out_dir={trained[0]}', f'--hf_dir={a_file}'],
                         'is a file')]:
        p = run(*args, ok=False)
        assert one_line_error(p), p.stderr
        assert words in p.stderr, p.stderr


def test_a_recall_model_is_refused_where_text_is_needed(tmp_path):
    cfg = GPTConfig(block_size=32, vocab_size=256, n_layer=1, n_head=2, n_embd=16)
    torch.save(dict(model=GPT(cfg).state_dict(), model_args=vars(cfg), tokenizer=None,
                    config=dict(dataset='recall')), tmp_path / 'ckpt.pt')
    for script in ('sample.py', 'export_hf.py'):
        p = run(script, f'--out_dir={tmp_path}', ok=False)
        assert one_line_error(p), p.stderr
        assert 'recall' in p.stderr, p.stderr


def test_sample_continues_a_file_longer_than_the_training_context(trained, tmp_path):
    prompt = tmp_path / 'doc.txt'
    prompt.write_text(builtin_corpus()[7][1][:2000])  # ~500 tokens, far past block_size=64
    out = run('sample.py', '--out_dir=' + trained[0], f'--start=FILE:{prompt}',
              '--max_new_tokens=20')
    assert 'longer than the training context' in out.stderr and 'prefill' in out.stderr
    assert out.stdout.strip()


def test_ddp_matches_one_process(dataset, tmp_path):
    """Two CPU processes (gloo), one micro-batch each of text and of retrieval sequences, log the
    losses of one process that runs both micro-batches of each: the same global batch."""
    common = [*TINY, '--max_iters=3', '--eval_interval=100', '--gradient_accumulation_steps=2',
              '--stages=((0, 64, 2, 48, 2),)']
    one = run('train.py', *common, '--out_dir=' + str(tmp_path / 'one'))
    two = run('torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py',
              *common, '--out_dir=' + str(tmp_path / 'two'))
    for pattern in (r'^iter (\d+): loss ([\d.]+)', r'^iter (\d+): .*answer loss ([\d.]+)'):
        a, b = ({int(i): float(v) for i, v in re.findall(pattern, p.stdout, re.M)}
                for p in (one, two))
        assert sorted(a) == sorted(b) == [1, 2, 3]
        for i in a:
            assert b[i] == pytest.approx(a[i], abs=1e-3)


def metrics_losses(out):
    """{(iteration, name): value} of every loss in out_dir/metrics.jsonl."""
    return {(i, k): v for i, m in metrics_lines(out) for k, v in m.items() if 'loss' in k}


def test_fsdp_matches_one_process_resumes_after_kill_9_and_writes_the_usual_checkpoint(dataset,
                                                                                       tmp_path):
    """FSDP2 over two CPU processes (gloo), with activation checkpointing, 20 iterations across a
    stage change: every loss in metrics.jsonl (training and evaluation, text and answers) within
    1e-5 of one process running the same global batch as two micro-batches. A run killed with
    SIGKILL at iteration 13, after the checkpoint of iteration 10, and resumed under FSDP ends with
    weights within 1e-6 of the run that never stopped. The checkpoint is the one-process kind: the
    same names, shapes and optimizer state layout; sample.py loads it and one process resumes it."""
    args = [*TINY, '--stages=((0, 32, 2), (8, 64, 2, 48, 2))', '--max_iters=20',
            '--eval_interval=10', '--lr_decay_iters=20', '--gradient_accumulation_steps=2']
    fsdp = ['torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py', *args,
            '--fsdp=True', '--activation_checkpointing=True']
    one, whole, cut = (str(tmp_path / n) for n in ('one', 'whole', 'cut'))
    run('train.py', *args, '--out_dir=' + one)
    run(*fsdp, '--out_dir=' + whole)
    a, b = metrics_losses(one), metrics_losses(whole)
    assert sorted(a) == sorted(b) and len(a) > 30
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-5), k
    proc = subprocess.Popen([sys.executable, '-m', *fsdp, '--out_dir=' + cut], cwd=HERE, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, OMP_NUM_THREADS='1'), start_new_session=True)
    for line in proc.stdout:
        if line.startswith('iter 13:'):
            os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both processes
            break
    proc.wait()
    assert torch.load(os.path.join(cut, 'ckpt.pt'), weights_only=True)['iter_num'] == 10
    run(*fsdp, '--out_dir=' + cut, '--init_from=resume')
    ckpt = {out: torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)
            for out in (one, whole, cut)}
    assert ckpt[whole]['iter_num'] == ckpt[cut]['iter_num'] == 20
    for k, w in ckpt[whole]['model'].items():
        assert (ckpt[cut]['model'][k] - w).abs().max() <= 1e-6, k
        assert ckpt[one]['model'][k].shape == w.shape and type(w) is torch.Tensor
    plain, sharded = ckpt[one]['optimizer'], ckpt[whole]['optimizer']
    assert ([g['params'] for g in plain['param_groups']]
            == [g['params'] for g in sharded['param_groups']])
    assert {i: {k: v.shape for k, v in s.items()} for i, s in plain['state'].items()} == \
        {i: {k: v.shape for k, v in s.items()} for i, s in sharded['state'].items()}
    run('sample.py', '--out_dir=' + whole, '--max_new_tokens=4', '--num_samples=1')
    run('train.py', *args, '--max_iters=22', '--out_dir=' + whole, '--init_from=resume')


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
    (['prepare_data.py', '--input=/nonexistent/*.parquet'], 'no .txt/.md/.jsonl/.jsonl.gz'),
    (['train.py', '--batch_size=0'], 'batch_size=0 is out of range: it must be in [1, inf)'),
    (['train.py', '--gradient_accumulation_steps=0'], 'gradient_accumulation_steps=0 is out of '
                                                      'range'),
    (['train.py', '--block_size=0'], 'block_size=0 is out of range'),
    (['train.py', '--learning_rate=-1'], 'learning_rate=-1.0 is out of range: it must be in (0, '
                                         'inf)'),
    (['train.py', '--n_layer=0'], 'n_layer=0 is out of range'),
    (['train.py', '--max_iters=-1'], 'max_iters=-1 is out of range'),
    (['train.py', '--retrieval_weight=-1'], 'retrieval_weight=-1.0 is out of range: it must be in '
                                            '[0, inf)'),
    (['train.py', '--stages=((0, 64, 2, 64),)'], 'stages='),
    (['train.py', '--stages=((0, 64, 0),)'], 'a sequence in every stage'),
    (['train.py', '--stages=((0, 64, 2, 48, 2, 1.5),)'], 'same_wording in [0, 1]'),
    (['train.py', '--fsdp=True'], 'run under torchrun'),
    (['sample.py', '--temperature=-1'], 'temperature=-1.0 is out of range'),
    (['sample.py', '--num_samples=0'], 'num_samples=0 is out of range'),
    (['eval_long.py', '--samples=0'], 'samples=0 is out of range'), ])
def test_bad_input_is_one_line_without_traceback(args, words, dataset, tmp_path):
    p = run(*args, ok=False)
    assert p.returncode == 2
    assert 'Traceback' not in p.stderr and p.stderr.count('\n') == 1 and words in p.stderr, p.stderr


def test_empty_prompt_file(trained, tmp_path):
    empty = tmp_path / 'empty.txt'
    empty.write_text('')
    p = run('sample.py', '--out_dir=' + trained[0], f'--start=FILE:{empty}', ok=False)
    assert one_line_error(p) and 'empty' in p.stderr


class CodeOnLoad:
    """Unpickled with weights_only=False, this would call open(path, 'w'): a stand-in for any code a
    downloaded checkpoint could run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, 'w')


def test_a_checkpoint_that_would_run_code_is_refused(trained, tmp_path):
    """Every script loads checkpoints with weights_only=True: a crafted pickle is refused in one
    line and its code never runs, while train.py's own checkpoints load."""
    model, checkpoint = load_checkpoint(os.path.join(trained[0], 'ckpt.pt'))
    assert checkpoint['iter_num'] == 8 and not model.training
    crafted, ran = tmp_path / 'crafted', tmp_path / 'the code ran'
    crafted.mkdir()
    torch.save({'model_args': CodeOnLoad(str(ran))}, crafted / 'ckpt.pt')
    with pytest.raises(ValueError, match='not a checkpoint of tensors and plain values'):
        load_checkpoint(str(crafted / 'ckpt.pt'))
    for script, *args in [('sample.py',), ('eval_long.py', '--tasks=short'),
                          ('analyze_attention.py',),
                          ('export_hf.py',), ('train.py', *TINY, '--init_from=resume')]:
        p = run(script, *args, f'--out_dir={crafted}', ok=False)
        assert one_line_error(p), (script, p.stderr)
        assert 'not loaded' in p.stderr, (script, p.stderr)
    assert not ran.exists()


def test_bench_runs_every_section(tmp_path, without_matplotlib):
    """bench.py end to end at toy sizes: every table printed, the JSON written (no timing is
    asserted); without matplotlib, one line names the plot skipped."""
    out = tmp_path / 'bench.json'
    p = run('bench.py', '--n_layer=4', '--n_embd=32', '--n_head=2', '--n_kv_head=1',
            '--sliding_window=16', '--train_lengths=32,64', '--train_tokens=128',
            '--attn_lengths=64,128', '--attn_forward_length=256', '--prefill_lengths=64,128',
            '--decode_lengths=32,64', '--decode_tokens=2', '--recompute_lengths=32,64',
            '--loss_length=32', '--loss_steps=2', '--reps=1', f'--out={out}',
            f'--plot={tmp_path}/bench.png', env=without_matplotlib)
    assert (f"matplotlib is not installed: skipped {tmp_path}/bench.png (pip install matplotlib)"
            in p.stdout)
    for title in ('training step, ', 'one attention layer', 'prefill',
                  'decode through the KV cache', 'without a cache', 'a training step of SSSN'):
        assert title in p.stdout
    results = json.load(open(out))
    assert [(r['loss'], r['freed_memory']) for r in results['loss']] == [
        ('plain', 'keep'), ('chunked', 'keep'), ('chunked', 'release')]
    assert {r['pattern'] for r in results['prefill']} == {'SSSN', 'R'}
    kv = {(r['T'], r['pattern']): r['kv_bytes'] for r in results['decode']['rows']}
    ideal = results['decode']['kv_ideal_ratio']['64']
    assert kv[64, 'SSSN'] / kv[64, 'R'] == pytest.approx(ideal, rel=0.05)


def test_bench_prepare_section_runs(tmp_path):
    """bench.py --sections=prepare at toy size: prepare_data.py on generated jsonl.gz with 1 and 2
    workers, every row's documents and tokens the same, its memory measured, the reference rate
    printed (no timing is asserted)."""
    out = tmp_path / 'prepare.json'
    p = run('bench.py', '--sections=prepare', '--prepare_runs=((1, 1), (1, 2))', f'--out={out}',
            '--plot=')
    assert "prepare_data.py on generated jsonl.gz" in p.stdout
    rows = json.load(open(out))['prepare']
    assert [r['num_proc'] for r in rows] == [1, 2]
    assert rows[0]['tokens'] == rows[1]['tokens'] > 100_000 and rows[0]['documents'] > 100
    assert all(0 < r['peak_pss'] <= r['peak_rss'] for r in rows)
    assert not any(name.startswith('_bench') for name in os.listdir(DATA))


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(trained, tmp_path):
    out = tmp_path / 'blown'
    shutil.copytree(trained[0], out)
    before = torch.load(out / 'ckpt.pt', weights_only=True)
    p = run('train.py', *TINY, '--max_iters=12', '--eval_interval=4', f'--out_dir={out}',
            '--init_from=resume', '--learning_rate=1e30', '--min_lr=1e30', ok=False)
    assert p.returncode == 2 and 'Traceback' not in p.stderr and p.stderr.count('\n') == 1, p.stderr
    assert 'stopped without updating' in p.stderr and 'last good checkpoint' in p.stderr
    after = torch.load(out / 'ckpt.pt', weights_only=True)  # still iteration 8's weights: nothing
                                                            # blown up was saved
    assert after['iter_num'] == before['iter_num'] == 8
    assert all(torch.equal(after['model'][k], v) for k, v in before['model'].items())


# --- every numeric setting of every script has a range, and its boundaries are checked ------

SCRIPTS = ['train.py', 'sample.py', 'eval_long.py', 'analyze_attention.py', 'prepare_data.py',
           'bench.py', 'reproduce.py']


@pytest.mark.parametrize('script', SCRIPTS)
def test_every_numeric_setting_declares_its_range(script):
    settings = script_settings(script)
    for name, default in settings.items():
        numbers = default if isinstance(default, tuple) else (default,)
        if numbers and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           for v in numbers):
            assert name in settings['__annotations__'], \
                f"{script}: {name} = {default!r} has no range"
    configure(dict(settings), [])  # every default lies in its range


def outside_and_inside(interval, integer):
    """Values just outside the interval (and 0 and -1 where those are outside), and its ends where
    included."""
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
        integer = (isinstance(sample, int) or sample is None
                   or (isinstance(default, tuple) and not default))
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


def test_every_file_in_results_is_named_by_a_document():
    """results/ holds nothing a reader cannot find: every file outside a logs/ folder is named, by
    its file name, in another document (a .md file) or a script; a logs/ folder is named as a whole
    by its folder's report (README.md). A stray file fails this test."""
    results = os.path.join(HERE, 'results')
    documents = [os.path.join(root, f) for root, dirs, files in os.walk(HERE)
                 if not os.path.relpath(root, HERE).startswith(('.', 'data', 'out'))
                 for f in files
                 if f.endswith('.md') or (f.endswith('.py') and not f.startswith('test_'))]
    texts = {path: open(path, encoding='utf-8').read() for path in documents}
    stray = []
    for root, dirs, files in os.walk(results):
        for f in files:
            path = os.path.join(root, f)
            if f == 'README.md':  # a report: a document itself
                continue
            if os.sep + 'logs' in os.path.relpath(path, HERE):
                folder = path.split(os.sep + 'logs' + os.sep)[0]
                report = os.path.join(folder, 'README.md')
                named = os.path.exists(report) and 'logs/' in texts[report]
            else:
                named = any(f in text for other, text in texts.items() if other != path)
            if not named:
                stray.append(os.path.relpath(path, HERE))
    assert not stray, f"files under results/ that no document names: {stray}"
