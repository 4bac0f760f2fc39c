"""Question retargeting through transformers (Llama-3.1-Instruct class): batched chat generation."""

from __future__ import annotations

from curate.backends.hf_generate import (
    WARM_UP_BATCHES,
    compiles_decoding,
    generate_in_batches,
    generation_kwargs,
    pick_device,
    prepare_for_generation,
    resolve_dtype,
)
from curate.backends.shared_prefix import SharedPrefix
from curate.backends.types import Generation
from curate.io.fs import local_if_there
from curate.ops.prompts import question_messages


def caption_tokens(caption: str) -> int:
    """Expected prompt tokens: about 4 characters a token, plus the system prompt and chat template."""
    return len(caption) // 4 + 96


class HfQuestionWriter:
    def __init__(self, cfg, model=None, tokenizer=None, share_prefix: bool = True, grouped_decode: bool = True):
        """Loads ``cfg.model`` unless a model and tokenizer are given. ``share_prefix``: run the
        prompts' common start (system prompt and instruction) once per batch; ``grouped_decode``: with
        sdpa, decode without copying the KV cache per query head. The text is the same either way
        (they are off only to measure them)."""
        self.cfg = cfg
        loaded = model is None
        if loaded:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            device = pick_device()
            source = local_if_there(cfg.model)  # a relative folder: the driver's, on every node
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=resolve_dtype(cfg.dtype, device), attn_implementation=cfg.attn_implementation,
            ).to(device).eval()
        prepare_for_generation(model, cfg, grouped_decode)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model, self.tokenizer = model, tokenizer
        self.gen_kwargs = generation_kwargs(cfg, tokenizer.pad_token_id)
        self.shared = SharedPrefix(model) if share_prefix else None
        if loaded:
            self.warm_up()

    def warm_up(self) -> None:
        """Compile the decoding step now, when generate would compile it (``compiles_decoding``), rather
        than in the stage's first call."""
        if compiles_decoding(self.model, self.gen_kwargs):
            for rows in WARM_UP_BATCHES:
                self.ask([f"Region {i}: " + "a red bus beside a brick wall, " * (i + 1) for i in range(rows)],
                         max_new_tokens=4)

    def describe(self) -> str:
        return f"hf:{self.cfg.model}"

    def ask(self, captions: list[str], **extra) -> list[Generation]:
        """One raw generation per caption, in batches of ``batch_size`` (by caption length)."""
        return generate_in_batches(self.model, self.tokenizer, captions, self.cfg, caption_tokens, self._inputs,
                                   {**self.gen_kwargs, **extra}, self.shared)

    def _inputs(self, captions: list[str]) -> dict:
        texts = [self.tokenizer.apply_chat_template(question_messages(c, self.cfg), add_generation_prompt=True,
                                                    tokenize=False) for c in captions]
        # The chat template already wrote the BOS token.
        return dict(self.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False))
