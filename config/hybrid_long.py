# RNoPE-SWA, the paper's recipe and this repo's main entry point:
#   python train.py config/hybrid_long.py
# Three RoPE layers with a sliding window (theta 10k), then one NoPE layer with full attention,
# repeated. The paper finds this hybrid matches a RoPE model on short-context tasks and beats it
# on long-context retrieval (RULER, needle-in-a-haystack), while three layers in four keep only a
# window-sized KV cache. Sized for a laptop CPU: about 17 minutes on 2 cores.
# config/hybrid_long_gpu.py is the GPU version.
out_dir = 'out-hybrid-long'
layer_pattern = 'SSSN'
n_layer = 8
n_head = 4
n_kv_head = 2          # grouped-query attention: 2 query heads per k/v head
n_embd = 128           # narrow: the 50k-token output layer is most of the work (results/hybrid_long_pilots.md)
block_size = 2048      # the final training context
sliding_window = 256   # the 'S' layers see the last 256 tokens: an eighth of the final context
rope_theta = 10000.0   # the paper keeps theta small in the hybrid's RoPE layers
qk_norm = False        # the paper drops QK-Norm: it flattens long-context attention
dropout = 0.0
dataset = 'shakespeare'
# Two stages, as the paper trains: pretrain short, then continue long. 1,600 steps of 4 x 256 tokens of
# plain text (1.6M tokens, a little over one pass of the corpus), then 100 steps of 2 x 2048 tokens in
# which a fifth of the sequences are synthetic retrieval examples (a passkey or magic number hidden in
# real text, asked for at the end; train.py mixes them into the last stage only).
stages = ((0, 256, 4),
          (1600, 2048, 2))
retrieval_rate = 0.2
gradient_accumulation_steps = 1
max_iters = 1700
learning_rate = 6e-3   # chosen by pilot runs of equal wall time (results/hybrid_long_pilots.md)
min_lr = 6e-4
warmup_iters = 40
eval_interval = 1600   # evaluate at the start, when the context grows, and at the end
eval_iters = 6
log_interval = 50
