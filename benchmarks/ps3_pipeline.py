"""`curate run pipelines/ps3.yaml` end to end on a GPU machine: Ray Data, the stages as GPU actors.

    python benchmarks/ps3_pipeline.py --workdir /tmp/ps3 --count 16     # GPU machine with Ray installed
    python benchmarks/ps3_pipeline.py --workdir /tmp/ps3 --images varied --count 300 --language-models random --ocr

With ``--language-models random`` every stage runs: masks, selection, captions by a random
Qwen2-VL-7B and questions by a random Llama-3.1-8B (transformers backends, checkpoints written to the
workdir first), OCR for pages; the stages share the one GPU by fractional ``num_gpus``
(``--gpu-shares``). Random captions are noise: caption hygiene is relaxed so that they reach the
question stage, whose cost is what is measured. The GPU's busy share is sampled with NVML during
the first run, its summary so far kept in WORKDIR/OUT-NAME_gpu.json every 30 s. ``--images varied``
draws ``curate.samples.varied_image`` (a size per image).

Generates the offline sample set (rendered pages and scikit-image photos, 1K-4K), saves a random
EfficientViT-SAM-XL1 made confident as the checkpoint the config points at (no real checkpoint can be
downloaded here: timings are real, boxes are not meaningful), and runs the CLI exactly as a user does on
pipelines/ps3.yaml with only the stages that need MLLM/LLM weights switched off (none can be had here;
document OCR is optional with --ocr). Then runs the same command again, which must resume with nothing to do, and
checks the manifest's counts (read = written + quarantined) and the index. Writes ps3_pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gpu_sampling import GpuSampler  # noqa: E402
from curate.amg.build import build_efficientvit_sam  # noqa: E402
from curate.io.layout import OutputLayout  # noqa: E402
from curate.io.manifest import read_manifest  # noqa: E402
from curate.io.progress import stage_series  # noqa: E402
from curate.samples import generate_samples, generate_varied_samples  # noqa: E402
from curate.testing.tiny_sam import make_confident  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VLLM_ONLY = ("concurrency", "tensor_parallel_size")  # ps3.yaml's vLLM engine keys, dropped for hf


class Stopped(Exception):
    """This script got SIGTERM (``timeout``) or Ctrl-C while its run went on."""


def run_cli(args: list[str], log: Path, deadline: float | None = None) -> tuple[float, str]:
    """Run the CLI with its output going to ``log`` as it comes (a run cut short still shows how far
    it got). Returns (seconds, how it ended): ``finished``; ``deadline``, past ``deadline`` seconds,
    when it got Ctrl-C and committed its complete samples; or ``stopped``, when this script got SIGTERM
    (an outer ``timeout``) or Ctrl-C: the run is stopped the same way, so the summary of what it did is
    still written. The CLI runs in a process group of its own (Ctrl-C reaches its Ray workers too),
    which is stopped with this script: left running, its Ray actors kept the GPU busy under the next
    measurement."""

    def stop(signum, frame):
        raise Stopped(f"signal {signum}")

    start = time.perf_counter()
    previous = signal.signal(signal.SIGTERM, stop)
    how = "finished"
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "curate.cli", *args], cwd=REPO, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            how = "deadline"
        except (Stopped, KeyboardInterrupt):
            how = "stopped"
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the stopping short
            stop_group(proc, grace_s=120)  # nothing to do if the run finished
            signal.signal(signal.SIGTERM, previous)
    seconds = time.perf_counter() - start
    print(log.read_text()[-4000:])
    if proc.returncode not in (0, 130) and how == "finished":
        raise SystemExit(f"curate {' '.join(args)} exited {proc.returncode} (log: {log})")
    return seconds, how


def stop_group(proc: subprocess.Popen, grace_s: float) -> None:
    """Ctrl-C to ``proc``'s process group (the run commits what is complete), then, after it exits or
    ``grace_s`` seconds, SIGKILL to what is left of the group; nothing if ``proc`` has exited."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group outlives its leader while any member runs
    except ProcessLookupError:
        pass
    proc.wait()


