"""Encoder + head for A/B/tie preference.

Siamese (default): one shared encoder reads side A and side B (prompt + that
response) in ONE forward pass (the two sides stacked along the batch); pooled
vectors a, b feed a head on [a, b, a-b, a*b] (+ style features) -> 3 logits.
Because a and b do not depend on the order, the head is evaluated on (a, b)
and on (b, a) from the same encoder pass: swap augmentation in training and
swap averaging at prediction cost one extra tiny MLP call, not a second pass.

Cross: the encoder reads `prompt + A + B` as one sequence; the swapped order
is a second sequence in the same batch.

Two steps, both public: `encode` (backbone + pooling -> one vector per
sequence) and `head_logits` (pooled vectors + style -> logits). A different
backbone or pooling plugs in behind `encode`; the head stays as it is.
"""
from __future__ import annotations

import torch
from torch import nn

from .backbone import check_pooling, hidden_states, hidden_states_packed, is_decoder_config, pool  # noqa: F401
from .backbone import hidden_size as backbone_hidden_size
from ..inputs.features import N_FEATURES
from .lm_head import AnswerHead, check_decoder, final_softcap


def length_chunks(attention_mask: torch.Tensor, k: int) -> list[tuple[torch.Tensor, int]]:
    """Rows sorted by length, cut into k chunks, each with its own padded width.

    The two sides of a siamese pair often differ a lot in length; one forward
    over the stacked batch pads every row to the longest. Chunking by length
    cuts that padding (on real arena pairs, batch 16: 17% with one call, 12.5% with 2 chunks,
    6.6% with 4, for 1.23x the training tokens/s) for k-1 extra calls.
    """
    lengths = attention_mask.sum(1)
    if k <= 1 or attention_mask.shape[0] < 2 * k:
        return [(torch.arange(attention_mask.shape[0], device=attention_mask.device), attention_mask.shape[1])]
    order = torch.argsort(lengths, descending=True)
    return [(c, int(lengths[c].max())) for c in order.chunk(k)]


def padded_tokens(attention_mask: torch.Tensor, k: int) -> int:
    return sum(len(rows) * width for rows, width in length_chunks(attention_mask, k))




