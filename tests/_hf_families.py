"""Every transformers family with a Flax class, ported with no per-model code.

One row per family: the Flax class, a tiny config, and the per-model port lines it
needs on top of the one generic line
``port.torch_to_linen(dir, abstract, layers, rename=[(r"\\.", "/")], ignore=IGNORE)``.
``check(row)`` builds the torch model, saves it with ``save_pretrained``, ports it into
the transformers Flax class and measures it against transformers' own converter
(``convert_pytorch_state_dict_to_flax``), against torch's forward, and back.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import torch

from initjax import port
from initjax.port import rules

#: The generic line: torch's dots are transformers' Flax path separators.
RENAME = [(r"\.", "/")]
#: Buffers that torch saves and the Flax classes recompute: frozen sinusoidal tables
#: (Marian, Pegasus, RoFormer).
IGNORE = [r"embed_positions\.weight$"]

_BERT = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
)
_BART = dict(
    vocab_size=99,
    d_model=32,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=37,
    decoder_ffn_dim=37,
    max_position_embeddings=64,
)
_DECODER = dict(_BERT, num_key_value_heads=2, head_dim=8)
_T5 = dict(vocab_size=99, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4)
_VISION = dict(_BERT, image_size=30, patch_size=6, num_channels=3)
_CONVNET = dict(embedding_size=16, hidden_sizes=[16, 24], depths=[1, 1], num_channels=3)
_AUDIO = dict(
    _BERT,
    conv_dim=(16, 16),
    conv_stride=(5, 2),
    conv_kernel=(10, 3),
    do_stable_layer_norm=True,
    feat_extract_norm="layer",
    num_conv_pos_embeddings=15,
    num_conv_pos_embedding_groups=4,
)


@dataclass(frozen=True)
class Family:
    """A family's Flax class, tiny config and its per-model port lines (``rules=``)."""

    flax_class: str
    config: dict[str, Any]
    #: ``{"module:FlaxLayer": rule class name in initjax.port.rules}``: one line each.
    rules: dict[str, str] = field(default_factory=dict)


FAMILIES = {
    "albert": Family("FlaxAlbertModel", dict(_BERT, embedding_size=24, num_hidden_groups=1)),
    "bart": Family("FlaxBartModel", _BART),
    "beit": Family("FlaxBeitModel", dict(_VISION, use_relative_position_bias=True)),
    "bert": Family("FlaxBertModel", _BERT),
    "big_bird": Family("FlaxBigBirdModel", dict(_BERT, attention_type="original_full")),
    "blenderbot": Family("FlaxBlenderbotModel", _BART),
    "blenderbot_small": Family("FlaxBlenderbotSmallModel", _BART),
    "bloom": Family("FlaxBloomModel", dict(vocab_size=99, hidden_size=32, n_layer=2, n_head=4)),
    "clip": Family(
        "FlaxCLIPModel",
        dict(text_config=_BERT, vision_config=_VISION, projection_dim=24),
    ),
    "clip_text": Family("FlaxCLIPTextModel", _BERT),
    "clip_vision": Family("FlaxCLIPVisionModel", _VISION),
    "dinov2": Family("FlaxDinov2Model", dict(_VISION, layerscale_value=1.0)),
    "distilbert": Family(
        "FlaxDistilBertModel", dict(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37)
    ),
    "electra": Family("FlaxElectraModel", dict(_BERT, embedding_size=24)),
    "gemma": Family("FlaxGemmaModel", _DECODER),
    "gpt2": Family(
        "FlaxGPT2Model",
        dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64),
        {"transformers.models.gpt2.modeling_flax_gpt2:FlaxConv1D": "Linear"},
    ),
    "gpt_neo": Family(
        "FlaxGPTNeoModel",
        dict(_BERT, num_layers=2, attention_types=[[["global", "local"], 1]], window_size=8),
    ),
    "gptj": Family(
        "FlaxGPTJModel", dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, rotary_dim=4)
    ),
    "llama": Family("FlaxLlamaModel", _DECODER),
    "longt5": Family("FlaxLongT5Model", _T5),
    "marian": Family("FlaxMarianModel", dict(_BART, pad_token_id=98, decoder_start_token_id=98)),
    "marian_mt": Family(
        "FlaxMarianMTModel", dict(_BART, pad_token_id=98, decoder_start_token_id=98)
    ),
    "mbart": Family("FlaxMBartModel", _BART),
    "mistral": Family("FlaxMistralModel", _DECODER),
    "mt5": Family("FlaxMT5Model", _T5),
    "opt": Family(
        "FlaxOPTModel",
        dict(_BART, hidden_size=32, num_hidden_layers=2, ffn_dim=37, num_attention_heads=4),
    ),
    "pegasus": Family("FlaxPegasusModel", _BART),
    "regnet": Family("FlaxRegNetModel", dict(_CONVNET, groups_width=8)),
    "resnet": Family("FlaxResNetModel", _CONVNET),
    "roberta": Family("FlaxRobertaModel", _BERT),
    "roberta_prelayernorm": Family("FlaxRobertaPreLayerNormModel", _BERT),
    "roformer": Family("FlaxRoFormerModel", _BERT),
    "t5": Family("FlaxT5Model", _T5),
    "vit": Family("FlaxViTModel", _VISION),
    "wav2vec2": Family("FlaxWav2Vec2Model", _AUDIO),
    "whisper": Family(
        "FlaxWhisperModel",
        dict(
            _BART,
            num_mel_bins=16,
            max_source_positions=12,
            max_target_positions=20,
            pad_token_id=98,
            bos_token_id=97,
            eos_token_id=98,
            decoder_start_token_id=97,
        ),
    ),
    "xglm": Family(
        "FlaxXGLMModel",
        dict(vocab_size=99, d_model=32, num_layers=2, attention_heads=4, ffn_dim=37),
    ),
    "xlm_roberta": Family("FlaxXLMRobertaModel", _BERT),
}


