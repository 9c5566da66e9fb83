# NoPE: no positional encoding in any layer; causal masking alone leaks position information.
# config/hybrid_long.py otherwise. The paper finds NoPE layers put the most attention mass on the
# needle (retrieval by content) and hold the attention sink, but a NoPE-only model trails RoPE on
# overall quality and its attention spreads thin at long lengths.
include('hybrid_long.py')
out_dir = 'out-nope'
layer_pattern = 'N'
