"""Every transformers family with a Flax class ports with no per-model code (issue 23).

Each family of :data:`_hf_families.FAMILIES` (a tiny random config, ``save_pretrained``)
ports into transformers' own Flax class with the one generic line and its table entry
(no entry but GPT-2's ``Conv1D`` rule), and is:

- bit-identical to transformers' converter (``convert_pytorch_state_dict_to_flax``);
- within 1e-5 of torch's forward (float32 over two tiny layers: torch's and XLA's
  kernels sum in different orders, a few ulps of activations of size ~1);
- an exact round trip: back to the checkpoint's keys, less the ignored ones, equal.
"""

from __future__ import annotations

import pytest
from _hf_families import FAMILIES, check


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_ports_with_no_per_model_code(name, tmp_path):
    result = check(name, tmp_path)
    assert result.lines == (1 if name == "gpt2" else 0)
    assert result.bit_identical
    assert result.largest_difference <= 1e-5
    assert result.output_scale > 1e-2
    assert result.round_trip
