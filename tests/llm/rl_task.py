"""A toy task with a known programmatic gold reward, for the AIHF-RL tests.

Prompts ``"say : <topic>"``; answers are 2 words. The gold reward counts the "good" words
(``g1..g3``) minus the "bad" ones (``b1..b3``) among the first two words of the answer.
Demonstrations answer with good words only; a preference pair prefers the answer with the higher
gold reward. A random tiny policy says good and bad words about equally often.
"""

import random

from aihf.llm.rl_config import AIHFRLConfig
from aihf.tasks.tiny import build_model, build_word_tokenizer
from tests.device import USE_CPU

GOOD = ["g1", "g2", "g3"]
BAD = ["b1", "b2", "b3"]
TOPICS = ["t1", "t2", "t3", "t4", "t5", "t6"]


def tokenizer():
    return build_word_tokenizer(["say :"] + GOOD + BAD + TOPICS)


def gold(completion: str) -> float:
    words = completion.split()[:2]
    return float(sum(w in GOOD for w in words) - sum(w in BAD for w in words))


def gold_reward(prompts: list[str], completions: list[str]) -> list[float]:
    return [gold(c) for c in completions]


def make_data(n_demos=24, n_prefs=48, n_eval=40, seed=0):
    rng = random.Random(seed)

    def answer(n_good):
        words = rng.sample(GOOD, n_good) + rng.sample(BAD, 2 - n_good)
        rng.shuffle(words)
        return " " + " ".join(words)  # the space belongs to the answer: prompt + answer is one text

    def prompt():
        return "say : " + rng.choice(TOPICS)

    def pair():
        hi = rng.choice([1, 2])
        lo = rng.randrange(0, hi)
        return {"prompt": prompt(), "chosen": answer(hi), "rejected": answer(lo)}

    demos = [{"prompt": prompt(), "completion": answer(2)} for _ in range(n_demos)]
    prefs = [pair() for _ in range(n_prefs)]
    eval_prefs = [pair() for _ in range(n_eval)]
    return demos, prefs, eval_prefs


def model(tok, seed=0):
    return build_model(tok, "llama", hidden_size=32, seed=seed)


# The settings of the tests written before the defaults changed (one unwhitened policy step and one reward step
# per round, reusing the policy step's samples, the score read at the last token): their numbers were measured so.
OLD_ROUND = dict(
    policy_steps_per_round=1,
    reward_steps_per_round=1,
    whiten_rewards=False,
    fresh_reward_samples=False,
    reward_readout="last",
)


def rl_args(tmp_path, defaults=False, **overrides):
    """A small CPU AIHF-RL configuration: 20 rounds of 8 prompts x 4 samples, nothing saved.

    The round's structure is ``OLD_ROUND`` unless ``defaults`` (then AIHFRLConfig's own)."""
    base = dict(
        output_dir=str(tmp_path / "out"),
        num_rounds=20,
        per_device_train_batch_size=8,
        num_generations=4,
        max_new_tokens=3,
        learning_rate=1e-2,
        reward_learning_rate=3e-3,
        reward_batch_size=16,
        beta=0.01,
        report_to="none",
        use_cpu=USE_CPU,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    if not defaults:
        base.update(OLD_ROUND)
    base.update(overrides)
    return AIHFRLConfig(**base)
