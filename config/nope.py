# NoPE: no positional encoding in any layer; causal masking alone leaks position information.
# Same size as config/hybrid_long.py. The paper finds NoPE layers put the most attention mass
# on the needle (retrieval by content) and hold the attention sink, but a NoPE-only model
# trails RoPE on overall quality and its attention spreads thin at long lengths.
out_dir = 'out-nope'
layer_pattern = 'N'
n_layer = 8
n_head = 8
n_kv_head = 2
n_embd = 256
block_size = 2048
qk_norm = False
dropout = 0.0
