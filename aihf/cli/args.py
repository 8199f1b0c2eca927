"""The ``aihf train`` command line: its argument dataclasses, parser, and the ``--config`` YAML file.

Every field of :class:`RunArguments`, :class:`ModelArguments`, :class:`DataArguments` and
:class:`aihf.llm.AIHFConfig` (which includes all of ``transformers.TrainingArguments``) can be set
in the YAML file given by ``--config`` or as a flag; flags win. The RL methods (``--method
aihf_rl|rlhf|rft|sft_then_rlhf``) read :class:`RLModelArguments` and :class:`aihf.llm.AIHFRLConfig`
instead. :func:`parse_train_args` also records where each field the user set came from, so that
errors can name the flag or the YAML file and line.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any

from ..commandline import (
    HelpFormatter,
    argument_parser,
    describe,
    did_you_mean,
    show,
    type_name,
    unknown_arguments,
)
from ..errors import ConfigError
from ..methods import METHOD_SETTINGS, METHODS, RL_METHODS, TRL_FIELDS, SettingSources


@dataclass
class RunArguments:
    config: str | None = field(
        default=None,
        metadata={"help": "YAML file of 'field: value' lines, any field below; flags given beside it win."},
    )
    method: str = field(
        default="aihf",
        metadata={
            "help": "aihf: demo_weight/pref_weight/demo_loss as set; dpo: demo_weight=0; sft: pref_weight=0 with "
            "nll; spin: pref_weight=0 with self_play; sft_then_dpo: the two-stage baseline. With an explicit "
            "reward model (options: aihf train --method aihf_rl --help): aihf_rl: demo_weight/pref_weight as set; "
            "rlhf: demo_weight=0, the reward model fitted on the preferences first (reward_pretrain_steps), then "
            "frozen; rft: pref_weight=0 (ML-IRL); sft_then_rlhf: SFT, then rlhf from the SFT model. A "
            "contradicting setting beside it (both flags, or both in the YAML) is refused; a --method flag "
            "overrides them in the YAML, with a warning.",
            "choices": list(METHODS + RL_METHODS),
        },
    )
    sft_num_train_epochs: float | None = field(
        default=None,
        metadata={"help": "sft_then_dpo, sft_then_rlhf: epochs of the SFT stage (default: num_train_epochs)."},
    )
    sft_max_steps: int | None = field(
        default=None, metadata={"help": "sft_then_dpo, sft_then_rlhf: steps of the SFT stage (default: max_steps)."}
    )
    sft_learning_rate: float | None = field(
        default=None,
        metadata={"help": "sft_then_dpo, sft_then_rlhf: learning rate of the SFT stage (default: learning_rate)."},
    )


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Policy to align: a local folder or a Hugging Face Hub model id."}
    )
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Tokenizer (default: the model's)."})
    ref_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Frozen reference model (default: a copy of the policy, or the base model under LoRA)."},
    )
    gguf_file: str | None = field(default=None, metadata={"help": "Load the model from this GGUF file in the folder."})
    dtype: str = field(
        default="float32",
        metadata={"help": "Weights dtype.", "choices": ["float32", "bfloat16", "float16", "auto"]},
    )
    attn_implementation: str | None = field(default=None, metadata={"help": "e.g. sdpa, eager, flash_attention_2."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run model code shipped with the checkpoint (off unless you trust it)."}
    )
    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules to adapt, one or several names (default: all linear layers)."}
    )

    def __post_init__(self):
        if self.use_peft and (self.lora_r < 1 or self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1):
            raise ConfigError(
                f"LoRA needs lora_r >= 1, lora_alpha > 0 and lora_dropout in [0, 1), got lora_r={self.lora_r}, "
                f"lora_alpha={self.lora_alpha}, lora_dropout={self.lora_dropout}"
            )


@dataclass
class RLModelArguments(ModelArguments):
    """:class:`ModelArguments` plus the reward model of the RL methods."""

    reward_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Reward model to start from (default: the policy's weights with a new score head)."},
    )
    reward_use_peft: bool = field(
        default=False, metadata={"help": "Train LoRA adapters of the reward model (lora_* as for the policy)."}
    )


@dataclass
class DataArguments:
    demonstrations: str | None = field(
        default=None,
        metadata={"help": "Demonstrations: a .jsonl/.json/.csv/.parquet file, a save_to_disk folder or a Hub id."},
    )
    preferences: str | None = field(default=None, metadata={"help": "Preference pairs, same kinds of source."})
    eval_demonstrations: str | None = field(
        default=None, metadata={"help": "Held-out demonstrations (not used by the RL methods)."}
    )
    eval_preferences: str | None = field(default=None, metadata={"help": "Held-out preference pairs."})
    prompts: str | None = field(
        default=None,
        metadata={
            "help": "RL methods: prompt-only rows (TRL's RLOO/GRPO format, a 'prompt' field), more prompts to "
            "sample from; with a given reward model kept fixed (--reward_model_name_or_path, "
            "--reward_pretrain_steps 0) the only data needed."
        },
    )
    demonstrations_split: str = field(
        default="train", metadata={"help": "Split of a Hub dataset or DatasetDict folder to read demonstrations from."}
    )
    preferences_split: str = field(default="train", metadata={"help": "Split to read preferences from."})
    prompts_split: str = field(default="train", metadata={"help": "Split to read prompts from."})
    eval_split: str = field(default="test", metadata={"help": "Split to read both eval sources from."})
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "TRL's flag: one dataset (a local file or save_to_disk folder, or a Hub id) read as "
            "--preferences if its rows are pairs (chosen, rejected), else as --demonstrations; its "
            "dataset_test_split is the eval set when eval_strategy is not 'no'."
        },
    )
    dataset_train_split: str = field(default="train", metadata={"help": "Split of dataset_name to train on."})
    dataset_test_split: str = field(default="test", metadata={"help": "Split of dataset_name to evaluate on."})


@dataclass
class EvalRewardArguments:
    """``aihf eval-reward``'s options (:mod:`aihf.cli.rl`)."""

    config: str | None = field(
        default=None, metadata={"help": "YAML file of 'field: value' lines, any field below; flags beside it win."}
    )
    reward_model: str | None = field(
        default=None, metadata={"help": "A saved reward model folder (e.g. <output_dir>/reward_model) or Hub id."}
    )
    preferences: str | None = field(
        default=None,
        metadata={"help": "Preference pairs: a .jsonl/.json/.csv/.parquet file, a save_to_disk folder or a Hub id."},
    )
    preferences_split: str = field(default="test", metadata={"help": "Split of a Hub dataset or DatasetDict to read."})
    batch_size: int = field(default=16, metadata={"help": "Pairs scored per forward pass."})
    max_length: int | None = field(default=1024, metadata={"help": "Maximum tokens of prompt + answer."})
    max_prompt_length: int | None = field(default=512, metadata={"help": "Maximum prompt tokens (cut on the left)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run model code shipped with the checkpoint."})


