"""The learner: a PEFT LoRA adapter on the policy model, trained with GRPO's clipped objective.

The adapter sits on the generation backend's own model, so rollouts always use the current
policy. The KL reference is the same model with the adapter switched off: no second copy.
Every method here is blocking and runs in the policy's generation worker thread, so training
never overlaps a generation on the same weights.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
import warnings
from pathlib import Path

from trustee_lite import stopping
from trustee_lite.config import LoraConfig, TrainConfig
from trustee_lite.metrics import mean
from trustee_lite.records import UpdateStats
from trustee_lite.train.grpo import Sample, clipped_surrogate, kl_low_variance


class Learner:
    def __init__(self, backend, lora: LoraConfig, train: TrainConfig, temperature: float, seed: int):
        import torch

        self.backend = backend
        self.train_cfg = train
        self.temperature = temperature if temperature > 0 else 1.0
        self.seed = seed
        # The backend puts the LoRA adapter on the model it serves, so rollouts always use the
        # current policy; the learner trains that adapter.
        model = self.model = backend.attach_lora(lora, train.gradient_checkpointing)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=train.learning_rate, betas=(train.adam_beta1, train.adam_beta2),
            weight_decay=train.weight_decay,
        )
        warmup = train.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / (warmup + 1)))

    @property
    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.params)

    # -- one GRPO update ----------------------------------------------------------------------
    def update(self, samples: list[Sample], step: int) -> UpdateStats:
        """Epochs x mini-batches of optimizer steps over one training step's samples."""
        start = time.perf_counter()
        cfg = self.train_cfg
        total = {"loss": 0.0, "pg": 0.0, "kl": 0.0, "clipped": 0, "tokens": 0, "norms": [], "steps": 0}
        rng = random.Random(f"{self.seed}:{step}")
        self._set_mode(True)
        try:
            for _ in range(cfg.epochs):
                order = list(samples)
                rng.shuffle(order)
                for mini in _mini_batches(order, cfg.mini_batches):
                    self._optimizer_step(mini, total)
        finally:
            self._set_mode(False)
            self.optimizer.zero_grad(set_to_none=True)
        n = total["steps"]
        tokens = total["tokens"]
        return UpdateStats(
            loss=total["loss"] / n if n else None, pg_loss=total["pg"] / n if n else None,
            kl=total["kl"] / n if n and cfg.kl_coef > 0 else None,
            grad_norm=mean(total["norms"]),
            learning_rate=self.scheduler.get_last_lr()[0],
            clip_fraction=total["clipped"] / tokens if tokens else None,
            policy_tokens=sum(sum(s.policy_mask) for s in samples), samples=len(samples),
            optimizer_steps=n, seconds=time.perf_counter() - start,
        )

    def _set_mode(self, training: bool) -> None:
        self.backend.set_mode(training)  # Unsloth has a training and an inference path
        self.model.train(training)

    def _optimizer_step(self, mini: list[Sample], total: dict) -> None:
        import torch

        cfg = self.train_cfg
        normalizer = sum(sum(s.policy_mask[1:]) for s in mini)
        if normalizer == 0:
            return
        # A zero advantage contributes no policy gradient; without a KL term it needs no forward.
        active = [s for s in mini if s.carries_gradient or cfg.kl_coef > 0]
        if not active:
            return
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = pg_sum = kl_sum = 0.0
        device = self.model.get_input_embeddings().weight.device
        for micro in _chunks(active, cfg.micro_batch_size):
            stopping.check()  # stopped now: the adapter stays as the last committed step left it
            ids, attention, mask, old, adv = (t.to(device) for t in _pad(micro))
            # Logits only where some row of the micro-batch has a policy token: the prompt, tool
            # results and user turns (most of a long episode) never meet the vocabulary-wide
            # log-softmax, which dominates training memory (check's estimate).
            keep = mask.any(dim=0).nonzero().squeeze(1)
            mask, old, adv = mask[:, keep], old[:, keep], adv[:, keep]
            logp = self._logprobs(ids, attention, keep)
            pg, clipped = clipped_surrogate(logp, old, adv, mask, cfg.clip_ratio, normalizer)
            loss = pg
            if cfg.kl_coef > 0:
                with torch.no_grad(), self.model.disable_adapter():
                    ref = self._logprobs(ids, attention, keep)
                kl = kl_low_variance(logp, ref, mask, normalizer)
                loss = loss + cfg.kl_coef * kl
                kl_sum += kl.item()
            loss.backward()
            loss_sum += loss.item()
            pg_sum += pg.item()
            total["clipped"] += int(clipped.item())
        norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        total["loss"] += loss_sum
        total["pg"] += pg_sum
        total["kl"] += kl_sum
        total["tokens"] += normalizer
        total["norms"].append(float(norm))
        total["steps"] += 1

    def _logprobs(self, ids, attention, positions=None):
        """Log-probs (at the sampling temperature) of the tokens after `positions` (default: every
        position but the last, i.e. tokens 1..L-1) given their prefixes: (B, len(positions))."""
        import torch

        if positions is None:
            positions = torch.arange(ids.shape[1] - 1, device=ids.device)
        if not self.backend.selective_logits:
            logits = self.model(input_ids=ids, attention_mask=attention, use_cache=False).logits[:, positions]
        else:
            logits = self.model(input_ids=ids, attention_mask=attention, use_cache=False, logits_to_keep=positions).logits
        logp = torch.log_softmax(logits.float() / self.temperature, dim=-1)
        return logp.gather(-1, ids[:, positions + 1, None]).squeeze(-1)

    # -- checkpoints --------------------------------------------------------------------------
    def save(self, folder: Path, state: dict) -> None:
        """Write adapter (PEFT layout), optimizer and RNG state, and `state` atomically to folder."""
        import torch

        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with warnings.catch_warnings():  # PEFT warns that a GGUF folder has no config.json
            warnings.simplefilter("ignore")
            self.model.save_pretrained(tmp)
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state()}, tmp / "trainer.pt")
        (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
        for file in tmp.iterdir():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)

    def load(self, folder: Path) -> dict:
        """Restore adapter weights, optimizer and RNG state from a checkpoint; return its state."""
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        folder = Path(folder)
        set_peft_model_state_dict(self.model, load_file(str(folder / "adapter_model.safetensors")))
        self.backend.weights_changed()  # keys and values cached under the old weights go
        trainer = torch.load(folder / "trainer.pt", weights_only=True)
        self.optimizer.load_state_dict(trainer["optimizer"])
        self.scheduler.load_state_dict(trainer["scheduler"])
        torch.set_rng_state(trainer["torch_rng"])
        return json.loads((folder / "state.json").read_text(encoding="utf-8"))


def _mini_batches(items: list, parts: int) -> list[list]:
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        out.append(items[start:end])
        start = end
    return [p for p in out if p]


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i: i + size]


def _pad(samples: list[Sample]):
    """Right-padded tensors for a micro-batch, shifted so position t scores token t + 1."""
    import torch

    width = max(len(s.token_ids) for s in samples)
    n = len(samples)
    ids = torch.zeros((n, width), dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, width - 1))
    old = torch.zeros((n, width - 1))
    adv = torch.zeros((n, width - 1))
    for row, s in enumerate(samples):
        length = len(s.token_ids)
        ids[row, :length] = torch.tensor(s.token_ids)
        attention[row, :length] = 1
        mask[row, : length - 1] = torch.tensor(s.policy_mask[1:], dtype=torch.float)
        old[row, : length - 1] = torch.tensor(s.old_logprobs[1:], dtype=torch.float)
        adv[row, : length - 1] = torch.tensor(s.token_advantages()[1:])
    return ids, attention, mask, old, adv
