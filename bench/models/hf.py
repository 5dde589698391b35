"""BERT-base, GPT-2, DeBERTa-base and ALIGN from transformers, built from
their configs with random weights (no downloads). Raises ImportError where
transformers is missing."""

import torch


def _sdpa(config):
    config._attn_implementation = "sdpa"  # transformers' own default where torch has SDPA; set to be sure
    return config


def bert_base(size="full", batch=1, device="cpu"):
    """BertModel(BertConfig()): 12 layers, hidden 768, sequence 128 (small: 2
    layers, hidden 64, sequence 16). Called as model(input_ids, attention_mask)."""
    from transformers import BertConfig, BertModel
    if size == "full":
        cfg, seq = BertConfig(), 128
    else:
        cfg, seq = BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128,
                              vocab_size=1000), 16
    model = BertModel(_sdpa(cfg)).eval().to(device)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)
    mask = torch.ones(batch, seq, dtype=torch.long, device=device)
    return model, (ids, mask)


def gpt2(size="full", batch=1, device="cpu"):
    """GPT2Model(GPT2Config()): 12 layers, hidden 768, sequence 256, no KV cache
    (small: 2 layers, hidden 64, sequence 16). Called as model(input_ids): the
    second positional parameter is the cache, and a mask of ones changes nothing."""
    from transformers import GPT2Config, GPT2Model
    if size == "full":
        cfg, seq = GPT2Config(use_cache=False), 256
    else:
        cfg, seq = GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=1000, n_positions=128, use_cache=False,
                              bos_token_id=0, eos_token_id=0), 16
    model = GPT2Model(_sdpa(cfg)).eval().to(device)
    return model, (torch.randint(0, cfg.vocab_size, (batch, seq), device=device),)


def deberta_base(size="full", batch=1, device="cpu"):
    """DeBERTa-base (He et al., 2020): DebertaModel with microsoft/deberta-base's
    configuration: 12 layers, hidden 768, disentangled attention (content-to-
    position and position-to-content terms over relative positions, no absolute
    position embeddings), sequence 128 (small: 2 layers, hidden 64, sequence
    16). Called as model(input_ids, attention_mask)."""
    from transformers import DebertaConfig, DebertaModel
    deberta = dict(relative_attention=True, pos_att_type=["c2p", "p2c"], position_biased_input=False,
                   max_relative_positions=-1, type_vocab_size=0, layer_norm_eps=1e-7)
    if size == "full":
        cfg, seq = DebertaConfig(**deberta), 128
    else:
        cfg, seq = DebertaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128,
                                 vocab_size=1000, **deberta), 16
    model = DebertaModel(cfg).eval().to(device)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)
    mask = torch.ones(batch, seq, dtype=torch.long, device=device)
    return model, (ids, mask)


class AlignEmbeddings(torch.nn.Module):
    """AlignModel's forward reduced to its results: the normalized image and
    text embeddings and the image-text similarity logits, as a tuple."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, pixel_values):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
        return out.image_embeds, out.text_embeds, out.logits_per_image


def _calibrate_batch_norms(tower, images):
    """Sets every batch norm's running statistics to those of one batch of
    random images, as training would leave them. With the initial statistics
    (mean 0, variance 1) nothing normalizes the activations, and 55 MBConv
    blocks make the random image tower chaotic: a relative change of 1e-6 in
    the pixels moved its embedding by 90%, and eager float32 differed from
    float64 by 77%, so no compiled result could match eager. Calibrated:
    float32 within 1.4e-5 of float64 (CPU, full size)."""
    tower.eval()  # dropout and stochastic depth off: statistics of the path inference takes
    norms = [m for m in tower.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches seen: this one
        m.train()
    with torch.no_grad():
        tower(pixel_values=images)
    for m in norms:
        m.eval()


def align(size="full", batch=1, device="cpu"):
    """ALIGN (Jia et al., 2021), as kakaobrain/align-base: transformers'
    AlignModel from AlignConfig(), an EfficientNet-B7 image tower (width 2.0,
    depth 3.1, mean pooling, 640-d embedding) on 289x289 images and a BERT-base
    text tower (sequence 32) whose [CLS] state is projected to 640; both
    embeddings L2-normalized, logits their cosine similarity over a learned
    temperature. Small: EfficientNet of width 0.25 and depth 0.25 (one block
    per stage, 80-d) on 64x64 images, text tower of 2 layers, hidden 64,
    sequence 16. Called as model(input_ids, attention_mask, pixel_values);
    returns (image_embeds, text_embeds, logits_per_image)."""
    from transformers import AlignConfig, AlignModel, AlignTextConfig, AlignVisionConfig
    if size == "full":
        cfg, seq, side = AlignConfig(), 32, 289
    else:
        text = AlignTextConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128,
                               vocab_size=1000)
        vision = AlignVisionConfig(width_coefficient=0.25, depth_coefficient=0.25, image_size=64)
        cfg = AlignConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=80)
        seq, side = 16, 64
    model = AlignModel(cfg)
    for m in model.vision_model.modules():
        if isinstance(m, torch.nn.Conv2d):
            # He initialization: with the config's normal(0.02) the image tower's activations shrink by
            # orders of magnitude a block and the embedding's norm underflows to 0 (inf, then nan, logits).
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_in")
    _calibrate_batch_norms(model.vision_model, torch.randn(2, 3, side, side))
    model = AlignEmbeddings(model).eval().to(device)
    ids = torch.randint(0, cfg.text_config.vocab_size, (batch, seq), device=device)
    mask = torch.ones(batch, seq, dtype=torch.long, device=device)
    return model, (ids, mask, torch.randn(batch, 3, side, side, device=device))
