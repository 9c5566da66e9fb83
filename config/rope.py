# The RoPE baseline: every layer RoPE with full causal attention, as in Llama-style models;
# config/hybrid_long.py otherwise, for a like-for-like comparison. The paper finds RoPE attention
# strongly local (a recency bias) and its retrieval degrading beyond the training length; it is
# the model RNoPE-SWA is measured against.
include('hybrid_long.py')
out_dir = 'out-rope'
layer_pattern = 'R'
