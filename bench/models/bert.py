"""A BERT-like encoder in plain nn modules (embeddings, then layers of
self-attention and a GELU MLP, each followed by a residual LayerNorm), so that
the benchmarks run without transformers."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Config:
    def __init__(self, layers=12, hidden=768, heads=12, intermediate=3072, vocab=30522, max_positions=512,
                 eps=1e-12, dropout=0.1):
        self.layers, self.hidden, self.heads, self.intermediate = layers, hidden, heads, intermediate
        self.vocab, self.max_positions, self.eps, self.dropout = vocab, max_positions, eps, dropout


class SelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.heads = cfg.heads
        self.head_size = cfg.hidden // cfg.heads
        self.query = nn.Linear(cfg.hidden, cfg.hidden)
        self.key = nn.Linear(cfg.hidden, cfg.hidden)
        self.value = nn.Linear(cfg.hidden, cfg.hidden)
        self.dropout = nn.Dropout(cfg.dropout)

    def split(self, x):
        b, s, _ = x.shape
        return x.view(b, s, self.heads, self.head_size).transpose(1, 2)

    def forward(self, x, mask):
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_size) + mask
        probs = self.dropout(torch.softmax(scores, -1))
        ctx = (probs @ v).transpose(1, 2)
        return ctx.reshape(x.shape)


class Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention = SelfAttention(cfg)
        self.attention_out = nn.Linear(cfg.hidden, cfg.hidden)
        self.attention_norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        self.intermediate = nn.Linear(cfg.hidden, cfg.intermediate)
        self.output = nn.Linear(cfg.intermediate, cfg.hidden)
        self.output_norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, mask):
        h = self.attention_norm(x + self.dropout(self.attention_out(self.attention(x, mask))))
        return self.output_norm(h + self.dropout(self.output(F.gelu(self.intermediate(h)))))


class BertLike(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.word = nn.Embedding(cfg.vocab, cfg.hidden)
        self.position = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.layers))

    def forward(self, ids, attention_mask):
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.norm(self.word(ids) + self.position(positions))
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.layers:
            x = layer(x, mask)
        return x


def bert_like(size="full", batch=1, seq=128, device="cpu"):
    cfg = Config() if size == "full" else Config(layers=2, hidden=64, heads=4, intermediate=128, vocab=1000)
    model = BertLike(cfg).eval().to(device)
    ids = torch.randint(0, cfg.vocab, (batch, seq), device=device)
    mask = torch.ones(batch, seq, dtype=torch.long, device=device)
    return model, (ids, mask)
