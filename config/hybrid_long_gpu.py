# RNoPE-SWA at GPT-2-small scale (about 114M parameters, 8k context) for one or more GPUs:
#   python train.py config/hybrid_long_gpu.py                                   # one GPU
#   torchrun --standalone --nproc_per_node=8 train.py config/hybrid_long_gpu.py  # eight
# The same design as config/hybrid_long.py: 'SSSN' layers, RoPE theta 10k, windows of 1024 (an
# eighth of the context); GQA here. Text only: the CPU recipe's retrieval sequences are untested at
# this scale (add them as a stage's last two numbers, e.g. stages=((0, 8192, 4, 1024, 8),)). Its
# throughput has not been measured yet. The built-in Shakespeare corpus (1.4M tokens) is far too
# small at this scale: prepare your own text first (python prepare_data.py --input=PATH
# --name=mydata) and set --dataset=mydata.
out_dir = 'out-hybrid-long-gpu'
dataset = 'shakespeare'
layer_pattern = 'SSSN'
n_layer = 12
n_head = 12
n_kv_head = 4
n_embd = 768
block_size = 8192
sliding_window = 1024
rope_theta = 10000.0
qk_norm = False
dropout = 0.0
# 4 sequences x 16 micro-steps x 8192 tokens = 524,288 tokens per step (over all GPUs together)
batch_size = 4
gradient_accumulation_steps = 16
max_iters = 5000
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 200
weight_decay = 0.1
eval_interval = 250
eval_iters = 20
log_interval = 10
compile = True
