# RoPE + QK-Norm: the RoPE baseline with RMSNorm on every q and k head before RoPE;
# config/hybrid_long.py otherwise. QK-Norm stabilises training (bounded logits), but the paper
# finds it flattens attention (higher entropy, less mass on the needle) and hurts long-context
# retrieval, so the final RNoPE-SWA design drops it.
include('hybrid_long.py')
out_dir = 'out-rope-qknorm'
layer_pattern = 'R'
qk_norm = True
