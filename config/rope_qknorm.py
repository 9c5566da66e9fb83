# RoPE + QK-Norm: the RoPE baseline with RMSNorm on every q and k head before RoPE.
# Same size as config/hybrid_long.py. QK-Norm stabilises training (bounded logits), but the
# paper finds it flattens attention (higher entropy, less mass on the needle) and hurts
# long-context retrieval, so the final RNoPE-SWA design drops it.
out_dir = 'out-rope-qknorm'
layer_pattern = 'R'
n_layer = 8
n_head = 8
n_kv_head = 2
n_embd = 256
block_size = 2048
rope_theta = 10000.0
qk_norm = True
dropout = 0.0