@dataclass
class TrainArguments(SettingSources):
    """The parsed command line, and where each field the user set came from (the
    :class:`aihf.methods.SettingSources` of ``aihf train``: flags and YAML lines)."""

    model: ModelArguments
    data: DataArguments
    run: RunArguments
    config: Any  # AIHFConfig
    # field name -> "--flag" (set on the command line) or the YAML file's path
    origins: dict[str, str] = field(default_factory=dict)
    gives_trained_reward_model = "--reward_model_name_or_path"

    def describe(self, name: str) -> str:
        """How ``name`` got its value: ``--demo_weight 0.5``, ``demo_weight: 0.5 in run.yaml``, or
        ``demo_weight=0.0 (set by --method dpo)``."""
        if name not in self.origins and name in METHOD_SETTINGS[self.run.method]:
            return f"{name}={show(self.value(name))} (set by {self.describe('method')})"
        return describe(name, self.value(name), self.origins)

    def value(self, name: str) -> Any:
        """The value of field ``name``, whichever dataclass holds it."""
        for obj in (self.run, self.model, self.data, self.config):
            if hasattr(obj, name):
                return getattr(obj, name)
        return "?"

    def level(self, name: str) -> int:
        """0: a default; 1: set in the YAML; 2: set by a flag."""
        origin = self.origins.get(name)
        return 0 if origin is None else 2 if origin.startswith("--") else 1

    def forget(self, name: str) -> None:
        self.origins.pop(name, None)

    def spell(self, name: str, value: Any) -> str:
        return f"--{name} {show(value)}"


