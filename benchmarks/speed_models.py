"""The models of ``benchmarks/speed.py``'s sides, randomly initialised from the spec's seed.

attn's ``Seq2Seq`` / ``Classifier`` from a preset, and the Hugging Face models of the same shape:
``MarianMTModel``, Marian's encoder with attn's sentiment head, or BERT. Heavy imports happen
inside the functions. ``speed.py``'s docstring states what is the same and what differs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

PAD, BOS, EOS, FIRST_REAL = 0, 2, 3, 4  # attn's special ids (attn_cli.data.tokenizer), used by both


def marian_config(spec: dict) -> Any:
    """A ``MarianConfig`` of the shape of ``spec['dims']`` (see speed.py's docstring), SDPA attention."""
    from transformers import MarianConfig

    p = spec["dims"]
    cfg = MarianConfig(
        vocab_size=spec["vocab"], d_model=p["d_model"], encoder_layers=p["n_enc_layers"],
        decoder_layers=p["n_dec_layers"], encoder_attention_heads=p["n_heads"],
        decoder_attention_heads=p["n_heads"], encoder_ffn_dim=p["d_ff"], decoder_ffn_dim=p["d_ff"],
        max_position_embeddings=spec["max_len"], dropout=0.1, attention_dropout=0.0,
        activation_dropout=0.0, activation_function="gelu", scale_embedding=True,
        pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=BOS,
        forced_eos_token_id=None, share_encoder_decoder_embeddings=True, tie_word_embeddings=True)
    cfg._attn_implementation = "sdpa"
    return cfg



def attn_model(spec: dict, seq2seq: bool) -> nn.Module:
    """attn's ``Seq2Seq`` (seq2seq) or ``Classifier`` from the spec's preset."""
    from attn_cli.config import model_config_from_preset
    from attn_cli.model.transformer import build_model

    task = "translate" if seq2seq else "sentiment"
    cfg = model_config_from_preset(spec["preset"], task, spec["vocab"],
                                   num_labels=0 if seq2seq else 2, max_len=spec["max_len"])
    return build_model(cfg)


def bert_classifier(spec: dict) -> nn.Module:
    """``BertForSequenceClassification`` of the spec's dimensions (``--hf-classifier bert``)."""
    from transformers import BertConfig, BertForSequenceClassification

    p = spec["dims"]
    cfg = BertConfig(vocab_size=spec["vocab"], hidden_size=p["d_model"],
                     num_hidden_layers=p["n_enc_layers"], num_attention_heads=p["n_heads"],
                     intermediate_size=p["d_ff"], hidden_act="gelu", hidden_dropout_prob=0.1,
                     attention_probs_dropout_prob=0.0, max_position_embeddings=spec["max_len"],
                     type_vocab_size=1, num_labels=2, pad_token_id=PAD)
    cfg._attn_implementation = "sdpa"
    return BertForSequenceClassification(cfg)


def marian_classifier(spec: dict) -> nn.Module:
    """Marian's encoder with attn's sentiment head (the default ``--hf-classifier marian``)."""
    from torch import nn
    from transformers.models.marian.modeling_marian import MarianEncoder

    class MarianEncoderClassifier(nn.Module):
        """Marian's encoder with attn's head: masked mean pooling, Linear-tanh-Linear."""

        def __init__(self, cfg: Any) -> None:
            super().__init__()
            d = cfg.d_model
            self.encoder = MarianEncoder(cfg)
            self.head = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Dropout(cfg.dropout),
                                      nn.Linear(d, 2))

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            """(B, S) ids -> (B, 2) logits."""
            mask = ids.ne(PAD)  # (B, S)
            h = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
            keep = mask[..., None].to(h.dtype)  # (B, S, 1)
            return self.head((h * keep).sum(1) / keep.sum(1).clamp(min=1.0))  # (B, C)

    return MarianEncoderClassifier(marian_config(spec))


def build(spec: dict) -> tuple[nn.Module, int, int]:
    """The model of one side (train mode), its trainable and its frozen parameter counts."""
    import torch

    torch.manual_seed(spec["seed"])
    seq2seq = spec["measure"] in ("train", "greedy", "beam5")
    if spec["side"] == "attn":
        model = attn_model(spec, seq2seq)
    elif seq2seq:
        from transformers import MarianMTModel

        model = MarianMTModel(marian_config(spec))
    elif spec["hf_classifier"] == "bert":
        model = bert_classifier(spec)
    else:
        model = marian_classifier(spec)
    unique = {id(p): p for p in model.parameters()}.values()
    return model, sum(p.numel() for p in unique if p.requires_grad), \
        sum(p.numel() for p in unique if not p.requires_grad)
