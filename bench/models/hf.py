"""BERT-base and GPT-2 from transformers, built from their configs with random
weights (no downloads). Raises ImportError where transformers is missing."""

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
