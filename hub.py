"""
Hugging Face transformers checkpoints in and out of model.py: the two public model families that are
this repository's architecture.

  SmolLM3 (model type smollm3): a Llama-style decoder whose layers are each RoPE or NoPE
      (no_rope_layers), full or sliding-window (layer_types): exactly R, S and N. SmolLM3-3B is
      RRRN with every 4th layer NoPE. export_hf.py writes this layout.
  Cohere2 (cohere2): Command R7B and Command A, the models the paper describes. Three
      sliding-window RoPE layers, then one full-attention NoPE layer: SSSN. It also differs from
      model.py's default in four ways, each a GPTConfig setting or a load-time conversion:
      LayerNorm without bias (norm='layer'), the parallel block (parallel_block), a scale on the
      logits (logit_scale), and RoPE on interleaved channel pairs (converted below).

    model = GPT.from_pretrained('HuggingFaceTB/SmolLM3-3B', dtype=torch.bfloat16)
    model = GPT.from_pretrained('path/to/a/folder')    # config.json and *.safetensors

Nothing is loaded approximately: a setting the mapping cannot express exactly (RoPE scaling such as
YaRN, a window on a NoPE layer, untied embeddings...) raises ValueError, one line naming it.
Loading needs the safetensors package, a hub name also huggingface_hub (both come with
transformers); the tokenizer (corpus.get_tokenizer) needs tokenizers.
"""

import dataclasses
import json
import os
from glob import glob

import torch

from model import GPT, GPTConfig

SUPPORTED = "smollm3 (SmolLM3) and cohere2 (Command R7B, Command A)"

# model.py's names for one block's weights -> transformers' (the same in both families; Cohere2 has
# no post_attention_layernorm: its parallel block has one norm). export_hf.py writes these too.
BLOCK_NAMES = {'attn.q_proj': 'self_attn.q_proj', 'attn.k_proj': 'self_attn.k_proj',
               'attn.v_proj': 'self_attn.v_proj', 'attn.c_proj': 'self_attn.o_proj',
               'mlp.gate': 'mlp.gate_proj', 'mlp.up': 'mlp.up_proj', 'mlp.c_proj': 'mlp.down_proj',
               'ln_1': 'input_layernorm', 'ln_2': 'post_attention_layernorm'}


def local_folder(name_or_path):
    """A folder holding the checkpoint: name_or_path itself, or a hub name's downloaded snapshot."""
    if os.path.isdir(name_or_path):
        return name_or_path
    if os.path.exists(name_or_path) or name_or_path.startswith(('.', '/')):
        raise ValueError(f"{name_or_path} is not a folder: give a folder with config.json and "
                         f"*.safetensors, or a hub name such as HuggingFaceTB/SmolLM3-3B")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ValueError(f"{name_or_path} is not a folder here, and downloading it needs "
                         f"huggingface_hub: pip install transformers") from None
    try:
        return snapshot_download(name_or_path, allow_patterns=['*.json', '*.safetensors'])
    except Exception as e:  # no network, a gated model without a token, a wrong name
        why = (str(e) or type(e).__name__).splitlines()[0]
        raise ValueError(f"{name_or_path} could not be downloaded ({why}): download it with "
                         f"`hf download {name_or_path}` and give its folder") from None


