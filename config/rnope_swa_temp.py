# RNoPE-SWA whose NoPE layers scale q by 1 + 0.1 log(floor((p + 1) / 16) + 1): Llama 4's form, beta
# 0.1 as in Llama 4; s = 16, an eighth of the recall track's training length, so that the scale
# already varies (from 1 to 1.22) while training. In no paper as a switch; fixed before the recall
# track ran.
include('hybrid_long.py')
out_dir = 'out-rnope-swa-temp'
nope_temperature = 0.1
nope_temperature_floor = 16
