"""Tests of export_hf.py: the folder it writes loads in Hugging Face transformers (SmolLM3) and
computes what this repo computes: the same logits, the same greedy tokens, the same token ids.
Skipped where transformers is not installed (it is a test dependency only; .ci/run installs it)."""

import json

import pytest
import torch

from conftest import run
from model import GPT, GPTConfig
from corpus import builtin_corpus, get_tokenizer

transformers = pytest.importorskip('transformers')


def export(tmp_path, pattern, **kw):
    """A random model with this layer pattern, saved as a checkpoint and exported: (ours,
    transformers')."""
    cfg = GPTConfig(block_size=32, vocab_size=50304, n_layer=4, n_head=4, n_kv_head=2, n_embd=64,
                    sliding_window=8, layer_pattern=pattern, **kw)
    torch.manual_seed(0)
    ours = GPT(cfg).eval()
    torch.save(dict(model=ours.state_dict(), model_args=vars(cfg), tokenizer='gpt2',
                    config=dict(dataset='shakespeare')), tmp_path / 'ckpt.pt')
    run('export_hf.py', f'--out_dir={tmp_path}')
    return ours, transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'hf').eval()


def prompt(T=100, seed=0):
    """Longer than the window (8) and than block_size (32)."""
    return torch.randint(0, 50257, (2, T), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def largest_difference(ours, hf, idx):
    return (ours(idx)[0] - hf(idx).logits).abs().max().item()


@pytest.mark.parametrize('pattern', ['SSSN', 'RRRN', 'R', 'N'])
def test_exported_model_gives_our_logits_and_greedy_tokens(pattern, tmp_path):
    ours, hf = export(tmp_path, pattern)  # GQA: 4 query heads, 2 k/v heads
    assert largest_difference(ours, hf, prompt()) <= 1e-4
    idx = prompt(40)[:1]
    with torch.no_grad():
        theirs = hf.generate(idx, max_new_tokens=40, do_sample=False, eos_token_id=None,
                             pad_token_id=50256)
    # 80 tokens: past the window and block_size
    assert torch.equal(ours.generate(idx, 40, temperature=0), theirs)


def test_export_then_load_gives_back_the_same_weights(tmp_path):
    """The round trip: export_hf.py writes SmolLM3, GPT.from_pretrained (hub.py) reads it back bit
    for bit."""
    ours, _ = export(tmp_path, 'SSSN')
    back = GPT.from_pretrained(str(tmp_path / 'hf'))
    assert back.config.layer_kinds() == ours.config.layer_kinds() and back.config.n_kv_head == 2
    mine, theirs = ours.state_dict(), back.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_the_comparison_catches_an_off_by_one_window_and_a_wrong_rope_layout(tmp_path):
    """The two ways such ports usually go wrong, done on purpose: each moves the logits far beyond
    1e-4."""
    ours, hf = export(tmp_path, 'SSSN')
    idx = prompt()
    config = json.load(open(tmp_path / 'hf' / 'config.json'))
    for W in (config['sliding_window'] - 1, config['sliding_window'] + 1):
        json.dump(dict(config, sliding_window=W), open(tmp_path / 'hf' / 'config.json', 'w'))
        wrong = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'hf').eval()
        assert largest_difference(ours, wrong, idx) > 1e-3
    hd = 64 // 4
    # pairs (2i, 2i+1) instead of (i, i+hd/2)
    interleaved = torch.cat([torch.arange(0, hd, 2), torch.arange(1, hd, 2)])
    with torch.no_grad():
        for layer in hf.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                w = proj.weight.view(-1, hd, proj.weight.size(1))
                proj.weight.copy_(w[:, interleaved].reshape(proj.weight.shape))
    assert largest_difference(ours, hf, idx) > 1e-3


def test_exported_tokenizer_gives_our_ids(tmp_path):
    export(tmp_path, 'SSSN')
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / 'hf')
    text = (builtin_corpus()[3][1][:60000] + "\n\n  \t  12345678901 3.14159 1,000,000   \n\n\n"
            + "naïve café Ünïcödé 日本語 😀 — “quotes” ‘x’ don't I'll "
              "we've" + ' ' * 7 + '<|endoftext|>' + "after  \n")
    ours = get_tokenizer().encode(text, allowed_special='all')
    assert tok(text)['input_ids'] == ours
    assert ours.count(50256) == 1 and tok.decode(ours, skip_special_tokens=False) == text


def test_a_trained_checkpoint_exports_and_continues_as_sample_py_does(trained, tmp_path):
    run('export_hf.py', f'--out_dir={trained[0]}', f'--hf_dir={tmp_path}/hf')
    shown = run('sample.py', f'--out_dir={trained[0]}', '--start=ROMEO:', '--temperature=0',
                '--max_new_tokens=30').stdout
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / 'hf')
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'hf')
    ids = tok('ROMEO:', return_tensors='pt').input_ids
    with torch.no_grad():
        out = hf.generate(ids, max_new_tokens=30, do_sample=False, eos_token_id=None,
                          pad_token_id=50256)
    assert shown == tok.decode(out[0, ids.size(1):], skip_special_tokens=False) + '\n'


@pytest.mark.parametrize('case', ['missing', 'qk_norm', 'nope_temperature', 'cohere', 'not_empty'])
def test_export_bad_input_is_one_line(case, tmp_path):
    if case in ('qk_norm', 'nope_temperature', 'cohere'):
        cfg = GPTConfig(block_size=32, vocab_size=50304, n_layer=2, n_head=2, n_embd=16,
                        layer_pattern='SN', **{'qk_norm': dict(qk_norm=True),
                           'nope_temperature': dict(nope_temperature=0.1),
                           'cohere': dict(norm='layer', parallel_block=True)}[case])
        torch.save(dict(model=GPT(cfg).state_dict(), model_args=vars(cfg), tokenizer='gpt2'),
                   tmp_path / 'ckpt.pt')
    if case == 'not_empty':
        export(tmp_path, 'SN')  # tmp_path/hf now exists and holds files
    p = run('export_hf.py', f'--out_dir={tmp_path}', ok=False)
    assert p.returncode == 2 and 'Traceback' not in p.stderr and p.stderr.count('\n') == 1, p.stderr
    assert {'missing': 'no checkpoint', 'qk_norm': 'qk_norm=True',
            'nope_temperature': 'nope_temperature=0.1',
            'cohere': "norm='layer', parallel_block=True", 'not_empty': '--force'}[case] in p.stderr
    assert not (tmp_path / 'hf').exists() or case == 'not_empty'  # nothing written
