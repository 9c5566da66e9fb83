# RNoPE: three RoPE layers with full attention, then one NoPE layer ('RRRN'), without windows;
# config/hybrid_long.py otherwise. The paper's first hybrid: interleaving NoPE layers (retrieval
# by content) with RoPE layers (local order) beats both pure models on long-context retrieval;
# RNoPE-SWA then limits the RoPE layers to a window at little or no loss.
include('hybrid_long.py')
out_dir = 'out-rnope'
layer_pattern = 'RRRN'