class PrefModel(nn.Module):
    def __init__(self, encoder: nn.Module, *, arch: str = "siamese", pooling: str = "mean",
                 head_hidden: int = 256, dropout: float = 0.1, style: bool = True, chunks: int = 4,
                 head: str = "mlp"):
        super().__init__()
        if arch not in ("siamese", "cross"):
            raise ValueError(f"arch must be siamese or cross, got {arch!r}")
        self.decoder = is_decoder_config(encoder.config)
        self.head_kind = head
        if head == "lm":  # the LM's answer-token logits read one hidden state: no style features
            check_decoder(encoder.config, type(encoder).__name__)
            if arch != "cross" or pooling not in ("auto", "last"):
                raise ValueError("head 'lm' reads the judge sequence's last token: arch cross, pooling last")
            style = False
        if pooling == "auto":
            pooling = "last" if self.decoder else "mean"
        check_pooling(pooling, self.decoder)
        self.encoder, self.arch, self.pooling, self.use_style = encoder, arch, pooling, style
        self.chunks = chunks
        for name, p in encoder.named_parameters():
            if name.startswith("pooler."):  # BERT's pooler is unused (we pool ourselves): freeze it so
                p.requires_grad_(False)      # DDP does not wait for gradients that never come
        hidden = backbone_hidden_size(encoder.config)
        self.head_in = (4 * hidden if arch == "siamese" else hidden) + (3 * N_FEATURES if style else 0)
        if head == "lm":  # three rows of the LM head, filled by lm_head.init_answer_head (or a checkpoint)
            self.head = AnswerHead(hidden, final_softcap(encoder.config))
        elif head == "linear":  # the HF *ForSequenceClassification shape the LMSYS winners trained
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.head_in, 3))
        elif head == "mlp":
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.head_in, head_hidden), nn.GELU(),
                                      nn.Dropout(dropout), nn.Linear(head_hidden, 3))
        else:
            raise ValueError(f"head must be mlp, linear or lm, got {head!r}")
        # Standardisation of the style features, fitted on the training split and saved with the weights.
        self.register_buffer("style_mean", torch.zeros(N_FEATURES))
        self.register_buffer("style_std", torch.ones(N_FEATURES))

    def start_at_prior(self, prior) -> None:
        """MLP or linear head: output layer to zero weights and the log prior (A and B shared: the model is
        swap-averaged, so an A/B asymmetry in the bias would cancel anyway). Step 0 then predicts
        the class prior whatever the backbone's hidden-state scale, and the first gradients
        reach the output layer only, which then opens the path to the rest."""
        if self.head_kind not in ("mlp", "linear"):
            return
        p = torch.as_tensor(prior, dtype=torch.float64)
        p = torch.stack([(p[0] + p[1]) / 2, (p[0] + p[1]) / 2, p[2]])
        out = self.head[-1]
        with torch.no_grad():
            out.weight.zero_()
            out.bias.copy_(torch.log(p / p.sum()).to(out.bias.dtype))

    def set_style_stats(self, feats: torch.Tensor) -> None:
        flat = feats.reshape(-1, N_FEATURES).float()
        self.style_mean.copy_(flat.mean(0))
        std = torch.nan_to_num(flat.std(0), nan=0.0)
        # A feature (nearly) constant in training carries nothing the head could learn; dividing
        # by a 1e-3 clamp turned one unseen value (an empty turn, in a tiny-llama run on hh-rlhf
        # rows) into z = 693 and a logit spread of 45. Unit scale keeps it a unit change.
        self.style_std.copy_(torch.where(std < 1e-3, torch.ones_like(std), std))

    def head_input(self, a: torch.Tensor, b: torch.Tensor | None, fa: torch.Tensor | None,
                   fb: torch.Tensor | None) -> torch.Tensor:
        """siamese: [a, b, a-b, a*b, fa, fb, fa-fb]; cross: [h, fa, fb, fa-fb]. In the head's
        dtype: a quantised base's pooled states come out fp32 (peft upcasts its norms and
        embeddings) while prediction may hold the head in bf16/fp16."""
        parts = [a, b, a - b, a * b] if b is not None else [a]
        if self.use_style:
            parts += [fa, fb, fa - fb]
        dtype = next(self.head.parameters()).dtype
        return torch.cat([p.to(dtype) for p in parts], dim=-1)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled vector per row, computed in length chunks (rows are right-padded,
        so trimming columns to a chunk's longest row loses nothing)."""
        parts, rows = [], []
        for idx, width in length_chunks(attention_mask, self.chunks):
            ids, mask = input_ids[idx, :width], attention_mask[idx, :width]
            parts.append(pool(hidden_states(self.encoder, ids, mask, self.decoder), mask, self.pooling))
            rows.append(idx)
        if len(parts) == 1:
            return parts[0][torch.argsort(rows[0])]
        return torch.cat(parts)[torch.argsort(torch.cat(rows))]

    def encode_packed(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                      seq_ends: torch.Tensor) -> torch.Tensor:
        """Pooled vector per sequence of a packed row (collate.collate_packed): `last` reads
        each sequence's last token, `mean` averages over each sequence's own tokens."""
        h = hidden_states_packed(self.encoder, input_ids, position_ids)[0]
        if self.pooling == "last":
            return h[seq_ends]
        if self.pooling != "mean":
            raise ValueError(f"packed rows pool 'last' or 'mean', not {self.pooling!r}")
        seq = torch.searchsorted(seq_ends, torch.arange(h.shape[0], device=h.device))  # token -> its sequence
        sums = torch.zeros((len(seq_ends), h.shape[-1]), dtype=h.dtype, device=h.device).index_add_(0, seq, h)
        counts = torch.diff(seq_ends, prepend=seq_ends.new_tensor([-1])).to(h.dtype)
        return sums / counts.unsqueeze(-1)

    def head_logits(self, a: torch.Tensor, b: torch.Tensor | None, style: torch.Tensor | None = None,
                    both_orders: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits for the (A, B) order and, when `both_orders`, for (B, A), from pooled vectors.

        siamese: `a`, `b` are the pooled A and B sides (n rows each);
        cross:   `a` is the pooled A-first sequence, `b` the B-first one (None without both_orders).
        Prediction pools sides in batches of its own and calls this; forward() = encode + this.
        """
        fa = fb = None
        if self.use_style:
            z = (style.to(a.dtype) - self.style_mean.to(a.dtype)) / self.style_std.to(a.dtype)
            fa, fb = z[:, 0], z[:, 1]
        if self.arch == "siamese":
            ab = self.head(self.head_input(a, b, fa, fb))
            ba = self.head(self.head_input(b, a, fb, fa)) if both_orders else None
        else:
            ab = self.head(self.head_input(a, None, fa, fb))
            ba = self.head(self.head_input(b, None, fb, fa)) if both_orders else None
        return ab.float(), None if ba is None else ba.float()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, style: torch.Tensor | None = None,
                both_orders: bool = True, position_ids: torch.Tensor | None = None,
                seq_ends: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """siamese: rows [0, n) are side A, [n, 2n) side B.
        cross:   rows [0, n) are A-first sequences, [n, 2n) B-first (present iff both_orders).
        Packed (position_ids + seq_ends, no mask): the same sequences in one row, in that order;
        it goes through forward (not encode_packed) so DDP sees the call."""
        if position_ids is not None:
            h = self.encode_packed(input_ids, position_ids, seq_ends)
        else:
            h = self.encode(input_ids, attention_mask)
        paired = self.arch == "siamese" or both_orders
        n = style.shape[0] if style is not None else (h.shape[0] // 2 if paired else h.shape[0])
        return self.head_logits(h[:n], h[n:] if paired else None, style, both_orders)