def _inputs(flax_model, config) -> dict[str, np.ndarray]:
    """Example inputs for the Flax call, by the names its ``__call__`` takes."""
    names = inspect.signature(type(flax_model).__call__).parameters
    rng = np.random.default_rng(0)
    out: dict[str, np.ndarray] = {}
    if "input_ids" in names:
        vocab = getattr(config, "vocab_size", None) or config.text_config.vocab_size
        out["input_ids"] = rng.integers(3, vocab, (2, 7)).astype(np.int32)
    if "token_type_ids" in names:  # transformers' Flax Electra defaults them to ones
        out["token_type_ids"] = np.zeros_like(out["input_ids"])
    if "pixel_values" in names:
        c = getattr(config, "vision_config", config)
        size = getattr(c, "image_size", 32)
        out["pixel_values"] = rng.standard_normal((2, c.num_channels, size, size), np.float32)
    if "input_values" in names:
        out["input_values"] = rng.standard_normal((2, 400), np.float32)
    if "input_features" in names:
        shape = (2, config.num_mel_bins, 2 * config.max_source_positions)
        out["input_features"] = rng.standard_normal(shape, np.float32)
    if "decoder_input_ids" in names:
        out["decoder_input_ids"] = rng.integers(3, config.vocab_size, (2, 5)).astype(np.int32)
    return out


def _init_args(flax_model) -> tuple[tuple, dict]:
    """The arguments transformers' own ``init_weights`` passes to ``module.init``."""
    seen: dict[str, Any] = {}
    module_type = type(flax_model.module)

    def record(self, rngs, *args, **kwargs):
        seen.update(args=args, kwargs=kwargs, rngs=rngs)
        return {"params": {}}

    with mock.patch.object(module_type, "init", record):
        jax.eval_shape(lambda: flax_model.init_weights(jax.random.key(0), flax_model.input_shape))
    return seen["args"], {**seen["kwargs"], "rngs": seen["rngs"]}


def _rules(family: Family) -> dict[type, rules.Rule]:
    out = {}
    for where, rule in family.rules.items():
        module, name = where.split(":")
        out[getattr(importlib.import_module(module), name)] = getattr(rules, rule)()
    return out


