"""
Export a train.py checkpoint to a Hugging Face transformers folder, in the layout of SmolLM3 (a
Llama-style decoder whose layers can each be RoPE or NoPE, full or sliding-window: exactly this
repo's R, S and N):

    python export_hf.py --out_dir=out-hybrid-long                  # writes out-hybrid-long/hf/
    python export_hf.py --out_dir=out-hybrid-tiny --hf_dir=hf-tiny --force

The folder holds config.json, generation_config.json, model.safetensors and the tokenizer files, and
loads offline with transformers (pip install transformers; not needed to export):

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained('out-hybrid-long/hf')
    tok = AutoTokenizer.from_pretrained('out-hybrid-long/hf')

Both compute what this repo computes (test_export.py compares logits, greedy generations and token
ids). Where the mapping would not be exact, nothing is written: QK-Norm, the NoPE temperature and
Cohere's LayerNorm, parallel block and logit scale have no SmolLM3 counterpart, and the tokenizer
must be the shipped GPT-2 one. hub.py maps the other way: GPT.from_pretrained loads what this
writes.
"""

import json
import os
import shutil
import struct

from common import load_model
from configurator import configure, fail
from corpus import ASSETS, EOT, GPT2_PATTERN, GPT2_SHA256, bytes_to_unicode
from hub import BLOCK_NAMES

# -----------------------------------------------------------------------------
# The model: config.json and the weights under their transformers names


def smollm3_config(cfg, mlp_hidden):
    """config.json of a SmolLM3ForCausalLM that computes what GPT(cfg) computes."""
    kinds = cfg.layer_kinds()
    return {
        'architectures': ['SmolLM3ForCausalLM'],
        'model_type': 'smollm3',
        'vocab_size': cfg.vocab_size,
        'hidden_size': cfg.n_embd,
        'intermediate_size': mlp_hidden,
        'num_hidden_layers': cfg.n_layer,
        'num_attention_heads': cfg.n_head,
        'num_key_value_heads': cfg.n_kv_head,
        'hidden_act': 'silu',                          # SwiGLU: down(silu(gate(x)) * up(x))
        'rms_norm_eps': cfg.norm_eps,                  # as RMSNorm in model.py
        # the rotate-half layout, as apply_rope
        'rope_parameters': {'rope_type': 'default', 'rope_theta': cfg.rope_theta},
        'no_rope_layers': [int(k in 'RS') for k in kinds],  # 1 = RoPE, 0 = NoPE
        'use_sliding_window': 'S' in kinds,
        # a query sees the last W keys, itself included
        'sliding_window': cfg.sliding_window if 'S' in kinds else None,
        'layer_types': ['sliding_attention' if k == 'S' else 'full_attention' for k in kinds],
        'max_position_embeddings': max(cfg.block_size, 131072),  # not a limit here either: RoPE is
                                                                 # computed for any position
        'attention_bias': cfg.bias,
        'mlp_bias': cfg.bias,
        'attention_dropout': 0.0,
        'tie_word_embeddings': True,                   # lm_head is the embedding matrix, as in
                                                       # model.py
        'bos_token_id': 50256,
        'eos_token_id': 50256,
        'pad_token_id': None,
        'dtype': 'float32',
    }


def hf_state_dict(model):
    """This repo's weights under SmolLM3's names (the tied lm_head is not stored: it is
    embed_tokens)."""
    out = {'model.embed_tokens.weight': model.transformer.wte.weight,
           'model.norm.weight': model.transformer.ln_f.weight}
    for i, block in enumerate(model.transformer.h):
        for ours, theirs in BLOCK_NAMES.items():
            module = block.get_submodule(ours)
            for p in ('weight', 'bias'):
                if getattr(module, p, None) is not None:
                    out[f'model.layers.{i}.{theirs}.{p}'] = getattr(module, p)
    return {k: v.detach().float().cpu().contiguous() for k, v in out.items()}


def write_safetensors(tensors, path):
    """The safetensors format: an 8-byte little-endian header length, a JSON header giving each
    tensor's dtype, shape and byte range, then the raw bytes. Written by hand so that exporting
    needs no extra package."""
    header, offset = {'__metadata__': {'format': 'pt'}}, 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        header[name] = {'dtype': 'F32', 'shape': list(t.shape),
                        'data_offsets': [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(',', ':')).encode()
    blob += b' ' * (-len(blob) % 8)  # pad the header so that the data starts 8-byte aligned
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(blob)) + blob)
        for t in tensors.values():
            f.write(t.numpy().tobytes())


# -----------------------------------------------------------------------------
# The tokenizer: GPT-2's byte-level BPE as a tokenizer.json, from the ranks file that ships in
# assets/

