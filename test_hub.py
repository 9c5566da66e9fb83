"""Tests of hub.py (GPT.from_pretrained): random SmolLM3 and Cohere2 models built with transformers'
own classes, saved to a folder and loaded back, compute what transformers computes: the same logits,
the same greedy tokens through this repo's KV cache, the same token ids from their tokenizer.
Skipped where transformers is not installed (a test dependency only; .ci/run installs it)."""

import functools
import json
import os
import shutil

import numpy as np
import pytest
import torch

from conftest import run
from corpus import DATA, builtin_corpus, get_tokenizer, prepare
from model import GPT

transformers = pytest.importorskip('transformers')
tokenizers = pytest.importorskip('tokenizers')

VOCAB, WINDOW = 512, 8
TEXT = builtin_corpus()[0][1][:3000] + "\n\n  12345 3.14159  naïve café 日本語 😀 don't  \n"


@functools.cache
def trained_tokenizer():
    """A byte-level BPE of 512 tokens trained on two plays, as JSON: a tokenizer unlike GPT-2's, as
    an imported model brings its own."""
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=VOCAB, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text for _, text in builtin_corpus()[:2]], trainer)
    return tok.to_str()


def tokenizer_json(path):
    path.write_text(trained_tokenizer())


def pretrained(kind, folder, **settings):
    """A random transformers model of this kind (4 layers SSSN, GQA with 4 query heads and 2 k/v
    heads, window 8), saved with a tokenizer to folder: the model, in eval mode. Its weights are
    drawn at unit-scale activations (transformers' 0.02 makes every logit nearly equal, so that a
    wrong port could still pick the same greedy tokens)."""
    common = dict(dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                       sliding_window=WINDOW, pad_token_id=None, bos_token_id=None,
                       eos_token_id=None), **settings)
    if kind == 'smollm3':
        config = transformers.SmolLM3Config(
            **common, use_sliding_window=True, no_rope_layers=[1, 1, 1, 0],
            layer_types=['sliding_attention'] * 3 + ['full_attention'],
            rope_parameters=dict(rope_type='default', rope_theta=2e6))
        model = transformers.SmolLM3ForCausalLM(config)
    else:
        config = transformers.Cohere2Config(**common, logit_scale=0.25)
        model = transformers.Cohere2ForCausalLM(config)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0, 0.2) if p.dim() == 1 else p.normal_(0.0, p.size(1) ** -0.5)
    model.save_pretrained(folder)
    tokenizer_json(folder / 'tokenizer.json')
    return model.eval()


def prompt(T, seed=0):
    return torch.randint(0, VOCAB, (2, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('kind', ['smollm3', 'cohere2'])
def test_loaded_model_gives_transformers_logits_and_greedy_tokens(kind, tmp_path):
    theirs = pretrained(kind, tmp_path)
    ours = GPT.from_pretrained(str(tmp_path))
    assert ours.config.layer_pattern == 'SSSN' and ours.config.n_kv_head == 2
    cohere = (ours.config.norm, ours.config.parallel_block) == ('layer', True)
    assert cohere == (kind == 'cohere2')
    idx = prompt(5 * WINDOW)  # the window shorter than the sequence
    with torch.no_grad():
        expected = theirs(idx).logits
        assert expected.std() > 0.2  # logits far apart: greedy tokens are a real comparison
        assert (ours(idx)[0] - expected).abs().max().item() <= 1e-4
        start = idx[:1, :10]  # 10 + 40 tokens: the 'S' layers' ring buffers of 8 wrap six times
        greedy = theirs.generate(start, max_new_tokens=40, do_sample=False)
    assert torch.equal(ours.generate(start, 40, temperature=0), greedy)


def test_the_comparison_catches_cohere_rope_pairs_left_interleaved(tmp_path, monkeypatch):
    """Loading Cohere2 without reordering q and k's channel pairs moves the logits far from 1e-4."""
    import hub
    theirs = pretrained('cohere2', tmp_path)
    idx = prompt(5 * WINDOW)
    monkeypatch.setattr(hub, 'interleaved_to_half', lambda w, n_heads: w)
    with torch.no_grad():
        wrong = GPT.from_pretrained(str(tmp_path))(idx)[0]
        assert (wrong - theirs(idx).logits).abs().max().item() > 1e-2


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float32])
def test_weights_load_in_the_dtype_asked_for(dtype, tmp_path):
    pretrained('smollm3', tmp_path)
    model = GPT.from_pretrained(str(tmp_path), dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert model.lm_head.weight is model.transformer.wte.weight  # still tied


def test_the_checkpoints_tokenizer_gives_transformers_ids(tmp_path):
    pretrained('cohere2', tmp_path)
    theirs = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / 'tokenizer.json'))
    enc = get_tokenizer(str(tmp_path))
    ids = enc.encode_ordinary(TEXT)
    assert ids == theirs(TEXT, add_special_tokens=False)['input_ids']
    assert len(ids) > len(get_tokenizer().encode_ordinary(TEXT))  # not GPT-2's 50k tokens: 512
    pieces = b''.join(enc.decode_single_token_bytes(t) for t in ids)
    assert pieces.decode() == TEXT == enc.decode(ids)


