# Multi-query associative recall (MQAR): the retrieval track of the ablation, trained in minutes on
# a CPU.
#   python train.py config/recall.py --layer_pattern=SSSN --out_dir=out-recall/rnope_swa
#   python eval_long.py --out_dir=out-recall/rnope_swa      # accuracy at 1x to 16x its length
# The task is generated on the fly (corpus.recall_batch): a haystack of random filler holding 8
# key-value pairs, then every key asked once. A 256-token vocabulary keeps the output layer cheap,
# so a step costs what the transformer costs. reproduce.py --track=recall trains every variant with
# this.
out_dir = 'out-recall/rnope_swa'
dataset = 'recall'
recall_pairs = 8
layer_pattern = 'SSSN'       # reproduce.py sets each variant's
n_layer = 4
n_head = 4
n_kv_head = 4
n_embd = 64
block_size = 128             # the training length; the evaluation runs at 1x to 16x of it
sliding_window = 32          # a quarter of the training length, as in the text track
# A curriculum, chosen by pilot runs: the recall circuit (a previous-token head, then a head that
# matches the asked key against it) forms within a few hundred steps on the shortest sequences,
# whose haystacks are nothing but pairs, and within 15,000 steps not at all at 64 or 128 tokens (the
# time to form grows about with the square of the length). Each stage keeps about 2,000 tokens per
# step.
stages = ((0, 10, 204),      # from iteration 0: 10 tokens, 2 pairs, 204 sequences per step
          (500, 34, 60),     # from 500: 34 tokens, 8 pairs
          (1000, 128, 16))   # from 1,000: the training length, 128 tokens, 8 pairs
max_iters = 2500
learning_rate = 3e-3
min_lr = 3e-4
warmup_iters = 20
eval_interval = 250
eval_iters = 8
log_interval = 50