def gpt_config(hf):
    """GPTConfig of the model a transformers config.json (a dict) describes, or ValueError naming
    what model.py cannot compute exactly."""
    kind = hf.get('model_type')
    if kind not in ('smollm3', 'cohere2'):
        raise ValueError(f"model type {kind!r} is not supported: this model.py loads {SUPPORTED}")
    refuse = lambda what: ValueError(f"this {kind} checkpoint has {what}, which model.py cannot "
                                     f"compute exactly: nothing was loaded")
    n_layer, n_head = hf['num_hidden_layers'], hf['num_attention_heads']
    C = hf['hidden_size']
    # RoPE: the plain kind only. Newer configs say rope_parameters, older ones rope_theta.
    rope = hf.get('rope_parameters') or hf.get('rope_scaling') or {}
    if rope.get('rope_type', rope.get('type', 'default')) != 'default':
        raise refuse(f"RoPE scaling {rope.get('rope_type', rope.get('type'))!r}")
    theta = rope.get('rope_theta', hf.get('rope_theta', 10000.0))
    if hf.get('head_dim') not in (None, C // n_head):
        raise refuse(f"head_dim {hf['head_dim']} != hidden_size / num_attention_heads")
    if not hf.get('tie_word_embeddings', True):
        raise refuse("an output layer untied from the embedding")
    if hf.get('hidden_act', 'silu') != 'silu':
        raise refuse(f"the activation {hf['hidden_act']!r} (SwiGLU uses silu)")
    bias = hf.get('attention_bias', False)
    if bias != (hf.get('mlp_bias', False) if kind == 'smollm3' else False):  # Cohere2's MLP: none
        raise refuse("biases in some projections and not others")
    # Each layer's kind, as transformers decides it (their configs' defaults when a key is absent):
    # SmolLM3 takes RoPE from no_rope_layers and the window from layer_types; in Cohere2 the
    # sliding-window layers use RoPE and the full-attention ones none.
    if kind == 'smollm3':
        every = hf.get('no_rope_layer_interval', 4)
        rope_layers = hf.get('no_rope_layers') or [int((i + 1) % every > 0) for i in range(n_layer)]
        types = hf.get('layer_types') or ['full_attention'] * n_layer
        window = hf.get('sliding_window')
        if 'sliding_attention' in types and not (hf.get('use_sliding_window') and window):
            raise refuse("sliding_attention layers with use_sliding_window off")
    else:
        every = hf.get('sliding_window_pattern', 4)
        types = hf.get('layer_types') or [('sliding' if (i + 1) % every else 'full') + '_attention'
                                          for i in range(n_layer)]
        rope_layers = [int(t == 'sliding_attention') for t in types]
        window = hf.get('sliding_window', 4096)
    windowed = [t == 'sliding_attention' and window is not None for t in types]
    if any(w and not r for r, w in zip(rope_layers, windowed)):
        raise refuse("a sliding window on a NoPE layer")
    kinds = ''.join('S' if w else 'R' if r else 'N' for r, w in zip(rope_layers, windowed))
    period = next(p for p in range(1, n_layer + 1) if kinds == (kinds[:p] * n_layer)[:n_layer])
    cohere = kind == 'cohere2'
    return GPTConfig(
        block_size=hf.get('max_position_embeddings', 8192), vocab_size=hf['vocab_size'],
        n_layer=n_layer, n_head=n_head, n_kv_head=hf.get('num_key_value_heads') or n_head,
        n_embd=C, bias=bias, layer_pattern=kinds[:period], sliding_window=window or 4096,
        rope_theta=float(theta), mlp_hidden=hf['intermediate_size'],
        norm='layer' if cohere else 'rms',
        norm_eps=hf.get('layer_norm_eps', 1e-5) if cohere else hf.get('rms_norm_eps', 1e-6),
        parallel_block=cohere, logit_scale=hf.get('logit_scale', 0.0625) if cohere else 1.0)


def interleaved_to_half(w, n_heads):
    """Cohere rotates the channel pairs (0, 1), (2, 3)... of each head; model.apply_rope rotates
    (i, i + hd/2), at the same frequency for pair i. Reordering each head's rows of q_proj and
    k_proj to 0, 2, 4, ..., 1, 3, 5, ... turns one into the other; q.k, a sum over channels, does
    not change. w (n_heads * hd, C) -> the same rows, reordered within each head."""
    hd = w.size(0) // n_heads
    order = torch.cat([torch.arange(0, hd, 2), torch.arange(1, hd, 2)])
    return w.view(n_heads, hd, -1)[:, order].reshape(w.shape)


def load_pretrained(name_or_path, dtype=torch.float32, **settings):
    """GPT of a transformers checkpoint, in eval mode, in `dtype` (see the module docstring), with
    `settings` changing GPTConfig fields that the weights do not fix (block_size, dropout). The
    model is built on the meta device (no memory) and each weight read from the memory-mapped
    files, converted and put in place in turn: no second copy of the model is ever made."""
    folder = local_folder(name_or_path)
    path = os.path.join(folder, 'config.json')
    if not os.path.isfile(path):
        raise ValueError(f"{folder} has no config.json: it is not a transformers checkpoint")
    with open(path) as f:
        hf = json.load(f)
    cfg = dataclasses.replace(gpt_config(hf), **settings)
    files = sorted(glob(os.path.join(folder, '*.safetensors')))
    if not files:
        raise ValueError(f"{folder} has no *.safetensors weights (.bin pickles are not read: "
                         f"they can run code)")
    try:
        from safetensors import safe_open
    except ImportError:
        raise ValueError("loading a transformers checkpoint needs safetensors: pip install "
                         "safetensors") from None
    ours = {'model.embed_tokens.weight': 'transformer.wte.weight',
            'model.norm.weight': 'transformer.ln_f.weight'}
    for i in range(cfg.n_layer):
        for mine, theirs in BLOCK_NAMES.items():
            for p in ('weight', 'bias'):
                ours[f'model.layers.{i}.{theirs}.{p}'] = f'transformer.h.{i}.{mine}.{p}'
    with torch.device('meta'):
        model = GPT(cfg)
    want = {k: v.shape for k, v in model.state_dict().items() if k != 'lm_head.weight'}
    state, interleaved = {}, hf['model_type'] == 'cohere2'
    for file in files:
        with safe_open(file, framework='pt') as f:
            for name in f.keys():
                if name == 'lm_head.weight':  # tied: the embedding matrix again, if stored
                    continue
                if name not in ours or ours[name] not in want:
                    raise ValueError(f"{file} holds {name}, which this {hf['model_type']} mapping "
                                     f"does not expect: nothing was loaded")
                w = f.get_tensor(name).to(dtype)
                if interleaved and name.endswith(('q_proj.weight', 'k_proj.weight')):
                    w = interleaved_to_half(w, cfg.n_head if 'q_proj' in name else cfg.n_kv_head)
                state[ours[name]] = w
    missing = sorted(set(want) - set(state))
    wrong = [k for k in state if state[k].shape != want[k]]
    if missing or wrong:
        raise ValueError(f"{folder}: " + (f"missing {missing[0]}" if missing else
                         f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, not "
                         f"{tuple(want[wrong[0]])}") + ": nothing was loaded")
    state['lm_head.weight'] = state['transformer.wte.weight']
    model.load_state_dict(state, assign=True)
    model.transformer.wte.weight = model.lm_head.weight  # tie again: assign replaced both
    return model.eval()