def tokenizer_json(ranks):
    """tokenizer.json of GPT-2's tokenizer. tiktoken merges the adjacent pair whose concatenation
    has the lowest rank; a BPE merges list reproduces that when every way of splitting a token into
    two tokens is a merge, listed in the order of the token's rank."""
    chars = bytes_to_unicode()
    text = lambda b: ''.join(chars[x] for x in b)
    vocab = {text(token): rank for token, rank in ranks.items()}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        splits = [(token[:i], token[i:]) for i in range(1, len(token))
                  if token[:i] in ranks and token[i:] in ranks]
        for a, b in sorted(splits, key=lambda ab: (ranks[ab[0]], ranks[ab[1]])):
            merges.append([text(a), text(b)])
    byte_level = {'type': 'ByteLevel', 'add_prefix_space': False, 'trim_offsets': True,
                  'use_regex': False}
    return {
        'version': '1.0', 'truncation': None, 'padding': None,
        'added_tokens': [{'id': 50256, 'content': EOT, 'single_word': False, 'lstrip': False,
                          'rstrip': False, 'normalized': False, 'special': True}],
        'normalizer': None,
        # GPT-2's split pattern (the one get_tokenizer gives tiktoken), then the bytes as characters
        'pre_tokenizer': {'type': 'Sequence', 'pretokenizers': [
            {'type': 'Split', 'pattern': {'Regex': GPT2_PATTERN}, 'behavior': 'Isolated',
             'invert': False},
            byte_level]},
        'post_processor': None,
        'decoder': byte_level,
        'model': {'type': 'BPE', 'dropout': None, 'unk_token': None,
                  'continuing_subword_prefix': None, 'end_of_word_suffix': None, 'fuse_unk': False,
                  'byte_fallback': False, 'ignore_merges': True,
                  'vocab': vocab, 'merges': merges},
    }


def write_json(obj, path):
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)


# -----------------------------------------------------------------------------

if __name__ == '__main__':
    out_dir = 'out-hybrid-long'   # the checkpoint to export: out_dir/ckpt.pt
    hf_dir = ''                   # where to write; '' = out_dir/hf
    force = False                 # replace hf_dir if it exists and is not empty
    configure(globals())
    hf_dir = hf_dir or os.path.join(out_dir, 'hf')

    ckpt_path = os.path.join(out_dir, 'ckpt.pt')
    model, checkpoint = load_model(out_dir)
    cfg = model.config
    if cfg.qk_norm:
        fail(f"{ckpt_path} was trained with qk_norm=True, which SmolLM3 cannot express: nothing "
             f"was written")
    if cfg.nope_temperature:
        fail(f"{ckpt_path} was trained with nope_temperature={cfg.nope_temperature}, which SmolLM3 "
             f"cannot express: nothing was written")
    mine = dict(norm='rms', parallel_block=False, logit_scale=1.0)  # Cohere's design changes these
    cohere = [f"{k}={getattr(cfg, k)!r}" for k, v in mine.items() if getattr(cfg, k) != v]
    if cohere:
        fail(f"{ckpt_path} has {', '.join(cohere)} (Cohere's design), which SmolLM3 cannot "
             f"express: nothing was written")
    if checkpoint['tokenizer'] != 'gpt2':
        fail(f"{ckpt_path} uses the tokenizer {checkpoint['tokenizer']!r}; only the shipped GPT-2 "
             f"tokenizer exports (a recall model's 256 ids are not text)")
    if os.path.exists(hf_dir) and not os.path.isdir(hf_dir):
        fail(f"--hf_dir={hf_dir} is a file: give a directory to write the model to")
    if os.path.isdir(hf_dir) and os.listdir(hf_dir) and not force:
        fail(f"{hf_dir} exists and is not empty: add --force to replace it, or set --hf_dir")

    tmp = hf_dir.rstrip('/') + '.tmp'  # write everything under a temporary name, then rename: never
                                       # half a folder
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    write_json(smollm3_config(cfg, model.transformer.h[0].mlp.up.out_features),
               os.path.join(tmp, 'config.json'))
    write_json({'bos_token_id': 50256, 'eos_token_id': 50256, 'do_sample': False},
               os.path.join(tmp, 'generation_config.json'))
    write_safetensors(hf_state_dict(model), os.path.join(tmp, 'model.safetensors'))
    from tiktoken.load import load_tiktoken_bpe
    ranks = load_tiktoken_bpe(os.path.join(ASSETS, 'gpt2.tiktoken'), expected_hash=GPT2_SHA256)
    write_json(tokenizer_json(ranks), os.path.join(tmp, 'tokenizer.json'))
    write_json({'tokenizer_class': 'PreTrainedTokenizerFast', 'bos_token': EOT, 'eos_token': EOT,
                'unk_token': None, 'add_bos_token': False, 'add_eos_token': False,
                'clean_up_tokenization_spaces': False,
                'model_max_length': 1_000_000}, os.path.join(tmp, 'tokenizer_config.json'))
    shutil.rmtree(hf_dir, ignore_errors=True)
    os.replace(tmp, hf_dir)
    n_params = sum(t.numel() for t in hf_state_dict(model).values())
    print(f"wrote {hf_dir}: {cfg.layer_kinds()} ({n_params / 1e6:.2f}M "
          f"parameters) as SmolLM3ForCausalLM, and GPT-2's tokenizer")
