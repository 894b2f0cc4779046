"""The model every family builds: embeddings, a stack (or encoder + decoder), and a task head."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from lmforge.config import ModelConfig
from lmforge.errors import ShapeError
from lmforge.models.blocks import TransformerStack
from lmforge.models.embeddings import Embeddings
from lmforge.models.families.registry import family
from lmforge.models.heads import Classifier, LMHead, Pooler, pool
from lmforge.models.kv_cache import KVCache


@dataclass
class ModelOutput:
    """What a forward pass returns; fields a head does not produce stay None.

    ``logits`` is (B, T, V) for LM heads, (B, num_labels) for sequence classification,
    (B, T, num_labels) for token classification and (B, T, 2) for QA (``start_logits`` and
    ``end_logits`` are its two columns).
    """

    logits: Tensor | None = None
    last_hidden_state: Tensor | None = None
    pooler_output: Tensor | None = None
    seq_relationship_logits: Tensor | None = None
    start_logits: Tensor | None = None
    end_logits: Tensor | None = None
    encoder_last_hidden_state: Tensor | None = None
    past_key_values: KVCache | None = None


class TransformerModel(nn.Module):
    """A Transformer of any supported family, described entirely by its :class:`ModelConfig`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.stack = TransformerStack(config, config.num_layers, causal=config.causal)
        self.decoder = (
            TransformerStack(config, config.num_decoder_layers, causal=True, cross_attention=True)
            if config.num_decoder_layers is not None
            else None
        )
        self.pooler = Pooler(config) if config.pooler else None
        head = config.head
        self.lm_head = (
            LMHead(config, masked=head in ("masked_lm", "pretraining")) if head in _LM_HEADS else None
        )
        self.classifier: Classifier | None = None
        if head == "sequence_classification":
            self.classifier = Classifier(config, config.num_labels, bias=config.classifier_bias)
        elif head == "token_classification":
            self.classifier = Classifier(config, config.num_labels)
        elif head == "question_answering":
            self.classifier = Classifier(config, 2, dropout=False)  # no family drops out before QA
        elif head == "pretraining":
            self.classifier = Classifier(config, 2)  # next-sentence / sentence-order prediction
        self.reset_parameters()
        self.tie_weights()

    # -- parameters -----------------------------------------------------------------------------

    def tie_weights(self) -> None:
        """Share the LM decoder weight with the token embedding when the config says so."""
        if self.lm_head is not None and self.config.tie_embeddings:
            self.lm_head.decoder.weight = self.embeddings.token.weight

    def reset_parameters(self) -> None:
        """The family's own init when it has one (T5), else GPT-2 / BERT style: N(0, 0.02) with
        residual projections scaled down by depth."""
        spec = family(self.config.family)
        if spec.init_parameters is not None:
            spec.init_parameters(self, self.config)
            return
        std = 0.02
        residual_std = std / math.sqrt(2 * (self.config.num_layers + (self.config.num_decoder_layers or 0)))
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                is_residual = name.endswith(("o_proj", "down_proj"))
                nn.init.normal_(module.weight, std=residual_std if is_residual else std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)

    def set_dropout(self, rate: float) -> None:
        """Use ``rate`` at every dropout site the model has (residual, attention, embeddings,
        classifier), in the modules and in ``config`` (so a saved model keeps it). Sites the family
        lacks (ALBERT's MLP output, dropout before QA) stay absent."""
        self.config.dropout = rate
        self.config.attention_dropout = self.config.embedding_dropout = self.config.classifier_dropout = rate
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = rate

    def num_parameters(self) -> int:
        """Number of distinct parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters())

    # -- forward --------------------------------------------------------------------------------

    def encode(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: KVCache | None = None,
        task_type_ids: Tensor | None = None,
    ) -> Tensor:
        """Run embeddings and the main stack: (B, T) ids -> (B, T, H) hidden states."""
        if input_ids.dim() != 2:
            raise ShapeError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
        if attention_mask is not None and cache is None and attention_mask.shape != input_ids.shape:
            raise ShapeError(
                f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}"
            )
        past = cache.length if cache is not None else 0
        stack_cache = cache if self.decoder is None else None
        x = self.embeddings(
            input_ids,
            token_type_ids,
            position_ids if self.stack.rotary is None else None,
            past,
            task_type_ids,
        )
        return self.stack(x, attention_mask, position_ids, stack_cache)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        decoder_input_ids: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        task_type_ids: Tensor | None = None,
    ) -> ModelOutput:
        """Run the model.

        Args:
            input_ids: (B, T) token ids (the encoder input for encoder-decoder models).
            attention_mask: (B, T) 1 for real tokens, 0 for padding; with a cache, (B, past + T).
            token_type_ids: (B, T) segment ids (BERT family).
            position_ids: (B, T) explicit positions (e.g. for left-padded generation).
            decoder_input_ids: (B, T_dec) decoder ids (encoder-decoder models).
            decoder_attention_mask: (B, past + T_dec) decoder padding mask.
            encoder_hidden_states: (B, T, H) precomputed encoder output, to skip the encoder.
            past_key_values: cache from a previous call, for incremental decoding.
            use_cache: create and return a cache when none is passed.
            task_type_ids: (B, T) task ids (ERNIE with ``task_type_vocab_size``); default task 0.
        """
        cache = past_key_values if past_key_values is not None else (KVCache() if use_cache else None)
        if self.decoder is None:
            hidden = self.encode(
                input_ids, attention_mask, token_type_ids, position_ids, cache, task_type_ids
            )
            return self._head(hidden, attention_mask, input_ids, cache)

        memory = encoder_hidden_states
        if memory is None:
            memory = self.encode(input_ids, attention_mask, token_type_ids, task_type_ids=task_type_ids)
        if decoder_input_ids is None:
            if self.config.head == "base":  # encoder-only use (embeddings)
                return ModelOutput(last_hidden_state=memory)
            raise ShapeError("encoder-decoder models need decoder_input_ids (use shift_right(labels))")
        past = cache.length if cache is not None else 0
        x = self.embeddings(decoder_input_ids, past=past)
        hidden = self.decoder(x, decoder_attention_mask, None, cache, memory, attention_mask)
        output = self._head(hidden, decoder_attention_mask, decoder_input_ids, cache)
        output.encoder_last_hidden_state = memory
        return output

    def _head(
        self, hidden: Tensor, attention_mask: Tensor | None, input_ids: Tensor, cache: KVCache | None
    ) -> ModelOutput:
        config, out = self.config, ModelOutput(last_hidden_state=hidden, past_key_values=cache)
        pooled = None
        if self.pooler is not None:
            pooled = self.pooler(pool(hidden, config, attention_mask, input_ids))
            out.pooler_output = pooled
        head = config.head
        if self.lm_head is not None:
            out.logits = self.lm_head(hidden)
        if self.classifier is None:
            return out
        if head == "sequence_classification":
            out.logits = self.classifier(
                pooled if pooled is not None else pool(hidden, config, attention_mask, input_ids)
            )
        elif head == "token_classification":
            out.logits = self.classifier(hidden)
        elif head == "question_answering":
            out.logits = self.classifier(hidden)  # (B, T, 2)
            out.start_logits, out.end_logits = out.logits[..., 0], out.logits[..., 1]
        elif head == "pretraining":
            assert pooled is not None, "the pretraining head needs config.pooler"
            out.seq_relationship_logits = self.classifier(pooled)
        return out


_LM_HEADS = ("causal_lm", "masked_lm", "pretraining", "seq2seq_lm")


def shift_right(labels: Tensor, start_token_id: int, pad_token_id: int) -> Tensor:
    """Decoder inputs for teacher forcing: prepend the start token, drop the last label."""
    shifted = labels.new_full(labels.shape, start_token_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == -100, pad_token_id)


def parameter_bytes(model: nn.Module) -> int:
    """Bytes held by parameters and buffers."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)