def pipeline_config(path: Path, ocr: bool, language_models: Path | None, shares: list[float]) -> Path:
    """pipelines/ps3.yaml with the language-model stages switched off (recorded as skipped in the
    manifest) or, given ``language_models`` (a folder with random ``qwen2-vl-7b`` and ``llama-8b``
    checkpoints), on the transformers backends; masks unchanged."""
    cfg = yaml.safe_load((REPO / "pipelines" / "ps3.yaml").read_text())
    if not ocr:
        cfg["caption"]["document"] = {"backend": "none", "reason": "rapidocr is not installed on this machine"}
    if language_models is None:
        cfg["caption"]["natural"] = {"backend": "none", "reason": "no MLLM weights on this machine"}
        cfg["retarget"] = {"backend": "none"}
    else:
        masks, captions, questions = shares
        cfg["masks"]["natural"]["num_gpus"] = masks
        natural = {k: v for k, v in cfg["caption"]["natural"].items() if k not in VLLM_ONLY}
        cfg["caption"]["natural"] = natural
        natural.update(backend="hf", model=str(language_models / "qwen2-vl-7b"), num_gpus=captions,
                       # calls of ~180 images: 3.5-3.7 images/s while the GPU worked against 3.0-3.1
                       # with calls of 64 (batch_size 256), benchmarks/RESULTS.md
                       max_new_tokens=128, batch_size=720,
                       # random text: let it through so the question stage gets its work
                       hygiene={"keep_unfinished": True, "min_words": 0, "max_repeated_ngram_frac": 1.0,
                                "max_sentence_repeats": 1000, "min_latin_letter_frac": None})
        retarget = {k: v for k, v in cfg["retarget"].items() if k not in VLLM_ONLY}
        retarget.update(backend="hf", model=str(language_models / "llama-8b"), num_gpus=questions,
                        max_new_tokens=48, batch_size=256)
        cfg["retarget"] = retarget
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def list_copies(images: Path, folder: Path, copies: int) -> Path:
    """``folder`` holding each file of ``images`` ``copies`` times, named ``cK-NAME``, each copy with a
    few bytes of its own after the image's end (decoders stop before them): the writers quarantine
    inputs with the same bytes as duplicates, and these must all be written."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in images.iterdir() if p.is_file()):
        data = path.read_bytes()
        for k in range(copies):
            copy = folder / f"c{k}-{path.name}"
            if not copy.exists():
                copy.write_bytes(data + f"copy {k}".encode())
    return folder


def save_random_language_models(folder: Path, tiny: bool) -> Path:
    """Random Qwen2-VL-7B and Llama-3.1-8B checkpoints (bf16; toy-sized when ``tiny``) written once
    to ``folder``, under the names pipeline_config reads."""
    from curate.testing.random_models import save_random_llama, save_random_qwen2_vl

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if not (folder / "qwen2-vl-7b" / "config.json").exists():
        save_random_qwen2_vl(folder / "qwen2-vl-7b", size="tiny" if tiny else "7b", device=device, dtype=dtype)
    if not (folder / "llama-8b" / "config.json").exists():
        save_random_llama(folder / "llama-8b", size="tiny" if tiny else "8b", device=device, dtype=dtype)
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return folder


def stage_rates(series: dict[str, list[tuple[int, int]]], total: int, share: float = 0.95) -> dict:
    """Per stage: when its first rows came out, when ``share`` of ``total`` had, and the rows per
    second in between: a stage's pace once it runs, without the run's start and its last batches
    (a 300-image run is mostly filling and draining a plan of 64-image batches)."""
    out = {}
    for stage, points in series.items():
        started = next(((t, n) for t, n in points if n > 0), None)
        done = next(((t, n) for t, n in points if n >= share * total), None)
        out[stage] = {"first_rows_s": started[0] if started else None, "most_rows_s": done[0] if done else None,
                      "rows_per_s": (round((done[1] - started[1]) / (done[0] - started[0]), 2)
                                     if started and done and done[0] > started[0] else None)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--count", type=int, default=16, help="sample images")
    parser.add_argument("--copies", type=int, default=1, metavar="K",
                        help="list the COUNT images K times under new names, each copy's bytes made its own: a "
                             "run of COUNT x K inputs (sizes repeat every COUNT) without generating them all, for "
                             "runs long enough to show the steady state")
    parser.add_argument("--images", choices=["samples", "varied"], default="samples",
                        help="samples: curate samples (half pages, half photos); varied: a size per image")
    parser.add_argument("--masks", choices=["realistic", "noise"], default="realistic",
                        help="realistic: stand_in_masks (smooth regions, boxes get selected); noise: make_confident")
    parser.add_argument("--language-models", choices=["none", "random", "tiny"], default="none",
                        help="random: Qwen2-VL-7B and Llama-3.1-8B shapes; tiny: toy sizes (CPU smoke run)")
    parser.add_argument("--gpu-shares", default="0.6,0.2,0.2", help="num_gpus of masks, captions, questions")
    parser.add_argument("--deadline", type=float, help="seconds; then Ctrl-C: the run commits what is complete and "
                                                       "the rate is taken from that (no resume check)")
    parser.add_argument("--model", default="xl1")
    parser.add_argument("--ocr", action="store_true", help="caption documents with RapidOCR (needs rapidocr)")
    parser.add_argument("--result", type=Path, help="where to write the JSON summary (default: WORKDIR)")
    parser.add_argument("--out-name", default="out",
                        help="the corpus folder in WORKDIR: one per variant when several runs share the workdir's "
                             "images and checkpoints (e.g. --set ray.actors_per_gpu=2)")
    parser.add_argument("--warmup", type=int, default=0, metavar="N",
                        help="first run the same command over N of the images into an output of its own: kernels "
                             "compiled on first sight (Triton, Inductor; caches on disk) are then not in the "
                             "measured run, which still loads its models")
    parser.add_argument("--no-resume", action="store_true", help="skip the second run that must find nothing to do")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        help="extra config override, e.g. masks.natural.points_per_side=4 for a CPU smoke run")
    args = parser.parse_args()
    generated, out = args.workdir / "images", args.workdir / args.out_name
    images = generated
    args.workdir.mkdir(parents=True, exist_ok=True)
    # a later variant in the same workdir reuses the images
    if not generated.is_dir() or len(list(generated.iterdir())) != args.count:
        if args.images == "varied":
            generate_varied_samples(generated, count=args.count, workers=os.cpu_count() or 1)
        else:
            generate_samples(generated, count=args.count)
    if args.copies > 1:
        images = list_copies(generated, args.workdir / f"images_x{args.copies}", args.copies)
    total = args.count * args.copies
    checkpoint = args.workdir / f"random_{args.masks}_evit_{args.model}.pt"
    torch.manual_seed(0)
    model = build_efficientvit_sam(args.model)
    torch.save((model if args.masks == "realistic" else make_confident(model)).net.state_dict(), checkpoint)
    language_models = (None if args.language_models == "none" else
                       save_random_language_models(args.workdir / "models", tiny=args.language_models == "tiny"))
    shares = [float(x) for x in args.gpu_shares.split(",")]
    pipeline = pipeline_config(args.workdir / "ps3.yaml", args.ocr, language_models, shares)
    command = ["run", str(pipeline), "-i", str(images), "-o", str(out),
               "--set", f"masks.natural.checkpoint={checkpoint}", "--set", f"masks.natural.model={args.model}",
               "--set", "ingest.min_side=256", "--set", f"masks.natural.stand_in_masks={args.masks == 'realistic'}",
               "--set", "output.shard_max_seconds=60",  # commits come steadily: a cut-short run keeps its work
               "--set", "ray.progress_log_every_s=5"]  # the log shows each stage's rows over time
    for override in args.overrides:
        command += ["--set", override]
    warmup_s = None
    if args.warmup:
        few = args.workdir / "warmup_images"
        few.mkdir(exist_ok=True)
        for path in sorted(p for p in generated.rglob("*") if p.is_file())[:args.warmup]:
            if not (few / path.name).exists():
                (few / path.name).symlink_to(path)
        warm = [few if part == str(images) else args.workdir / f"{args.out_name}_warmup" if part == str(out) else part
                for part in command]
        warmup_s = round(run_cli([str(part) for part in warm], args.workdir / f"{args.out_name}_warmup.log")[0], 1)
    # the GPU's figures so far, kept on disk as the run goes: a machine lost mid-run leaves them
    with GpuSampler(save_to=args.workdir / f"{args.out_name}_gpu.json") as gpu:
        first_s, how = run_cli(command, args.workdir / f"{args.out_name}_first_run.log", args.deadline)
    busy = gpu.summary()
    manifest = read_manifest(OutputLayout(out))
    if manifest is None:  # cut short before its first commit
        (args.result or args.workdir / "ps3_pipeline.json").write_text(json.dumps(
            {"first_run_s": round(first_s, 1), "ended": how, "committed": 0,
             "gpu": busy}, indent=2))
        log = args.workdir / f"{args.out_name}_first_run.log"
        raise SystemExit(f"nothing was committed in {first_s:.0f} s (log: {log})")
    c = manifest.counts
    stage_seconds = {k: v.seconds for k, v in manifest.stages.items()}
    result = {
        "hardware": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "command": "curate " + " ".join(command), "gpu_shares": dict(zip(["masks", "captions", "questions"], shares)),
        "images": total, "copies": args.copies, "warmup_images": args.warmup, "warmup_run_s": warmup_s,
        "first_run_s": round(first_s, 1), "ended": how,  # finished, deadline, stopped (SIGTERM/Ctrl-C)
        "interrupted_at_deadline": how == "deadline",
        "images_per_s_whole_command": round(c.written / first_s, 3),
        "gpu": busy,
        "images_per_s_while_gpu_worked": (round(c.written / busy["working_span_s"], 3)
                                          if busy.get("working_span_s") else None),
        "stage_time_share": {k: round(v / max(1e-9, sum(stage_seconds.values())), 3) for k, v in stage_seconds.items()},
        "stage_pace": stage_rates(stage_series(
            (args.workdir / f"{args.out_name}_first_run.log").read_text(errors="replace"), "images"), total),
        "counts": c.model_dump(), "counts_add_up": c.read == c.written + c.quarantined,
        "stages": {k: v.model_dump() for k, v in manifest.stages.items()},
    }
    if how == "finished" and not args.no_resume:  # the same command again must find nothing to do
        result["resume_run_s"] = round(run_cli(command, args.workdir / f"{args.out_name}_resume_run.log")[0], 1)
        again = read_manifest(OutputLayout(out))
        result["index_rows"] = pq.read_metadata(OutputLayout(out).index).num_rows
        result["shards"] = len(manifest.shards)
        result["resume_wrote_nothing_new"] = (again.counts.written == c.written
                                              and len(again.shards) == len(manifest.shards))
    (args.result or args.workdir / "ps3_pipeline.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "stages"}, indent=1))
    if not result["counts_add_up"] or ("resume_run_s" in result and not (result["resume_wrote_nothing_new"]
                                                                         and result["index_rows"] == c.written)):
        raise SystemExit("counts do not add up, or the resumed run wrote again")


if __name__ == "__main__":
    main()
