# RNoPE-SWA at about 1B parameters (989M), 8k context, for eight GPUs with FSDP2: each GPU holds an
# eighth of the weights, gradients and AdamW's state (16 bytes a parameter in all, with DDP on every
# GPU), and recomputes each Block's activations in the backward pass.
# First a corpus: FineWeb-Edu's 10B-token sample as parquet shards, prepared once (README, "Training
# on GPUs"):
#   python prepare_data.py --input='fineweb-edu/sample/10BT/*.parquet' --name=fineweb-edu \
#       --num_proc=32
# One node of eight GPUs:
#   torchrun --standalone --nproc_per_node=8 train.py config/hybrid_1b_gpu.py
# Two nodes of eight (node 0's address, here 10.0.0.1, reachable from node 1; the same command on
# each, but for --node_rank):
#   torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=10.0.0.1 \
#       --master_port=29500 train.py config/hybrid_1b_gpu.py
#   torchrun --nnodes=2 --node_rank=1 --nproc_per_node=8 --master_addr=10.0.0.1 \
#       --master_port=29500 train.py config/hybrid_1b_gpu.py
# The design is config/hybrid_long.py's: 'SSSN' layers, RoPE theta 10k, windows of an eighth of the
# context; GQA here, to keep the KV cache small at this size. Text only: the CPU recipe's retrieval
# sequences are untested at this scale. No GPU has run this config yet, so no throughput or memory
# figure is given.
out_dir = 'out-hybrid-1b-gpu'
dataset = 'fineweb-edu'
layer_pattern = 'SSSN'   # 20 layers: 15 'S', 5 'N'
n_layer = 20
n_head = 16
n_kv_head = 4
n_embd = 2048
block_size = 8192
sliding_window = 1024
rope_theta = 10000.0
qk_norm = False
dropout = 0.0
fsdp = True
activation_checkpointing = True
# 2 sequences x 32 micro-steps x 8192 tokens = 524,288 tokens per step over all GPUs (4 micro-steps
# each on 8 GPUs, 2 on 16); 19,000 steps are about one pass over the 10B-token sample
batch_size = 2
gradient_accumulation_steps = 32
max_iters = 19000
learning_rate = 3e-4
min_lr = 3e-5
warmup_iters = 1000
weight_decay = 0.1
eval_interval = 500
eval_iters = 20
log_interval = 10
compile = True
