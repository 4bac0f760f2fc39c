"""Retarget stage: each captioned region's caption becomes a question about that region.

The ``hf`` backend runs here, batching every captioned region of a block; with ``vllm`` the same
requests run in ray.data.llm (``question_requests`` / ``merge_questions``). Rejected questions keep
their reason in the region's ``question_skipped``.
"""

from __future__ import annotations

import json
from collections import Counter

from curate.config import PipelineConfig, RetargetConfig
from curate.ops.questions import validate_question
from curate.rows import add_events, set_model


def record_questions(regions: list[dict], answers: list[tuple[str, int, bool] | None], cfg: RetargetConfig,
                     model: str) -> Counter:
    """Validate answers (aligned with regions; None where no question was asked) into the regions."""
    outcomes = Counter()
    for region, answer in zip(regions, answers, strict=True):
        if answer is None:
            continue
        text, tokens, finished = answer
        outcomes["prompts"] += 1
        outcomes["generated_tokens"] += tokens
        result = validate_question(text, region["caption"], cfg.rules)
        if result.question and finished:
            region.update(question=result.question, question_model=model)
            outcomes["questions"] += 1
        else:
            reason, detail = ((result.reason, result.detail) if not result.question
                              else ("unfinished", "hit max_new_tokens"))
            region["question_skipped"] = f"question dropped ({reason}): {detail}"
            outcomes[f"dropped.{reason}"] += 1
    return outcomes


class RetargetStage:
    name = "retarget"

    def __init__(self, cfg: PipelineConfig):
        from curate import backends

        self.cfg = cfg.retarget
        self.writer = backends.build(self.cfg)

    def process(self, rows: list[dict]) -> list[dict]:
        todo = []
        for row in rows:
            if row["status"] != "ok":
                continue
            regions = json.loads(row["regions"] or "[]")
            asked = [i for i, r in enumerate(regions) if r.get("caption")]
            if asked:
                todo.append((row, regions, asked))
        captions = [regions[i]["caption"] for _, regions, asked in todo for i in asked]
        generations = iter(self.writer.ask(captions)) if captions else iter(())
        model = self.writer.describe()
        for row, regions, asked in todo:
            answers: list = [None] * len(regions)
            for i in asked:
                gen = next(generations)
                answers[i] = (gen.text, gen.tokens, gen.finished)
            outcomes = record_questions(regions, answers, self.cfg, model)
            row["regions"] = json.dumps(regions)
            set_model(row, "retarget", model)
            add_events(row, self.name, outcomes)
        return rows


# ---------------------------------------------------------------- vllm (ray.data.llm) half


def question_request(caption: str | None, cfg: RetargetConfig) -> tuple[list[dict], dict]:
    """(messages, sampling params) for one region: a 1-token carrier when it has no caption."""
    from curate.backends.llm_vllm import CARRIER_PROMPT, sampling_params
    from curate.ops.prompts import question_messages

    if not caption:
        return [{"role": "user", "content": CARRIER_PROMPT}], {"max_tokens": 1, "temperature": 0.0}
    return question_messages(caption, cfg), sampling_params(cfg)


def question_requests(row: dict, cfg: RetargetConfig) -> list[dict]:
    """Request rows for an image row whose captions are final: one per region, else one carrier."""
    from curate.backends.llm_vllm import carrier_row, request_row

    regions = json.loads(row["regions"] or "[]")
    if row["status"] != "ok" or not any(r.get("caption") for r in regions):
        return [carrier_row(row["uri"], row)]
    out = []
    for i, region in enumerate(regions):
        messages, params = question_request(region.get("caption"), cfg)
        out.append(request_row(row["uri"], i, len(regions), messages, params, row if i == 0 else None))
    return out


def merge_questions(row: dict, answers: list[tuple[str, int, bool]], cfg: RetargetConfig) -> dict:
    if not answers:
        return row
    regions = json.loads(row["regions"])
    aligned = [a if r.get("caption") else None for r, a in zip(regions, answers, strict=True)]
    model = f"vllm:{cfg.model}"
    outcomes = record_questions(regions, aligned, cfg, model)
    row["regions"] = json.dumps(regions)
    set_model(row, "retarget", model)
    add_events(row, "retarget", outcomes)
    return row


def chain_question_request(request: dict, caption_cfg, cfg: RetargetConfig) -> dict:
    """Turn an answered vLLM caption request into its question request (same row, next step)."""
    from curate.ops.hygiene import clean_caption

    if not request["request_total"]:
        return request  # an image-level carrier stays a carrier
    text, _, finished = json.loads(request["answers"])[-1]
    caption = clean_caption(text, finished, caption_cfg.hygiene).text
    messages, params = question_request(caption, cfg)
    return {**request, "request_messages": json.dumps(messages), "request_sampling": json.dumps(params)}
