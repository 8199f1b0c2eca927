"""``aihf train --method aihf_rl|rlhf|rft|sft_then_rlhf`` and ``aihf eval-reward``.

The RL methods train an explicit reward model with the policy (:class:`aihf.llm.AIHFRLTrainer`,
method.md instantiation 1). ``aihf train`` (:mod:`aihf.cli.train`) parses their options into
:class:`aihf.cli.args.RLModelArguments` and :class:`aihf.llm.AIHFRLConfig`, runs
:func:`check_settings` here, then the checks every method shares (:mod:`aihf.cli.checks`: paths,
every data row, the output folder), loads the policy (GGUF included) and calls :func:`fit`.

``aihf eval-reward --reward_model PATH --preferences FILE`` prints a saved reward model's
pairwise accuracy on preference pairs.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

from ..commandline import HelpFormatter, argument_parser, describe, show
from ..errors import ConfigError
from .args import EvalRewardArguments, TrainArguments, parse_arguments, train_option_names
from .checks import (
    Sources,
    TrainResult,
    apply_method,
    check_model_path,
    check_no_resume,
    info_after_checks,
    load_error,
    looks_local,
    lora_config,
    no_demonstrations,
    resume_setting,
    sft_overrides,
    warn_ignored,
)

# What an RL method cannot take yet, beside what all of them cannot take (eval_demonstrations).
_UNSUPPORTED = {"sft_then_rlhf": ("ref_model_name_or_path", "reward_model_name_or_path")}


def check_settings(args: TrainArguments) -> None:
    """What ``--method`` sets and the checks across options it implies (:func:`aihf.methods.apply_method`:
    contradictions, reward pretraining, rounds rather than steps), the options the method cannot take,
    the data sources it needs, and the reward model's path."""
    apply_method(args)
    method, config, data = args.run.method, args.config, args.data
    check_no_resume(args)
    values = {**vars(data), **vars(args.model)}
    given = [name for name in ("eval_demonstrations", *_UNSUPPORTED.get(method, ())) if values[name]]
    if given:
        why = "AIHF-RL evaluates the reward model on eval_preferences" if given == ["eval_demonstrations"] else "yet"
        raise ConfigError(f"--method {method} does not support {', '.join(given)} ({why})")
    # A frozen reward model takes no reward steps (as in aihf.llm.rl_data): only pretraining reads the pairs.
    learns_from_pairs = config.pref_weight > 0 and not config.freeze_reward_model
    if (learns_from_pairs or config.reward_pretrain_steps > 0) and not data.preferences:
        what = (
            f"pref_weight={show(config.pref_weight)}"
            if config.pref_weight > 0
            else args.describe("reward_pretrain_steps")
        )
        hint = ", or use --method rft to learn the reward from demonstrations alone" if method == "aihf_rl" else ""
        raise ConfigError(
            f"no preferences given, and {args.describe('method')} with {what} fits the reward model on them: "
            f"set preferences (prompt/chosen/rejected rows){hint}"
        )
    if config.demo_weight > 0 and not data.demonstrations and not data.preferences:
        raise ConfigError(no_demonstrations(args))
    if not (data.preferences or data.demonstrations or data.prompts):
        raise ConfigError(f"{args.describe('method')} has no prompts to sample from: give --prompts (prompt-only rows)")
    check_model_path(args, "reward_model_name_or_path")
    warn_ignored(args)


def fit(args: TrainArguments, model, ref, tokenizer, sources: Sources) -> TrainResult:
    """Train with :class:`aihf.llm.AIHFRLTrainer` (or the SFT -> RLHF pipeline), save the policy and
    the reward model (``<output_dir>/reward_model``) and ``all_results.json``."""
    from ..llm.pipelines import sft_args_from_rl, sft_then_rlhf
    from ..llm.rl_trainer import AIHFRLTrainer

    config, run, m = args.config, args.run, args.model
    peft_config = lora_config(m)
    reward_peft_config = lora_config(m, "SEQ_CLS", enabled=m.reward_use_peft)
    if run.method == "sft_then_rlhf":
        # The SFT stage's learning rate defaults to the policy's RL one, as its help says.
        sft_args = sft_args_from_rl(config, **{"learning_rate": config.learning_rate, **sft_overrides(run)})
        result = sft_then_rlhf(
            model,
            config,
            sources.demonstrations,
            sources.preferences,
            tokenizer,
            sft_args=sft_args,
            eval_preferences=sources.eval_preferences,
            peft_config=peft_config,
            reward_peft_config=reward_peft_config,
        )
        trainer = result.rl_trainer
        metrics = {"sft": result.sft_trainer.state.log_history[-1], "rlhf": trainer.log_history[-1]}
    else:
        trainer = AIHFRLTrainer(
            model,
            ref_model=ref,
            reward_model=m.reward_model_name_or_path,
            args=config,
            demonstrations=sources.demonstrations,
            preferences=sources.preferences,
            eval_preferences=sources.eval_preferences,
            train_dataset=sources.prompts,
            processing_class=tokenizer,
            peft_config=peft_config,
            reward_peft_config=reward_peft_config,
        )
        metrics = trainer.train(resume_from_checkpoint=resume_setting(config))
        trainer.save_model()
    out = trainer.args.output_dir
    is_main = trainer.rank == 0
    if is_main:
        with open(os.path.join(out, "all_results.json"), "w") as f:
            json.dump(metrics, f, indent=2, default=str)
    return TrainResult(metrics, out, is_main, peft_config is not None, os.path.join(out, "reward_model"))


