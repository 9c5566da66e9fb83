# RNoPE with a 100x larger RoPE theta (1M) in its RoPE layers; config/hybrid_long.py otherwise.
# Long-context models usually raise theta; the paper finds the opposite for the hybrid: a larger
# theta weakens its RoPE layers' local focus and hurts retrieval.
include('hybrid_long.py')
out_dir = 'out-rnope-theta1m'
layer_pattern = 'RRRN'
rope_theta = 1e6
