# RNoPE-SWA, the paper's final design, is the main job itself: config/hybrid_long.py as it is.
# This file names it as one variant of the ablation (reproduce.py).
include('hybrid_long.py')
out_dir = 'out-rnope-swa'
