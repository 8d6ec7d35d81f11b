"""torch's module math, framework-free: written once, used by ``initjax.linen`` and ``initjax.nnx``.

Each module owns the computation of one torch module family as plain JAX
functions (no Flax), so that both Flax APIs compute exactly the same thing:

- :mod:`.recurrent`: ``nn.RNN``/``nn.LSTM``/``nn.GRU`` cells and stacks;
- :mod:`.attention`: ``nn.MultiheadAttention`` and the Transformer layers;
- :mod:`.embedding`: lookups, ``max_norm`` renormalization, ``nn.EmbeddingBag``;
- :mod:`.batch_norm`: torch's running statistics;
- :mod:`.instance_norm`: ``nn.InstanceNorm1d/2d/3d``;
- :mod:`.padding`: ``padding_mode="circular"``.

The layers are the supported entry points; these functions are what they call.
"""
