# The shared recipe of reproduce.py's text track: every variant of the paper's ablation trains with
# exactly these settings (same data, budget and seed); reproduce.py adds only the variant's
# layer_pattern, qk_norm, rope_theta or nope_temperature. It is the main job's recipe
# (config/hybrid_long.py: the model, the window of 16, retrieval sequences beside the text from the
# first step, half of them in one wording from the second stage) shrunk to about 12 minutes of a
# 2-core machine per variant: shorter stages and a final length of 512, so that eval_long.py's 8x
# is 4,096 tokens.
#   python train.py config/repro.py --layer_pattern=SSSN --out_dir=out-repro/rnope_swa-s0
include('hybrid_long.py')
out_dir = 'out-repro/rnope_swa-s0'
# the main job's stages at 750 steps: the second stage, in which half the several-needle sequences
# share one wording (16 a step), starts at step 400; the last is 512 tokens long
#          (from_iter, text context, text batch, retrieval length, retrieval batch, same wording)
stages = ((0, 256, 4, 48, 48),
          (400, 256, 4, 128, 16, 0.5),
          (700, 512, 2, 512, 2, 0.5))
max_iters = 750
eval_interval = 250
seed = 1337
