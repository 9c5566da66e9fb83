# RNoPE: three RoPE layers with full attention, then one NoPE layer ('RRRN'), without windows.
# Same size as config/hybrid_long.py. The paper's first hybrid: interleaving NoPE layers
# (retrieval by content) with RoPE layers (local order) beats both pure models on long-context
# retrieval; RNoPE-SWA then limits the RoPE layers to a window at little or no loss.
out_dir = 'out-rnope'
layer_pattern = 'RRRN'
n_layer = 8
n_head = 8
n_kv_head = 2
n_embd = 256
block_size = 2048
rope_theta = 10000.0
qk_norm = False
dropout = 0.0
