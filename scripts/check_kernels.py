"""Run the tests that train and assert on what was learned (`pytest -m learns`) under other CPU kernels and thread
counts, to show that they pass on the rounding of any machine, not only this one's.

python scripts/check_kernels.py                  # all four settings: native and AVX2 kernels, 1 and 2 threads
python scripts/check_kernels.py avx2-2           # one setting (what CI runs after the suite)
python scripts/check_kernels.py --all native-2   # the whole suite, not only the `learns` tests
python scripts/check_kernels.py avx2-1 -- -k study --randomly-seed=1   # pytest options after --

"native" leaves PyTorch's own kernels, oneDNN and MKL to pick the widest instructions the CPU has (AVX-512 where it
has them); "avx2" caps all three to AVX2 (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS), which
changes the width and order of their floating-point sums, and so the rounding of what they compute. The number is
OMP_NUM_THREADS, the threads each process uses (the tests that launch two processes keep one thread each). Each
setting runs in its own pytest process; the script prints a line per setting and exits 1 if any failed.
"""

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KERNELS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}
# Every variable that caps the kernels (DNNL_ is oneDNN's older prefix): a setting starts from none of them.
CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
SETTINGS = [f"{kernels}-{threads}" for kernels in KERNELS for threads in (1, 2)]


def setting_env(setting: str) -> dict[str, str]:
    """The environment of one setting, `KERNELS-THREADS` (e.g. "avx2-2"), on top of this process's."""
    kernels, threads = setting.split("-")
    env = {k: v for k, v in os.environ.items() if k not in CAPS}
    return {**env, **KERNELS[kernels], "OMP_NUM_THREADS": threads}


def cpu_capability(env: dict[str, str]) -> str:
    """The kernels PyTorch runs under `env`, as it reports them (e.g. "AVX512", "AVX2")."""
    code = "import torch; print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    capability, threads = result.stdout.split()
    return f"{capability}, {threads} thread(s)"


def run_setting(setting: str, whole_suite: bool, pytest_args: list[str]) -> tuple[bool, str]:
    """Run pytest under `setting`; returns (passed, pytest's closing line)."""
    env = setting_env(setting)
    print(f"check_kernels: {setting} ({cpu_capability(env)}) ...", flush=True)
    command = [sys.executable, "-m", "pytest", *([] if whole_suite else ["-m", "learns"]), *pytest_args]
    start = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    closing = next((line for line in reversed(lines) if re.search(r"\d+ (passed|failed|error)", line)), "no result")
    if result.returncode != 0:
        print("\n".join(lines[-60:]), result.stderr[-3000:], sep="\n")
    seed = next((line for line in lines if line.startswith("Using --randomly-seed")), "")
    print(f"check_kernels: {setting}: {closing.strip('= ')} in {time.perf_counter() - start:.0f} s {seed}", flush=True)
    return result.returncode == 0, closing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", nargs="*", metavar="SETTING", help=f"any of {', '.join(SETTINGS)}; default: all")
    parser.add_argument("--all", action="store_true", help="run the whole suite, not only the `learns` tests")
    argv = sys.argv[1:]
    pytest_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    unknown = [setting for setting in args.settings if setting not in SETTINGS]
    if unknown:  # (argparse's `choices` refuses an empty list of them too)
        parser.error(f"unknown setting {', '.join(unknown)}; choose from {', '.join(SETTINGS)}")
    outcomes = {setting: run_setting(setting, args.all, pytest_args) for setting in args.settings or SETTINGS}
    print("\n| setting | result |\n|---|---|")
    for setting, (_, closing) in outcomes.items():
        print(f"| {setting} | {closing.strip('= ')} |")
    sys.exit(0 if all(passed for passed, _ in outcomes.values()) else 1)


if __name__ == "__main__":
    main()
