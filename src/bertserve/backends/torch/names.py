"""The engine's tensor names (its signature in config.pbtxt)."""

from __future__ import annotations

INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS = "input_ids", "attention_mask", "token_type_ids"
START_LOGITS, END_LOGITS = "start_logits", "end_logits"