def _field_names(*dataclass_types) -> set[str]:
    return {f.name for dtype in dataclass_types for f in dataclasses.fields(dtype)}


def options_elsewhere(method: str) -> dict[str, str]:
    """The options of the other ``aihf train`` methods and of ``aihf eval-reward`` that ``aihf train
    --method <method>`` lacks, each with the line that says where it belongs."""
    own = _field_names(*train_dataclasses(method))
    here = f"not of `aihf train --method {method}`"
    other, which = ("aihf", "|".join(METHODS)) if method in RL_METHODS else ("aihf_rl", "|".join(RL_METHODS))
    found = {name: f"an option of `aihf eval-reward`, {here}" for name in _field_names(EvalRewardArguments)}
    elsewhere_in_train = f"an option of `aihf train --method {which}`, {here}"
    found.update({name: elsewhere_in_train for name in _field_names(*train_dataclasses(other))})
    found.update(TRL_DATA_FLAGS)
    found.update(TRL_FIELDS)
    return {name: text for name, text in found.items() if name not in own}


# TRL's trainer arguments as flags, which aihf splits by kind of data: what to write instead.
TRL_DATA_FLAGS = {
    "train_dataset": "aihf reads preference pairs from --preferences (TRL's train_dataset) and demonstrations (SFT "
    "data) from --demonstrations, each a local file or folder or a Hub id (or --dataset_name, routed by its rows)",
    "eval_dataset": "aihf reads held-out data from --eval_preferences and --eval_demonstrations",
}


def train_option_names() -> set[str]:
    """Every field ``aihf train`` takes under some ``--method``."""
    return _field_names(*train_dataclasses("aihf"), *train_dataclasses("aihf_rl")) - _field_names(EvalRewardArguments)


_TRAIN_DESCRIPTION = {
    "aihf": "Align a causal LM with demonstrations and preferences in one stage (AIHF). Any field can be set in "
    "the --config YAML file or as a flag; flags win; model_name_or_path and output_dir are required. The methods "
    "with an explicit reward model (--method aihf_rl, rlhf, rft, sft_then_rlhf) take other options: see "
    "'aihf train --method aihf_rl --help'.",
    "rl": "Align a causal LM with an explicit reward model learned from demonstrations and preferences, in "
    "rounds of RL steps on the policy and steps on the reward model (AIHF-RL). Any field can be set in the "
    "--config YAML file or as a flag; flags win; model_name_or_path and output_dir are required. The "
    "implicit-reward methods (--method aihf, dpo, sft, spin, sft_then_dpo) take other options: see "
    "'aihf train --help'.",
}
_INHERITED = {
    "aihf": "Inherited by aihf.llm.AIHFConfig, which changes the defaults of learning_rate (1e-6), logging_steps (10) "
    "and remove_unused_columns (false).",
    "rl": "Inherited by aihf.llm.AIHFRLConfig, which changes the defaults of learning_rate (the policy's, 1e-6), "
    "logging_steps (1) and save_steps (10), both counted in rounds, lr_scheduler_type (constant) and "
    "remove_unused_columns (false). max_steps and num_train_epochs are refused by aihf_rl, rlhf and rft, which count "
    "rounds (set num_rounds); under sft_then_rlhf they size the SFT stage.",
}


def train_dataclasses(method: str) -> tuple:
    """``(model, data, run, config)`` argument dataclasses of ``aihf train --method <method>``."""
    if method in RL_METHODS:
        from ..llm.rl_config import AIHFRLConfig

        return RLModelArguments, DataArguments, RunArguments, AIHFRLConfig
    from ..llm.config import AIHFConfig

    return ModelArguments, DataArguments, RunArguments, AIHFConfig