def _clip(x, min=None, max=None, *, a_min=None, a_max=None):
    """``jnp.clip`` with the ``a_min``/``a_max`` that transformers' Flax T5 still passes."""
    return _CLIP(x, a_min if min is None else min, a_max if max is None else max)


_CLIP = jnp.clip


def _last(output) -> np.ndarray:
    """The first array of a model output (the last hidden state, or CLIP's text embeds)."""
    first = output[0] if not hasattr(output, "text_embeds") else output.text_embeds
    return np.asarray(first.detach().numpy() if isinstance(first, torch.Tensor) else first)


@dataclass(frozen=True)
class Result:
    lines: int
    largest_difference: float
    #: the largest absolute torch output: a difference is measured on a non-trivial output
    output_scale: float
    bit_identical: bool
    round_trip: bool
    as_is: int
    ignored: int


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and np.array_equal(a, b)


def check(name: str, directory) -> Result:
    """Port family ``name`` with the generic line and its table entry; measure everything."""
    with mock.patch.object(jnp, "clip", _clip):
        return _check(FAMILIES[name], directory)


def _check(family: Family, directory) -> Result:
    import transformers
    from transformers.modeling_flax_pytorch_utils import convert_pytorch_state_dict_to_flax

    flax_class = getattr(transformers, family.flax_class)
    torch_class = getattr(transformers, family.flax_class.removeprefix("Flax"))
    config = flax_class.config_class(**family.config)
    torch.manual_seed(0)
    model = torch_class(config).eval()
    model.save_pretrained(directory)

    flax_model = flax_class(config, _do_init=False)
    module = flax_model.module
    args, kwargs = _init_args(flax_model)
    rngs = kwargs.pop("rngs")
    layers = port.linen_layers(module, *args, rngs=rngs, **kwargs)
    abstract = jax.eval_shape(lambda: module.init(rngs, *args, **kwargs))
    abstract = {k: v for k, v in abstract.items() if k in ("params", "batch_stats")}
    options = dict(rename=RENAME, ignore=IGNORE, rules=_rules(family))
    variables, report = port.torch_to_linen(directory, abstract, layers, **options)
    assert report.ok, report.describe()

    shapes = abstract if "batch_stats" in abstract else abstract["params"]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    stand_in = SimpleNamespace(params=shapes, base_model_prefix=flax_model.base_model_prefix)
    theirs = convert_pytorch_state_dict_to_flax(state, stand_in)
    ours = variables if "batch_stats" in variables else variables["params"]
    flat_ours = dict(jax.tree_util.tree_leaves_with_path(ours))
    flat_theirs = dict(jax.tree_util.tree_leaves_with_path(theirs))
    kept = {p: v for p, v in flat_theirs.items() if p in flat_ours}
    bit_identical = kept.keys() == flat_ours.keys() and all(
        _identical(np.asarray(flat_ours[p]), np.asarray(v)) for p, v in kept.items()
    )

    inputs = _inputs(flax_model, config)
    got = _last(jax.jit(lambda p, i: flax_model(**i, params=p))(ours, inputs))
    with torch.no_grad():
        want = _last(
            model(
                **{
                    k: torch.from_numpy(v).long() if v.dtype == np.int32 else torch.from_numpy(v)
                    for k, v in inputs.items()
                }
            )
        )
    difference = float(np.max(np.abs(got - want)))

    # back, to the keys of the checkpoint (tied copies are not saved), less the ignored ones
    saved = port.open_checkpoint(directory)
    back = port.linen_to_torch(variables, layers, torch_keys=list(saved), **options)
    round_trip = sorted(back) == sorted(set(saved) - set(report.ignored)) and all(
        _identical(back[k], np.asarray(saved[k])) for k in back
    )
    return Result(
        lines=len(family.rules),
        largest_difference=difference,
        output_scale=float(np.max(np.abs(want))),
        bit_identical=bit_identical,
        round_trip=round_trip,
        as_is=len(report.as_is),
        ignored=len(report.ignored),
    )
