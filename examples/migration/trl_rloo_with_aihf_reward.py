"""The reward model an aihf run learned, in TRL's RLOOTrainer (docs/migration.md, "The learned reward
model in another RL stack").

``<output_dir>/reward_model`` of an ``aihf_rl``/``rlhf``/``rft`` run is a plain sequence classifier
(``AutoModelForSequenceClassification``, one output) with its tokenizer. Two ways to use it in TRL:

* the folder itself as a ``reward_funcs`` entry: TRL reads the score at the last token of
  ``prompt + completion`` (the read-out ``"last"``). That is aihf's own score only for a model saved
  with ``reward_readout="last"``, and for completions framed alike: aihf scores every completion with
  one end token appended, TRL's decoded completions carry none;
* :func:`aihf_reward` below, a reward function that scores exactly as aihf does, with the model's saved
  read-out (``"mean"`` over the completion's tokens, aihf's default for new reward models, or ``"last"``)
  and aihf's framing.

Run ``aihf_rlhf.py`` first (or pass ``--reward_model`` a reward model folder of yours).
"""

import argparse
import os

import torch
from transformers import AutoTokenizer
from trl import RLOOConfig, RLOOTrainer

import tiny
from aihf.llm.reward_model import load_reward_model, reward_scores


def aihf_reward(folder: str):
    """A TRL reward function ``f(prompts, completions, completion_ids, **kwargs) -> list[float]`` that
    scores with the reward model in ``folder`` exactly as aihf does (its read-out and framing).
    Text prompts only (a conversational prompt would need the chat template applied first)."""
    tok = AutoTokenizer.from_pretrained(folder)
    model = load_reward_model(folder, tok.pad_token_id).eval()

    def aihf_reward(prompts, completions, completion_ids, **kwargs):
        prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        with torch.no_grad():
            scores = reward_scores(
                model, prompt_ids, [list(c) for c in completion_ids], tok.pad_token_id, end_token_id=tok.eos_token_id
            )
        return scores.tolist()

    return aihf_reward


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", default="runs/migration/trl_rloo_with_aihf_reward")
    parser.add_argument("--reward_model", default="runs/migration/aihf_rlhf/reward_model")
    cli = parser.parse_args()
    tok = tiny.tokenizer()
    policy_dir = os.path.join(cli.output_dir, "base")  # RLOO loads its reference model from the policy's path
    tiny.model(tok).save_pretrained(policy_dir)
    tok.save_pretrained(policy_dir)
    trainer = RLOOTrainer(
        model=policy_dir,
        reward_funcs=[aihf_reward(cli.reward_model)],  # or the folder itself: TRL's "last" read-out, see above
        args=RLOOConfig(
            output_dir=os.path.join(cli.output_dir, "rloo"),
            learning_rate=1e-3,
            per_device_train_batch_size=8,
            num_generations=2,
            max_completion_length=4,
            max_steps=2,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            bf16=False,
            gradient_checkpointing=False,
        ),
        train_dataset=tiny.prompts(),
        processing_class=tok,
    )
    trainer.train()
    trainer.save_model()