def build_parser(method: str = "aihf"):
    """The ``aihf train`` parser for ``method``: every field as ``--name``, grouped for ``--help``.

    The RL methods (:data:`RL_METHODS`) get :class:`aihf.llm.AIHFRLConfig`'s fields, the others
    :class:`aihf.llm.AIHFConfig`'s. Errors and abbreviations as in :func:`argument_parser`.
    """
    from transformers import TrainingArguments

    model_type, data_type, run_type, config_type = train_dataclasses(method)
    kind = "rl" if method in RL_METHODS else "aihf"
    parser = argument_parser(
        (run_type, model_type, data_type, config_type),
        elsewhere=options_elsewhere(method),
        prog="aihf train",
        usage="aihf train [--config run.yaml] [--field value ...]",
        description=_TRAIN_DESCRIPTION[kind],
        formatter_class=HelpFormatter,
    )
    for action in parser._actions:
        if action.dest == "resume_from_checkpoint":
            action.help = (
                "Resume training: 'true' continues the last checkpoint-* in output_dir; or the path of a "
                "checkpoint folder."
            )
        elif action.nargs == 0 and action.option_strings[0].startswith("--no_"):
            action.help = f"Set {action.dest} to false."
        elif action.dest == "output_dir":
            action.help = "Required (no default folder): where the model, its checkpoints and all_results.json go."
        elif action.dest == "method":
            action.default = method  # this parser serves only `method` (and its kind)
        elif action.dest == "loss_type":
            # TRL's loss_type is a list (mixed by loss_weights): `--loss_type sigmoid ipo` or a YAML list; the
            # config keeps a single type as a string.
            action.nargs = "+"

    inherited = {f.name for f in dataclasses.fields(TrainingArguments)}
    run_fields = [f.name for f in dataclasses.fields(run_type)]
    own_fields = [f.name for f in dataclasses.fields(config_type) if f.name not in inherited]
    if kind == "rl":
        groups = [
            ("aihf: configuration file and method", run_fields),
            ("AIHF-RL (aihf.llm.AIHFRLConfig): rounds, objective, policy and reward steps", own_fields),
            ("policy, reward model and LoRA", [f.name for f in dataclasses.fields(model_type)]),
        ]
    else:
        groups = [
            ("aihf: configuration file, method and objective", run_fields[:2] + own_fields + run_fields[2:]),
            ("model and LoRA", [f.name for f in dataclasses.fields(model_type)]),
        ]
    groups.append(("data", [f.name for f in dataclasses.fields(data_type)]))
    # argparse keeps no public way to move options between groups; its group lists are stable.
    options = [a for a in parser._optionals._group_actions if a.dest != "help"]
    placed: set[int] = set()
    for title, names in groups:
        group = parser.add_argument_group(title)
        for name in names:
            for action in options:
                if action.dest == name:
                    group._group_actions.append(action)
                    placed.add(id(action))
    rest = parser.add_argument_group("transformers.TrainingArguments", _INHERITED[kind])
    rest._group_actions.extend(a for a in options if id(a) not in placed)
    parser._optionals._group_actions[:] = [a for a in parser._optionals._group_actions if a.dest == "help"]
    return parser


def _read_yaml(path: str) -> tuple[dict[str, Any], dict[str, int]]:
    """The mapping in ``path`` and the line of each key."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config {path}: cannot read it ({e})") from e
    try:
        values = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path}{where}: not valid YAML ({problem})") from e
    if values is None:
        return {}, {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a YAML mapping of 'field: value' lines, got {type(values).__name__}")
    lines = {k.value: k.start_mark.line + 1 for k, _ in node.value} if isinstance(node, yaml.MappingNode) else {}
    return values, lines


def _from_yaml(action: argparse.Action, value: Any, where: str) -> Any:
    """A YAML value converted to the field's type; argparse converts only what comes from flags."""
    if value is None:
        return None
    if action.nargs in ("+", "*"):
        items = value if isinstance(value, list) else [value]  # `lora_target_modules: q_proj` means one name
        return [_from_yaml_scalar(action, item, where) for item in items]
    if isinstance(value, (list, dict)) and action.type in (str, None):
        # report_to takes a list, lr_scheduler_kwargs/deepspeed/fsdp_config a mapping; a string field does not.
        kind = _field_types().get(action.dest, "")
        if ("list" in kind.lower() and isinstance(value, list)) or ("dict" in kind.lower() and isinstance(value, dict)):
            return value
    return _from_yaml_scalar(action, value, where)


