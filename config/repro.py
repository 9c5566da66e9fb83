# The shared recipe of reproduce.py: every variant of the paper's ablation trains with exactly
# these settings (same data, budget and seed); reproduce.py adds only the variant's layer_pattern,
# qk_norm or rope_theta. Sized for about 10 minutes per variant on a 2-core CPU:
# 1,000 iterations x 4 x 256 tokens = 1M tokens.
#   python train.py config/repro.py --layer_pattern=SSSN --out_dir=out-repro/rnope_swa
out_dir = 'out-repro/rnope_swa'
layer_pattern = 'SSSN'     # reproduce.py sets each variant's
n_layer = 4                # one 'SSSN' (or 'RRRN') group
n_head = 4
n_kv_head = 4
n_embd = 64                # small: the 50k-token output layer dominates the cost of every step anyway
block_size = 256           # the training length; eval_long.py tests 0.5x to 8x of it
sliding_window = 64        # a quarter of the training length
batch_size = 4
max_iters = 1000
eval_interval = 250
eval_iters = 4
log_interval = 50
warmup_iters = 20
learning_rate = 4e-3
min_lr = 4e-4
# Long-context augmentation on every sequence: real text with one passkey needle, or one to four
# magic-number needles with different keys, all asked for at the end (prepare_data.retrieval_sequence).
retrieval_rate = 1.0
retrieval_needles = 4
seed = 1337
