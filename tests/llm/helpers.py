"""Small synthetic data and trainer builders shared by the LLM tests."""

import random

from aihf.llm import AIHFConfig, AIHFTrainer
from aihf.tasks.tiny import build_model, build_word_tokenizer
from tests.device import USE_CPU

LETTERS = "a b c d e f".split()


def reverse_task(n_demos=64, n_prefs=64, seed=0):
    """Demos and preferences that agree: reverse 3 letters; the rejected answer is the copy."""
    rng = random.Random(seed)
    demos, prefs = [], []
    for _ in range(n_demos):
        s = rng.sample(LETTERS, 3)
        demos.append({"prompt": "reverse : " + " ".join(s) + " =", "completion": " " + " ".join(reversed(s))})
    for _ in range(n_prefs):
        s = rng.sample(LETTERS, 3)
        prefs.append(
            {
                "prompt": "reverse : " + " ".join(s) + " =",
                "chosen": " " + " ".join(reversed(s)),
                "rejected": " " + " ".join(s),
            }
        )
    return demos, prefs


def task_tokenizer(**kw):
    return build_word_tokenizer(["reverse : ="] + LETTERS, **kw)


def config(tmp_path, **overrides):
    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        max_steps=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=USE_CPU,
        max_new_tokens=4,
        seed=0,
    )
    base.update(overrides)
    return AIHFConfig(**base)


def trainer(tmp_path, arch="llama", tokenizer=None, demos=None, prefs=None, model=None, **overrides):
    tok = tokenizer or task_tokenizer()
    d, p = reverse_task()
    model = model or build_model(tok, arch, hidden_size=32, seed=0)
    return AIHFTrainer(
        model=model,
        args=config(tmp_path, **overrides),
        demonstrations=d if demos is None else (demos or None),  # [] means "no such source"
        preferences=p if prefs is None else (prefs or None),
        processing_class=tok,
    )


def losses_by_step(log_history):
    return {h["step"]: h["loss"] for h in log_history if "loss" in h}
