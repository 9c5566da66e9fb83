# A first look: the RNoPE-SWA hybrid at toy size, about 3 minutes on a 2-core CPU.
#   python train.py config/hybrid_tiny.py
#   python sample.py --out_dir=out-hybrid-tiny --start="ROMEO:"
out_dir = 'out-hybrid-tiny'
layer_pattern = 'SSSN'
n_layer = 4
n_head = 4
n_kv_head = 2
n_embd = 128
block_size = 512
sliding_window = 64
batch_size = 4
max_iters = 80
eval_interval = 40
log_interval = 5
warmup_iters = 5
learning_rate = 3e-3
min_lr = 3e-4
retrieval_rate = 0.1
