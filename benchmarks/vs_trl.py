"""trustee_lite vs TRL's GRPOTrainer on the same GRPO work: seconds per step, side by side.

    pip install -e '.[bench]'            # TRL, pinned; never a runtime dependency
    python benchmarks/vs_trl.py [--steps 4] [--prompts 2] [--group 4] [--tokens 48] [--model embedded] [--free-length]

Both sides get the same model (the embedded SmolLM2-135M on a CPU; any local model folder with
--model), the same first-turn policy prompts (a system prompt, the Hermes tool block of 2 tools
drawn from env/tool_library.json, a user query; rendered once by the policy's chat template and
given to TRL as that text), the same group size, sampling (temperature 1.0, top-p 1.0), maximum
completion length, LoRA (rank 8, alpha 16, q_proj and v_proj), learning rate and loss: the
token-mean clipped surrogate, clip 0.2, no KL term. TRL's settings: loss_type "dapo" (token mean
over the batch), scale_rewards "group" (rewards minus the group mean, over the group's std, as
ours), epsilon 0.2, beta 0.0, num_iterations 1, one optimizer step per generation batch, and
gradient checkpointing off on both sides unless --checkpointing (TRL's GRPOConfig turns it on
by default, ours off; left at their defaults, TRL's update pays a second forward).

Every completion is exactly --tokens long on both sides (the end-of-turn tokens are suppressed
while sampling: TRL through generation_kwargs' suppress_tokens, ours through the model's
generation config, which transformers merges into ours), so both train the same number of
sequences and tokens per step; --free-length lets completions end where the model ends them.
(Our recorded sampling log-probs are then those of the suppressed distribution, a little above
the learner's; the work done is the same.)

The reward needs no model and is graded so that groups differ: 1.0 a parseable call of a task
tool with its required arguments, 0.6 without them, 0.3 another parseable call, else a plain
answer's 0.2 x min(1, length / 400 characters).

Prints, per side, the median over the steps after the first (warm-up) of generation, update and
total seconds, generated tokens per second, the sequences and tokens actually trained per step
(ours skips a sequence whose advantage is 0; TRL trains every one) and the step's seconds per
trained token (with --free-length the two sides' completions differ in length), then ours
/ TRL's; checks that both adapters moved.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from batching import QUERIES  # noqa: E402 - the first-turn queries batching.py uses

from trustee_lite import prompts  # noqa: E402
from trustee_lite.config import LoraConfig, PolicyConfig, TrainConfig  # noqa: E402
from trustee_lite.env.chat import PolicyChat  # noqa: E402
from trustee_lite.env.pool.tools import load_pool  # noqa: E402
from trustee_lite.env.toolcalls import parse_turn  # noqa: E402
from trustee_lite.lm import GenerationService, GenRequest, Sampling, build_backend  # noqa: E402
from trustee_lite.train.grpo import Sample, group_advantages  # noqa: E402
from trustee_lite.train.learner import Learner  # noqa: E402

LORA = LoraConfig(rank=8, alpha=16, target_modules=["q_proj", "v_proj"])
LEARNING_RATE = 1e-4


def reward(text: str, tools: list[dict]) -> float:
    calls = [c for c in parse_turn(text).calls if not c.malformed]
    by_name = {t["function"]["name"]: t["function"] for t in tools}
    for call in calls:
        fn = by_name.get(call.name)
        if fn is not None:
            required = fn.get("parameters", {}).get("required", [])
            return 1.0 if all(r in call.arguments for r in required) else 0.6
    if calls:
        return 0.3
    return 0.2 * min(1.0, len(text.strip()) / 400)


def tasks(count: int, seed: int) -> list[tuple[str, list[dict]]]:
    """(query, tools) for each prompt: 2 tools of one category from the built-in library."""
    pool, rng = load_pool(), random.Random(seed)
    return [(QUERIES[i % len(QUERIES)], list(pool.sample(2, rng)[1])) for i in range(count)]


def lora_moved(model) -> bool:
    return any(float(p.detach().abs().sum()) > 0 for n, p in model.named_parameters() if "lora_B" in n)


# -- trustee_lite --------------------------------------------------------------------------------
def run_ours(args, prompt_ids: list[list[int]], work: list[tuple[str, list[dict]]]) -> list[dict]:
    backend = build_backend("transformers", PolicyConfig(model=args.model, batch_size=args.prompts * args.group), "policy")
    train = TrainConfig(learning_rate=LEARNING_RATE, clip_ratio=0.2, kl_coef=0.0, epochs=1, mini_batches=1,
                        micro_batch_size=args.prompts * args.group, warmup_steps=0, max_grad_norm=1.0,
                        gradient_checkpointing=args.checkpointing)
    learner = Learner(backend, LORA, train, temperature=1.0, seed=0)
    if not args.free_length:  # generate() fills what our config leaves unset from the model's
        backend.model.get_base_model().generation_config.suppress_tokens = list(backend.eos_ids)
    steps = []

    async def generate(step: int):
        async with GenerationService(backend, max_batch=args.prompts * args.group, max_wait_s=0.05) as service:
            requests = [GenRequest(prompt_ids=tuple(ids), logprobs=True,
                                   sampling=Sampling(args.tokens, 1.0, 1.0, seed=step * 1000 + p * args.group + g))
                        for p, ids in enumerate(prompt_ids) for g in range(args.group)]
            return await asyncio.gather(*(service.generate(r) for r in requests))

    for step in range(args.steps):
        start = time.perf_counter()
        completions = asyncio.run(generate(step))
        gen_s = time.perf_counter() - start
        samples = []
        for p, ids in enumerate(prompt_ids):
            group = completions[p * args.group:(p + 1) * args.group]
            rewards = [reward(c.text, work[p][1]) for c in group]
            for c, adv in zip(group, group_advantages(rewards)):
                samples.append(Sample(tuple(ids) + tuple(c.token_ids), (0,) * len(ids) + (1,) * len(c.token_ids),
                                      (0.0,) * len(ids) + tuple(c.logprobs), adv))
        stats = learner.update(samples, step + 1)
        trained = [s for s in samples if s.carries_gradient]
        steps.append({"generation": gen_s, "update": stats.seconds, "total": time.perf_counter() - start,
                      "generated": sum(c.num_tokens for c in completions), "sequences": len(trained),
                      "tokens": sum(sum(s.policy_mask) for s in trained)})
    steps[-1]["moved"] = lora_moved(learner.model)
    backend.close()
    return steps


# -- TRL -----------------------------------------------------------------------------------------
def run_trl(args, prompt_texts: list[str], work: list[tuple[str, list[dict]]]) -> list[dict]:
    import datasets
    from peft import LoraConfig as PeftLora
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    backend = build_backend("transformers", PolicyConfig(model=args.model), "policy")  # the same weights, loaded again
    model, tokenizer = backend.model, backend.tokenizer
    tools_of = {text: tools for text, (_, tools) in zip(prompt_texts, work)}
    rows = [{"prompt": text} for text in prompt_texts] * (args.steps * 2)  # enough for every step, in order

    def trl_reward(prompts, completions, **kwargs):
        return [reward(c, tools_of[p]) for p, c in zip(prompts, completions)]

    config = GRPOConfig(
        output_dir=str(Path(args.out) / "trl"), per_device_train_batch_size=args.prompts * args.group,
        num_generations=args.group, max_completion_length=args.tokens, temperature=1.0, top_p=1.0,
        learning_rate=LEARNING_RATE, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0,
        loss_type="dapo", scale_rewards="group", epsilon=0.2, beta=0.0, num_iterations=1,
        gradient_accumulation_steps=1, max_steps=args.steps, logging_steps=1, save_strategy="no",
        report_to="none", use_cpu=True, bf16=False, seed=0, shuffle_dataset=False, disable_tqdm=True,
        gradient_checkpointing=args.checkpointing,  # TRL's default is on, ours off: the same on both sides
        generation_kwargs=None if args.free_length else {"suppress_tokens": list(backend.eos_ids)},
    )
    steps, marks = [], {}

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            marks["start"], marks["gen"], marks["tokens"], marks["seqs"] = time.perf_counter(), 0.0, 0, 0

        def on_step_end(self, *a, **k):
            total = time.perf_counter() - marks["start"]
            steps.append({"generation": marks["gen"], "update": total - marks["gen"], "total": total,
                          "generated": marks["tokens"], "sequences": marks["seqs"], "tokens": marks["tokens"]})

    trainer = GRPOTrainer(model=model, reward_funcs=trl_reward, args=config, processing_class=tokenizer,
                          train_dataset=datasets.Dataset.from_list(rows), callbacks=[Timer()],
                          peft_config=PeftLora(r=LORA.rank, lora_alpha=LORA.alpha, lora_dropout=0.0,
                                               target_modules=list(LORA.target_modules), task_type="CAUSAL_LM"))
    inner = trainer._generate_and_score_completions

    def timed(*a, **k):  # generation and scoring of one batch: the rest of the step is the update
        start = time.perf_counter()
        out = inner(*a, **k)
        marks["gen"] += time.perf_counter() - start
        mask = out["completion_mask"]
        marks["tokens"] += int(mask.sum())
        marks["seqs"] += int(mask.shape[0])
        return out

    trainer._generate_and_score_completions = timed
    trainer.train()
    steps[-1]["moved"] = lora_moved(trainer.model)
    return steps


def summary(name: str, steps: list[dict]) -> dict:
    measured = steps[1:] or steps
    med = {k: statistics.median(s[k] for s in measured) for k in ("generation", "update", "total", "sequences", "tokens")}
    med["tok_s"] = statistics.median(s["generated"] / s["generation"] for s in measured if s["generation"] > 0)
    med["s_per_token"] = statistics.median(s["total"] / s["tokens"] for s in measured if s["tokens"])
    print(f"{name:<13} {med['generation']:>8.2f} {med['update']:>8.2f} {med['total']:>8.2f} {med['tok_s']:>8.1f} "
          f"{med['sequences']:>6.0f} {med['tokens']:>7.0f} {med['s_per_token']:>9.3f}   adapter moved: {steps[-1]['moved']}")
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="steps per side; the first is a warm-up")
    parser.add_argument("--prompts", type=int, default=2, help="prompts (groups) per step")
    parser.add_argument("--group", type=int, default=4, help="completions per prompt")
    parser.add_argument("--tokens", type=int, default=48, help="maximum completion length")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--checkpointing", action="store_true",
                        help="gradient checkpointing on both sides (default: off on both; TRL's own default is on)")
    parser.add_argument("--free-length", action="store_true",
                        help="let completions end at the end-of-turn token (then the tokens trained differ)")
    parser.add_argument("--out", default="/tmp/vs_trl")
    args = parser.parse_args()

    probe = build_backend("transformers", PolicyConfig(model=args.model), "policy")
    chat = PolicyChat(probe.tokenizer)
    work = tasks(args.prompts, seed=0)
    prompt_ids = [chat.first_prompt(prompts.policy_system_prompt(0), query, tools) for query, tools in work]
    prompt_texts = [probe.tokenizer.decode(ids) for ids in prompt_ids]
    same = all(probe.tokenizer(t, add_special_tokens=False)["input_ids"] == ids for t, ids in zip(prompt_texts, prompt_ids))
    probe.close()
    print(f"{args.prompts} prompts x {args.group} completions, {'<=' if args.free_length else 'exactly'} "
          f"{args.tokens} new tokens, prompts of "
          f"{', '.join(str(len(ids)) for ids in prompt_ids)} tokens (TRL re-tokenizes the same ids: {same}); "
          f"{args.steps} steps a side, medians over the last {max(1, args.steps - 1)}", flush=True)
    trl_steps = run_trl(args, prompt_texts, work)
    ours_steps = run_ours(args, prompt_ids, work)
    print(f"{'side':<13} {'gen s':>8} {'update s':>8} {'total s':>8} {'tok/s':>8} {'seqs':>6} {'tokens':>7} {'s/token':>9}")
    ours = summary("trustee_lite", ours_steps)
    trl = summary("TRL", trl_steps)
    print(f"ours / TRL: total {ours['total'] / trl['total']:.2f}x, generation {ours['generation'] / trl['generation']:.2f}x, "
          f"update {ours['update'] / trl['update']:.2f}x, per trained token {ours['s_per_token'] / trl['s_per_token']:.2f}x "
          "(target: total <= 0.67x)")


if __name__ == "__main__":
    main()
