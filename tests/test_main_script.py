"""The README's main command, ``bash scripts/main.sh``: the benchmark's quick preset, end to end."""

import re
import shlex
import subprocess
from pathlib import Path

from aihf.bench import llm

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "main.sh"


def _exec_argv() -> list[str]:
    """The words of the script's ``exec`` line, ``$jobs`` as 2."""
    (line,) = [x for x in SCRIPT.read_text().splitlines() if x.startswith("exec ")]
    return shlex.split(line.replace('"$jobs"', "2"))[1:]


def _two_commands_section() -> str:
    return (ROOT / "README.md").read_text().split("## The two commands", 1)[1].split("\n## ", 1)[0]


def test_readme_main_command_is_scripts_main_sh():
    section = _two_commands_section()
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    main_line = next(x for x in block.splitlines() if "main job" in x)
    assert main_line.startswith("bash scripts/main.sh ")
    assert "bash scripts/quickstart.sh" in section  # the fast demo stays documented


def test_main_sh_sets_up_then_runs_the_quick_preset_offline_with_extra_args_last():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    text = SCRIPT.read_text()
    assert text.index("bash scripts/setup.sh") < text.index("\nexec ")
    assert re.search(r"^export .*HF_HUB_OFFLINE=1", text, re.M)
    argv = _exec_argv()
    assert argv[:3] == [".venv/bin/aihf", "bench", "llm"] and argv[-1] == "$@"
    args = llm.parse(argv[3:-1])
    assert args.preset == "quick" and args.jobs == 2 and not (args.list or args.run or args.report_only)
    # Not the committed results folder, where every run is already finished.
    assert Path(args.output_dir) != Path("benchmarks/results/llm/quick")
    # The user's arguments come last, so they win.
    assert llm.parse(argv[3:-1] + ["--jobs", "1", "--output_dir", "x"]).jobs == 1


def test_quick_preset_keeps_every_method_and_a_small_and_the_full_pair_budget():
    args = llm.parse(["--preset", "quick"])
    assert llm.method_names(args) == list(llm.METHODS)
    assert llm.budgets(args) == [50, args.num_preferences]


def test_main_sh_runs_one_process_per_core_even_with_omp_num_threads_1_set():
    """GNU nproc reports OMP_NUM_THREADS: counted after exporting it, the sweep ran one run at a time."""
    import os

    (line,) = [x for x in SCRIPT.read_text().splitlines() if x.startswith("jobs=")]
    text = SCRIPT.read_text()
    assert text.index(line) < text.index("OMP_NUM_THREADS=1\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    got = subprocess.run(["bash", "-c", f"{line}; echo $jobs"], env=env, capture_output=True, text=True).stdout
    assert int(got) == len(os.sched_getaffinity(0))
