"""``torch.optim``, its lr schedulers and gradient clipping, as optax transformations.

::

    import optax
    import initjax as ij

    tx = optax.chain(
        ij.optim.clip_grad_norm(1.0),
        ij.optim.AdamW(
            lr=ij.optim.lr_scheduler.OneCycleLR(max_lr=1e-3, total_steps=1000),
            weight_decay=0.01,
        ),
    )

- Optimizers take torch's arguments (minus ``params``) with torch's defaults
  and checks, and return an ``optax.GradientTransformation`` whose updates
  are the deltas to *add* (``optax.apply_updates``); the step of torch's
  single-tensor kernels, bias corrections computed to float64 accuracy.
  ``lr`` is a float or a schedule (:mod:`initjax.optim.lr_scheduler`).
- Parameter groups (different lr or weight decay for biases and norms) are
  ``optax.multi_transform`` with a label tree.
- :mod:`initjax.optim.state` ports a torch ``optimizer.state_dict()`` to the
  matching optax state and back, through the same rules as the parameters.
"""

from . import clip, lr_scheduler, state
from ._adam import Adam, AdamState, AdamW
from ._adam_variants import Adamax, AdamaxState, NAdam, NAdamState, RAdam, RAdamState
from ._adaptive import Adadelta, Adagrad, AdagradState, RMSprop, RMSpropState
from ._sgd import SGD, SGDState
from .clip import clip_grad_norm, clip_grad_value

__all__ = [
    "SGD",
    "Adadelta",
    "Adagrad",
    "AdagradState",
    "Adam",
    "AdamState",
    "AdamW",
    "Adamax",
    "AdamaxState",
    "NAdam",
    "NAdamState",
    "RAdam",
    "RAdamState",
    "RMSprop",
    "RMSpropState",
    "SGDState",
    "clip",
    "clip_grad_norm",
    "clip_grad_value",
    "lr_scheduler",
    "state",
]