# ---------------------------------------------------------------------------------- eval-reward
def _eval_parser():
    elsewhere = {name: "an option of `aihf train`, not of `aihf eval-reward`" for name in train_option_names()}
    return argument_parser(
        (EvalRewardArguments,),
        elsewhere=elsewhere,
        prog="aihf eval-reward",
        usage="aihf eval-reward --reward_model PATH --preferences FILE [--field value ...]",
        description="Pairwise accuracy of a reward model on preference pairs: the share of pairs with "
        "r(chosen) > r(rejected), the mean margin r(chosen) - r(rejected), and the number of pairs.",
        formatter_class=HelpFormatter,
    )


def eval_reward(argv: list[str]) -> dict:
    """``aihf eval-reward``: ``{"accuracy", "margin", "num_pairs"}`` of the reward model on the pairs.
    Bad settings raise :class:`aihf.ConfigError`, bad rows :class:`aihf.DataError`, before the model loads."""
    from ..llm.reward_model import evaluate_reward_model

    with info_after_checks():
        model, data, pad_token_id, batch_size, stops = _load_for_eval(argv)
    # The answers are framed as in training: a trailing end token removed, one appended.
    return evaluate_reward_model(model, data, pad_token_id, batch_size, end_token_id=stops)


def _load_for_eval(argv: list[str]):
    """eval-reward's checks and loading: ``(reward model, tokenised pairs, pad id, batch size, end tokens)``."""
    from transformers import AutoTokenizer

    from ..data import end_token, prepare_preferences, read_rows
    from ..llm.reward_model import load_reward_model

    (args,), origins = parse_arguments(_eval_parser(), argv, (EvalRewardArguments,))
    for name in ("reward_model", "preferences"):
        if not getattr(args, name):
            raise ConfigError(f"--{name} is required (in the --config file or as a flag)")
    if args.batch_size < 1:
        raise ConfigError(f"{describe('batch_size', args.batch_size, origins)}: must be >= 1")
    where = describe("reward_model", args.reward_model, origins)
    path = os.path.expanduser(args.reward_model)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ConfigError(f"{where}: not a model folder (no config.json)")
    elif os.path.exists(path) or looks_local(args.reward_model):
        raise ConfigError(f"{where}: no such folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.reward_model, trust_remote_code=args.trust_remote_code)
    except (OSError, ValueError) as e:
        raise load_error(where, args.reward_model, "tokenizer", e) from e
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = read_rows(args.preferences, split=args.preferences_split)
    data = prepare_preferences(rows, tokenizer, max_length=args.max_length, max_prompt_length=args.max_prompt_length)
    if os.path.isdir(path):
        with open(os.path.join(path, "config.json")) as f:
            architectures = json.load(f).get("architectures") or []
        if not any(a.endswith("ForSequenceClassification") for a in architectures):
            # A policy folder would load with a fresh, random score head and report a meaningless accuracy.
            raise ConfigError(
                f"{where}: not a reward model (architectures {architectures}); an aihf_rl, rlhf or rft run saves "
                "its reward model in <output_dir>/reward_model"
            )
    model = load_reward_model(args.reward_model, tokenizer.pad_token_id, trust_remote_code=args.trust_remote_code)
    stops = [i for i in dict.fromkeys((end_token(tokenizer).id, tokenizer.eos_token_id)) if i is not None]
    return model, data, tokenizer.pad_token_id, args.batch_size, stops or None


def run_eval_reward(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        _eval_parser().print_help()
        return 0
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the result alone, as in `aihf train`
        result = eval_reward(argv)
    print(json.dumps(result, indent=2))
    return 0
