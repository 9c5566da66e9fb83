# The RoPE baseline: every layer RoPE with full causal attention, as in Llama-style models.
# Same size as config/hybrid_long.py, for a like-for-like comparison. The paper finds RoPE
# attention strongly local (a recency bias) and its retrieval degrading beyond the training
# length; it is the model RNoPE-SWA is measured against.
out_dir = 'out-baseline-rope'
layer_pattern = 'R'
n_layer = 8
n_head = 8
n_kv_head = 2
n_embd = 256
block_size = 2048
rope_theta = 10000.0
qk_norm = False
dropout = 0.0