def _from_yaml_scalar(action: argparse.Action, value: Any, where: str) -> Any:
    from transformers.hf_argparser import string_to_bool

    kind = action.type
    bad = ConfigError(f"{where}: expected {type_name(kind)}, got {value!r}")
    if isinstance(value, (list, dict)):
        raise ConfigError(f"{where}: expected one value ({type_name(kind)}), got a {type(value).__name__}")
    if kind is string_to_bool:
        if isinstance(value, bool):
            converted = value
        elif isinstance(value, str):
            try:
                converted = string_to_bool(value)
            except argparse.ArgumentTypeError:
                raise bad from None
        else:
            raise bad
    elif kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise bad
        if kind is int and isinstance(value, float):
            if not value.is_integer():
                raise bad
            value = int(value)
        try:
            converted = kind(value)
        except ValueError:
            raise bad from None
    elif kind in (str, None):
        converted = str(value).lower() if isinstance(value, bool) else str(value)
    else:  # the choice types of Literal/Enum fields read text
        try:
            converted = kind(value if isinstance(value, str) else str(value))
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            raise bad from None
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(str(c) for c in action.choices)
        raise ConfigError(f"{where}: {converted!r} is not one of {choices}")
    return converted


def _field_types() -> dict[str, str]:
    """Each field's declared type as text (``"int | None"``, ``"dict | str | None"``)."""
    from ..llm.config import AIHFConfig

    types = {}
    for dtype in (RunArguments, ModelArguments, DataArguments, AIHFConfig):
        for f in dataclasses.fields(dtype):
            types[f.name] = (f.type if isinstance(f.type, str) else repr(f.type)) + (
                " None" if f.default is None else ""
            )
    return types


def _nullable_fields() -> set[str]:
    """Fields that accept None (``x: int | None``), so that ``key: null`` in the YAML is meaningful."""
    return {name for name, kind in _field_types().items() if "None" in kind or "Optional" in kind}


def _flag_value(argv: list[str], name: str) -> str | None:
    """The value of the last ``--name value`` or ``--name=value`` in ``argv`` (as argparse takes it)."""
    value = None
    for i, token in enumerate(argv):
        if token == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
        elif token.startswith(f"--{name}="):
            value = token.split("=", 1)[1]
    return value


def train_method(argv: list[str]) -> str:
    """The ``--method`` that ``argv`` asks for (its last ``--method`` flag, else ``method:`` in the
    ``--config`` file, else ``aihf``): which config and trainer ``aihf train`` uses. An unknown
    name counts as ``aihf`` here; parsing refuses it, naming where it came from."""
    method = _flag_value(argv, "method")
    config_path = _flag_value(argv, "config")
    if method is None and config_path:
        method = _read_yaml(config_path)[0].get("method")
    return method if method in METHODS + RL_METHODS else "aihf"


