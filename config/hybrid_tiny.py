# A first look: the RNoPE-SWA hybrid at toy size, about 3 minutes on a 2-core CPU.
#   python train.py config/hybrid_tiny.py
#   python sample.py --out_dir=out-hybrid-tiny --start="ROMEO:"
# config/hybrid_long.py's width and 'SSSN' layers, smaller: half the layers, 4 heads sharing 2 k/v
# heads, a window of 64, 256-token pretraining, then 512 tokens.
# Text only: retrieval from text needs the main job's retrieval sequences and its longer budget.
out_dir = 'out-hybrid-tiny'
layer_pattern = 'SSSN'
n_layer = 4
n_head = 4
n_kv_head = 2
n_embd = 128
block_size = 512
sliding_window = 64
stages = ((0, 256, 4),
          (320, 512, 2))
max_iters = 350
eval_interval = 320
eval_iters = 4
log_interval = 10
warmup_iters = 20
learning_rate = 6e-3
min_lr = 6e-4
