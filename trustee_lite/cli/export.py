"""`export RUN_OR_ADAPTER --to merged|gguf-lora|gguf [--out DIR]`: a trained policy as files other
tools load, written whole or not at all."""

from __future__ import annotations

from trustee_lite.cli import add_db

HELP = "write a trained policy for other tools: a merged transformers folder, or a GGUF LoRA for llama.cpp and Ollama"


def add_arguments(parser) -> None:
    parser.add_argument("target", metavar="RUN_OR_ADAPTER",
                        help="a training run's id or name in the database, or an adapter folder a run wrote")
    parser.add_argument("--to", choices=("merged", "gguf-lora", "gguf"), required=True,
                        help="merged: the base with the adapter merged in (transformers, vLLM); gguf-lora: the adapter "
                             "as a GGUF LoRA with an Ollama Modelfile (llama.cpp, Ollama); gguf: the merged model as "
                             "one quantised GGUF file (LM Studio, Ollama)")
    parser.add_argument("--quant", choices=("q8_0", "q4_k_m"), default="q8_0", help="gguf: the quantisation (default: q8_0)")
    parser.add_argument("--out", default=None, help="the folder to write (default: OUT/export-TO beside the run's adapter)")
    parser.add_argument("--base-gguf", default=None, metavar="FILE",
                        help="gguf-lora: the base model's GGUF file, for the Modelfile's FROM (default: the policy's own "
                             "GGUF file when it was loaded from one)")
    add_db(parser, "the run record")


def run(args) -> int:
    import sys
    from pathlib import Path

    from trustee_lite.cli import print_json
    from trustee_lite.errors import UserError
    from trustee_lite.export.gguf_file import export_gguf
    from trustee_lite.export.gguf_lora import export_gguf_lora
    from trustee_lite.export.merged import export_merged
    from trustee_lite.export.source import find
    from trustee_lite.export.staging import moved, staged
    from trustee_lite.progress import doing

    source = find(args.target, args.db)
    out = Path(args.out) if args.out else source.out_dir / f"export-{args.to}"
    if out.exists() and any(out.iterdir()):
        raise UserError("--out", f"{out} is not empty: give a new folder (nothing is overwritten)")
    if args.base_gguf is not None and not Path(args.base_gguf).is_file():
        raise UserError("--base-gguf", f"file not found: {args.base_gguf}")
    doing(f"trustee_lite export {args.target}: {args.to}", quiet=True)
    step = source.step if source.step is not None else "?"
    with staged(out) as staging:
        if args.to == "merged":
            result = export_merged(source, staging)
        elif args.to == "gguf":
            result = export_gguf(source, staging, args.quant)
        else:
            result = export_gguf_lora(source, staging, str(Path(args.base_gguf).resolve()) if args.base_gguf else None)
    result = moved(result, staging, out)
    if args.to == "merged":
        print(f"wrote {out} ({result['weights_mb']:,} MB of {result['dtype']} weights, run {source.run_id} step {step}); "
              f"load it with AutoModelForCausalLM.from_pretrained('{out}') or serve it: vllm serve {out}", file=sys.stderr)
    elif args.to == "gguf":
        print(f"wrote {result['file']} ({result['file_mb']:,} MB, {args.quant}, run {source.run_id} step {step}), a "
              f"Modelfile and README.txt; run it: llama-cli -m {result['file']}", file=sys.stderr)
    else:
        print(f"wrote {result['adapter_file']} ({result['adapter_mb']} MB, run {source.run_id} step {step}), a Modelfile "
              f"and README.txt; run it: ollama create NAME -f {out / 'Modelfile'}", file=sys.stderr)
    print_json(result, args.db)
    return 0

