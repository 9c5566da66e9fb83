"""
Sample from a trained model, streaming the text as it is generated.

    python sample.py --out_dir=out-hybrid-long --start="ROMEO:"
    python sample.py --out_dir=out-hybrid-long --start=FILE:doc.txt --max_new_tokens=300

The prompt may be far longer than the training context: it is prefilled through the KV cache
in chunks (bounded memory), and the model sees all of it. Timings and the KV-cache size go
to stderr, the text to stdout.
"""

import codecs
import os
import sys
import time

import torch

from common import load_model, resolve_device
from configurator import configure, fail
from corpus import get_tokenizer

out_dir = 'out-hybrid-long'     # the checkpoint: out_dir/ckpt.pt...
init_from = ''            # ...or a transformers one (SmolLM3, Cohere2): a hub name or a folder
start = '\n'              # the prompt, or FILE:path to read it from a file
num_samples: '[1, inf)' = 1
max_new_tokens: '[1, inf)' = 200
temperature: '[0, inf)' = 0.8             # 0 = greedy
top_k: '[0, inf)' = 200                   # 0 = no limit
seed: '[0, inf)' = 1337
device = 'auto'           # 'auto', 'cpu', 'cuda', 'mps'
dtype = 'auto'            # 'auto': bfloat16 on a GPU that has it, else float32
compile = False           # compile the one-token decoding step once (GPT.decode_step): on a CPU 2x
                          # faster, after ~13 s
prefill_chunk: '[1, inf)' = 1024          # prompt tokens per prefill step: bounds activation memory
configure(globals())

device, ptdtype = resolve_device(device, dtype)
torch.manual_seed(seed)

if max_new_tokens < 1:
    fail(f"max_new_tokens={max_new_tokens} must be at least 1")
if start.startswith('FILE:'):
    path = start[len('FILE:'):]
    if not os.path.isfile(path):
        fail(f"prompt file {path!r} not found")
    with open(path, encoding='utf-8', errors='replace') as f:
        start = f.read()
if not start:
    fail("the prompt is empty: give --start=TEXT or --start=FILE:path to a non-empty file")
model, checkpoint = load_model(out_dir, device, ptdtype, init_from)
block_size = checkpoint['model_args']['block_size']
enc = get_tokenizer(checkpoint['tokenizer'])

prompt = enc.encode(start, allowed_special={'<|endoftext|>'})
print(f"prompt: {len(prompt):,} tokens", file=sys.stderr)
if len(prompt) > block_size:
    print(f"warning: the prompt is longer than the training context ({block_size:,} tokens); the "
          f"model sees all of it, but was never trained at this length", file=sys.stderr)

x = torch.tensor(prompt, dtype=torch.long, device=device)[None, :]
for s in range(num_samples):
    cache = model.new_cache(1, len(prompt) + max_new_tokens, ptdtype, device)
    text = codecs.getincrementaldecoder('utf-8')(errors='replace')  # a character may span several
                                                                    # tokens
    t0 = time.perf_counter()
    for i, token in enumerate(model.stream(x, max_new_tokens, temperature, top_k or None,
                                           prefill_chunk, cache, compile)):
        if i == 0:
            t_first = time.perf_counter()  # prefill (and the first token) done
        if i == 1:
            t_second = time.perf_counter()  # the first decoding step done (with --compile, the
                                            # compile)
        sys.stdout.write(text.decode(enc.decode_single_token_bytes(token.item())))
        sys.stdout.flush()
    t_end = time.perf_counter()
    print('\n' + '-' * 40 if s < num_samples - 1 else '', flush=True)
    print(f"prefill {len(prompt):,} tokens in {t_first - t0:.2f}s "
          f"({len(prompt) / (t_first - t0):,.0f} tok/s); "
          f"decode {max_new_tokens - 1} tokens in {t_end - t_first:.2f}s "
          f"({(max_new_tokens - 1) / max(t_end - t_first, 1e-9):,.1f} tok/s"
          + (f"; after the first step of {t_second - t_first:.2f}s, "
             f"{(max_new_tokens - 2) / max(t_end - t_second, 1e-9):,.1f} "
             f"tok/s" if max_new_tokens > 2 else '') + "); "
          f"KV cache {sum(c.nbytes() for c in cache) / 2**20:,.1f} MiB", file=sys.stderr)