@pytest.mark.parametrize('case', ['llama', 'yarn', 'window_on_nope', 'untied', 'no_folder'])
def test_what_cannot_load_exactly_is_refused_in_one_line(case, tmp_path):
    if case != 'no_folder':
        pretrained('smollm3', tmp_path)
        config = json.load(open(tmp_path / 'config.json'))
        config.update({'llama': dict(model_type='llama'),
                       'yarn': dict(rope_parameters=dict(rope_type='yarn', rope_theta=1e4,
                                                         factor=4.0)),
                       'window_on_nope': dict(layer_types=['sliding_attention'] * 4),
                       'untied': dict(tie_word_embeddings=False)}[case])
        json.dump(config, open(tmp_path / 'config.json', 'w'))
    folder = tmp_path / 'absent' if case == 'no_folder' else tmp_path
    p = run('sample.py', f'--init_from={folder}', ok=False)
    assert p.returncode == 2 and 'Traceback' not in p.stderr and p.stderr.count('\n') == 1, p.stderr
    assert {'llama': "'llama' is not supported", 'yarn': "RoPE scaling 'yarn'", 'untied': 'untied',
            'window_on_nope': 'NoPE layer', 'no_folder': 'not a folder'}[case] in p.stderr


def test_scripts_run_on_an_imported_model(dataset, tmp_path):
    """eval_long.py, analyze_attention.py and sample.py on a random Cohere2 folder, with its own
    tokenizer: the haystacks are the held-out text re-encoded, the tables land in --out_dir, and the
    sample is transformers' greedy continuation."""
    folder, out = tmp_path / 'cohere2', tmp_path / 'results'
    theirs = pretrained('cohere2', folder)
    common = [f'--init_from={folder}', f'--out_dir={out}', '--samples=1', '--plots=False',
              f'--dataset={dataset["name"]}']
    run('eval_long.py', *common, '--tasks=passkey', '--lengths=64,128', '--depths=0.5')
    assert set(json.load(open(out / 'eval_long.json'))['passkey']) == {'64', '128'}
    run('analyze_attention.py', *common, '--lengths=400', '--sink=2')
    assert json.load(open(out / 'attention.json'))['block_size'] == 64
    shown = run('sample.py', f'--init_from={folder}', '--start=ROMEO:', '--temperature=0',
                '--max_new_tokens=20').stdout
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / 'tokenizer.json'))
    ids = tok('ROMEO:', return_tensors='pt').input_ids
    with torch.no_grad():
        greedy = theirs.generate(ids, max_new_tokens=20, do_sample=False)
    assert shown == tok.decode(greedy[0, ids.size(1):]) + '\n'


def test_fine_tuning_an_imported_model_on_its_own_tokens(dataset, tmp_path):
    """prepare_data.py --tokenizer=<folder> writes the model's tokens; train.py --init_from=<folder>
    trains the model with its own settings, the checkpoint samples with its tokenizer, and resuming
    it without repeating those settings keeps them (not train.py's defaults)."""
    folder = tmp_path / 'smollm3'
    pretrained('smollm3', folder, eos_token_id=0)
    name = '_pytest_hub'
    try:
        run('prepare_data.py', f'--tokenizer={folder}', f'--name={name}')
        meta = json.load(open(os.path.join(DATA, name, 'meta.json')))
        assert meta['dtype'] == 'uint16' and meta['tokenizer'] == str(folder)
        val = np.fromfile(os.path.join(DATA, name, 'val.bin'), dtype=np.uint16)
        plays = ''.join(text for _, text in builtin_corpus())
        assert get_tokenizer(str(folder)).decode(val[:200].tolist()) in plays
        out = tmp_path / 'out'
        args = [f'--dataset={name}', f'--out_dir={out}', '--block_size=32', '--batch_size=2',
                '--eval_iters=1', '--log_interval=1', '--eval_interval=2', '--max_iters=2',
                '--compile=False']
        p = run('train.py', *args, f'--init_from={folder}')
        assert 'init_from=' in p.stdout and "norm='rms'" not in p.stdout  # its own settings, logged
        ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
        assert ckpt['tokenizer'] == str(folder) and ckpt['model_args']['mlp_hidden'] == 96
        run('sample.py', f'--out_dir={out}', '--start=ROMEO:', '--max_new_tokens=5')
        resumed = run('train.py', *args, '--init_from=resume', '--max_iters=4').stdout
        assert 'resume: ' not in resumed  # nothing changed: the model's own settings kept
        wrong = run('train.py', f'--dataset={dataset["name"]}', f'--out_dir={tmp_path / "wrong"}',
                    f'--init_from={folder}', '--max_iters=1', ok=False)  # GPT-2's tokens
        assert wrong.returncode == 2 and wrong.stderr.count('\n') == 1, wrong.stderr
        assert '--tokenizer=' in wrong.stderr
    finally:
        shutil.rmtree(os.path.join(DATA, name), ignore_errors=True)


def test_a_vocabulary_over_65536_tokens_is_stored_as_uint32(tmp_path):
    folder = tmp_path / 'big'
    folder.mkdir()
    tokenizer_json(folder / 'tokenizer.json')
    tok = tokenizers.Tokenizer.from_file(str(folder / 'tokenizer.json'))
    tok.add_special_tokens([f'<extra_{i}>' for i in range(2 ** 16)])
    tok.save(str(folder / 'tokenizer.json'))
    json.dump(dict(eos_token_id=2 ** 16 + VOCAB - 1), open(folder / 'config.json', 'w'))
    name = '_pytest_hub32'
    try:
        texts = (TEXT + '<extra_65535>', TEXT)
        meta = prepare([('a', texts[0]), ('b', texts[1])], name, str(folder), val_fraction=0.5)
        assert meta['dtype'] == 'uint32' and meta['vocab_size'] > 2 ** 16
        stored = np.fromfile(os.path.join(DATA, name, 'train.bin'), dtype=np.uint32).tolist()
        enc = get_tokenizer(str(folder))
        assert stored in [enc.encode_ordinary(t) + [meta['eot_token']] for t in texts]
        assert max(stored) >= 2 ** 16
    finally:
        shutil.rmtree(os.path.join(DATA, name), ignore_errors=True)
