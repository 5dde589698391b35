"""Capture coverage: how many model families deepvisor captures whole.

    python3 bench/coverage.py [--only NAME ...] [--device cpu|cuda] [--json FILE]

Small random-weight models (no downloads) of transformers' and timm's
families, each compiled with deepvisor.compile and called five times: text
models on sequence lengths 9, 9, 12, 17, 12 (a repeat, then new lengths:
dynamic shapes), speech models on waveforms of matching lengths, vision
models on the same image size twice. Per model: the captures, the eager
calls (a whole call run eagerly, with the reason), the ops run through ATen
inside the plan (fallback ops), and the largest error against eager,
relative to eager's largest magnitude. A family whose library is missing is
skipped. What a whole model looks like: captures 1 (vision) or 2 (a static
capture, then a symbolic one that serves every later length), no eager
call, no fallback op.
"""

import argparse
import json
import sys

import torch

TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=500)
VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=32,
              patch_size=8)
SPEECH = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, conv_dim=(16, 16),
              conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
LENGTHS = (9, 9, 12, 17, 12)


def _ids(n):
    return dict(input_ids=torch.randint(2, 500, (2, n)))


def _pixels(n):
    return dict(pixel_values=torch.randn(2, 3, 32, 32))


def _waveform(n):
    return dict(input_values=torch.randn(2, 400 + 40 * n))


def _seq2seq(n):
    return dict(input_ids=torch.randint(2, 500, (2, n)), decoder_input_ids=torch.randint(2, 500, (2, 4)))


def transformers_cases():
    """name -> (a function making the model, a function making its inputs for a length)."""
    import transformers as T

    def text(config, **kw):
        return lambda: T.AutoModel.from_config(config(**{**TEXT, **kw}))

    def vision(config, **kw):
        return lambda: T.AutoModel.from_config(config(**{**VISION, **kw}))

    seq2seq = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                   decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=500)
    return {
        "bert": (text(T.BertConfig), _ids),
        "roberta": (text(T.RobertaConfig), _ids),
        "albert": (text(T.AlbertConfig, embedding_size=32), _ids),
        "electra": (text(T.ElectraConfig, embedding_size=64), _ids),
        "deberta_v2": (text(T.DebertaV2Config), _ids),
        "convbert": (text(T.ConvBertConfig, embedding_size=64), _ids),
        "longformer": (text(T.LongformerConfig, attention_window=8), _ids),
        "canine": (lambda: T.CanineModel(T.CanineConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                                        num_attention_heads=4, num_hash_buckets=64)), _ids),
        "bloom": (lambda: T.BloomModel(T.BloomConfig(hidden_size=64, n_layer=2, n_head=4, vocab_size=500)), _ids),
        "falcon": (lambda: T.FalconModel(T.FalconConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                        vocab_size=500, alibi=True)), _ids),
        "pegasus": (lambda: T.PegasusModel(T.PegasusConfig(**seq2seq)), _seq2seq),
        "marian": (lambda: T.MarianModel(T.MarianConfig(**seq2seq, decoder_vocab_size=500, pad_token_id=1)),
                   _seq2seq),
        "vit": (vision(T.ViTConfig), _pixels),
        "swin": (lambda: T.SwinModel(T.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                                                  num_heads=[2, 2], window_size=4)), _pixels),
        "clip_vision": (lambda: T.CLIPVisionModel(T.CLIPVisionConfig(**VISION)), _pixels),
        "sam_vision": (lambda: T.SamVisionModel(T.SamVisionConfig(
            hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=2, image_size=64,
            patch_size=8, window_size=4, global_attn_indexes=[1], mlp_dim=64)),
            lambda n: dict(pixel_values=torch.randn(1, 3, 64, 64))),
        "patchtst": (lambda: T.PatchTSTModel(T.PatchTSTConfig(
            num_input_channels=3, context_length=32, patch_length=8, patch_stride=8, d_model=32,
            num_attention_heads=4, num_hidden_layers=2, ffn_dim=64)),
            lambda n: dict(past_values=torch.randn(2, 32, 3))),
        "wav2vec2": (lambda: T.Wav2Vec2Model(T.Wav2Vec2Config(**SPEECH)), _waveform),
        "hubert": (lambda: T.HubertModel(T.HubertConfig(**SPEECH)), _waveform),
        "sew": (lambda: T.SEWModel(T.SEWConfig(**SPEECH, squeeze_factor=2)), _waveform),
    }


TIMM_MODELS = ["resnet18", "efficientnet_b0", "convnext_atto", "vit_tiny_patch16_224", "swin_tiny_patch4_window7_224",
               "twins_svt_small", "maxvit_tiny_tf_224", "tiny_vit_5m_224", "nest_tiny", "resmlp_12_224", "nfnet_l0",
               "crossvit_tiny_240", "levit_128s", "mobilevit_xxs", "efficientformer_l1", "fastvit_t8"]


def timm_cases():
    import timm

    def make(name):
        return lambda: timm.create_model(name, pretrained=False, num_classes=10)

    def inputs(name):
        size = (timm.get_pretrained_cfg_value(name, "input_size") or (3, 224, 224))[1:]
        return lambda n: (torch.randn(1, 3, *size),)

    return {f"timm/{name}": (make(name), inputs(name)) for name in TIMM_MODELS}


def _first_tensor(out):
    if torch.is_tensor(out):
        return out
    return out[0] if isinstance(out, (tuple, list)) else next(iter(out.values()))


def measure(make_model, make_inputs, device):
    import deepvisor
    model = make_model().eval().to(device)
    compiled = deepvisor.compile(model)
    worst = 0.0
    with torch.no_grad():
        for n in LENGTHS:
            x = make_inputs(n)
            args, kwargs = (x, {}) if isinstance(x, tuple) else ((), x)
            args = tuple(a.to(device) for a in args)
            kwargs = {k: v.to(device) for k, v in kwargs.items()}
            want = _first_tensor(model(*args, **kwargs))
            got = _first_tensor(compiled(*args, **kwargs))
            worst = max(worst, float((want - got).abs().max() / want.abs().max().clamp_min(1e-30)))
    s = deepvisor.stats(compiled)
    return dict(captures=s["captures"], eager_calls=s["eager_calls"], fallback_ops=dict(s["fallback_ops"]),
                max_rel_err=worst, eager_reasons=list(s["eager_reasons"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="model names (timm ones as timm/NAME)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json")
    opts = parser.parse_args()
    cases = {}
    for source in (transformers_cases, timm_cases):
        try:
            cases.update(source())
        except ImportError as e:
            print(f"skipped: {e}", file=sys.stderr)
    names = opts.only or list(cases)
    torch.manual_seed(0)
    rows = {}
    print("| model | captures | eager calls | fallback ops | max rel err |\n| --- | --- | --- | --- | --- |")
    for name in names:
        try:
            rows[name] = measure(*cases[name], opts.device)
        except Exception as e:  # a model this transformers or timm cannot build: reported, the run goes on
            rows[name] = dict(error=f"{type(e).__name__}: {e}")
            print(f"| {name} | error: {rows[name]['error'][:80]} | | | |", flush=True)
            continue
        r = rows[name]
        fallbacks = ", ".join(f"{op} x{k}" for op, k in r["fallback_ops"].items()) or "none"
        print(f"| {name} | {r['captures']} | {r['eager_calls']} | {fallbacks} | {r['max_rel_err']:.1e} |", flush=True)
    whole = [n for n, r in rows.items() if "error" not in r and not r["eager_calls"] and not r["fallback_ops"]]
    print(f"\nwhole (no eager call, no fallback op): {len(whole)} of {len(rows)}")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