def parse_arguments(parser, argv: list[str], dataclass_types: tuple) -> tuple[list, dict[str, str]]:
    """``argv`` (``--config file.yaml`` plus flag overrides) into one object per dataclass of
    ``parser``, and where each field the user set came from: field name -> ``"--flag"`` or the
    YAML file's path.

    Raises :class:`ConfigError` for anything malformed: an unknown key or flag, a value of the
    wrong type (naming the YAML key, file and line, or the flag), a setting the dataclasses refuse.
    """
    from transformers import TrainingArguments

    by_option = {opt: a for a in parser._actions for opt in a.option_strings}
    fields_by_name = {a.dest: a for a in reversed(parser._actions) if a.option_strings and a.dest != "help"}

    config_path = _flag_value(argv, "config")
    origins: dict[str, str] = {}
    if config_path:
        values, lines = _read_yaml(config_path)
        converted = {}
        for key, value in values.items():
            where = f"{config_path}, line {lines[key]}" if key in lines else config_path
            key = str(key)
            if key == "config" or key not in fields_by_name:
                belongs = getattr(parser, "elsewhere", {}).get(key)
                hint = f": {belongs}" if belongs else did_you_mean(key, [n for n in fields_by_name if n != "config"])
                raise ConfigError(f"{where}: unknown key '{key}'{hint}")
            if value is None and key not in _nullable_fields():
                kind = type_name(fields_by_name[key].type)
                raise ConfigError(f"{where}: {key}: expected {kind}, got null (remove the line to keep the default)")
            converted[key] = _from_yaml(fields_by_name[key], value, f"{where}: {key}")
            origins[key] = config_path
        parser.set_defaults(**converted)

    namespace, remaining = parser.parse_known_args(argv)
    if remaining:
        raise ConfigError(unknown_arguments(remaining, parser))
    for token in argv:
        action = by_option.get(token.split("=", 1)[0]) if token.startswith("--") else None
        if action is not None:
            origins[action.dest] = action.option_strings[0]

    values = vars(namespace)
    built = []
    for dtype in dataclass_types:
        names = {f.name for f in dataclasses.fields(dtype) if f.init}
        kwargs = {k: v for k, v in values.items() if k in names}
        if not issubclass(dtype, TrainingArguments):
            for f in dataclasses.fields(dtype):
                if kwargs.get(f.name) == "" and f.default is None:
                    kwargs[f.name] = None  # `--demonstrations ""` unsets what the YAML file set
        try:
            built.append(dtype(**kwargs))
        except ValueError as e:
            raise ConfigError(_explain(str(e), kwargs, origins)) from e
    return built, origins


def parse_train_args(argv: list[str]) -> TrainArguments:
    """Parse ``--config file.yaml`` plus flag overrides into the four argument dataclasses of the
    ``--method`` asked for (:func:`train_method`). Raises :class:`ConfigError` as
    :func:`parse_arguments` does, and when no model or no output_dir is given."""
    method = train_method(argv)
    built, origins = parse_arguments(build_parser(method), argv, train_dataclasses(method))
    args = TrainArguments(*built, origins=origins)
    model = args.model
    if not model.model_name_or_path:
        raise ConfigError(
            "model_name_or_path is required: a local model folder or a Hub id, in the --config file or as "
            "--model_name_or_path"
        )
    if "output_dir" not in origins:
        # Not transformers' ./trainer_output, nor a fresh timestamped folder: a run's folder is where
        # resume_from_checkpoint looks and what the used-folder check guards, so the user names it.
        raise ConfigError(
            "output_dir is required: the folder for the model and its checkpoints, in the --config file or as "
            "--output_dir"
        )
    if model.model_name_or_path.endswith(".gguf") and not model.gguf_file:
        # A path to the .gguf file itself means its folder and that file, as in AIHFTrainer.
        path = os.path.expanduser(model.model_name_or_path)
        if os.path.isfile(path):
            model.model_name_or_path, model.gguf_file = os.path.dirname(path) or ".", os.path.basename(path)
            if "model_name_or_path" in origins:
                origins["gguf_file"] = origins["model_name_or_path"]
    return args


def _explain(message: str, values: dict[str, Any], origins: dict[str, str]) -> str:
    """A dataclass's complaint as one line naming where the settings it mentions came from."""
    message = " ".join(message.split())
    if values.get("bf16") and "bf16" in message:
        where = "--bf16 true" if origins.get("bf16", "").startswith("--") else f"bf16: true in {origins.get('bf16')}"
        return (
            f"bf16 mixed precision needs a GPU, and this machine has none ({where}): remove it to train in "
            "float32, or add --use_cpu true for bf16 autocast on the CPU"
        )
    mentioned = [n for n in origins if re.search(rf"\b{re.escape(n)}\b", message)]
    if mentioned:
        message += " (" + "; ".join(f"{n} from {origins[n]}" for n in mentioned) + ")"
    return message
