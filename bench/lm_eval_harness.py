"""lm-evaluation-harness as the anchor of `python -m llm eval`: its virtualenv, its runs, the comparison.

The venv holds lm-eval (``lm-eval[hf]==0.4.13``) and its own dependencies only; torch,
transformers, tokenizers and safetensors are the calling interpreter's (a ``.pth`` file adds its
site-packages after the venv's own), so both sides run the very same kernels and the project's
pinned packages are never touched. It is made once, with this machine's pip configuration, under
``<cache>/lm-eval-0.4.13-<python>-<key>`` (llm.env.site.cache_dir: ``$NPUBOX_CACHE``, else
``$XDG_CACHE_HOME/npubox``, else ``~/.cache/npubox``; the key names the interpreter it extends).
``$NPUBOX_LM_EVAL_PYTHON`` names another interpreter with lm-eval instead.

lm-eval's side runs in that interpreter (bench/lm_eval_runner.py); everything here runs in ours.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

LM_EVAL = "lm-eval[hf]==0.4.13"
RUNNER = Path(__file__).resolve().with_name("lm_eval_runner.py")


class LmEvalUnavailable(RuntimeError):
    """lm-eval is not installed and could not be installed (one sentence: where, and why)."""


def venv_dir() -> Path:
    from llm.env.site import cache_dir

    key = hashlib.sha256(sys.prefix.encode()).hexdigest()[:12]
    return cache_dir() / f"lm-eval-0.4.13-py{sys.version_info.major}{sys.version_info.minor}-{key}"


def _has_lm_eval(python: Path) -> bool:
    probe = "import lm_eval, lm_eval.models.huggingface"
    return python.is_file() and subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0


def ensure_venv(log=print) -> Path:
    """The Python of a venv with lm-eval, made (once) if needed; raises LmEvalUnavailable."""
    if os.environ.get("NPUBOX_LM_EVAL_PYTHON"):
        python = Path(os.environ["NPUBOX_LM_EVAL_PYTHON"])
        if not _has_lm_eval(python):
            raise LmEvalUnavailable(f"NPUBOX_LM_EVAL_PYTHON={python}: cannot import lm_eval and its hf model")
        return python
    final = venv_dir()
    if _has_lm_eval(final / "bin" / "python"):
        return final / "bin" / "python"
    shutil.rmtree(final, ignore_errors=True)  # a broken one of ours (its base moved, an interrupted upgrade)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"making {final} ({LM_EVAL} over {sys.prefix}) ...")
    started = time.monotonic()
    try:
        made = subprocess.run([sys.executable, "-m", "venv", str(tmp)], capture_output=True, text=True)
        if made.returncode:
            raise LmEvalUnavailable(f"{tmp}: python -m venv failed: {made.stderr.strip()[-500:]}")
        site_dir = subprocess.run(
            [str(tmp / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        base = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
        # An "import" line of a .pth file runs at start-up: addsitedir also reads the base's own .pth files.
        Path(site_dir, "npubox-base.pth").write_text(
            "".join(f"import site; site.addsitedir({p!r})\n" for p in base), encoding="utf-8"
        )
        pip = subprocess.run(
            [str(tmp / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", LM_EVAL],
            capture_output=True,
            text=True,
        )
        if pip.returncode:
            last = (pip.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise LmEvalUnavailable(f"pip install {LM_EVAL} into {tmp} failed: {last}")
        if not _has_lm_eval(tmp / "bin" / "python"):
            raise LmEvalUnavailable(f"{tmp}: lm_eval installed but cannot be imported")
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.rename(final)
        except OSError:  # made meanwhile by another process
            if not _has_lm_eval(final / "bin" / "python"):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"made {final} in {time.monotonic() - started:.0f} s")
    return final / "bin" / "python"


def isolated_env(work: Path, repo: Path) -> dict[str, str]:
    """Both sides: offline, their caches in the work dir, our package importable."""
    return {
        **os.environ,
        "HF_HOME": str(work / "hf-home"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": str(repo),
    }


@dataclass(frozen=True)
class Timing:
    wall_s: float
    cpu_s: float  # user + system of the process and its threads: what the machine's other load does not add


def timed(cmd: list[str], env: dict[str, str]) -> Timing:
    """Run ``cmd`` (its stderr kept for an error message only); its wall-clock and CPU seconds."""
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(f"failed ({proc.returncode}): {' '.join(cmd[:5])} ...\n{err.read()[-4000:]}")
    return Timing(wall, usage.ru_utime + usage.ru_stime)


def runner(python: Path, command: str, config: dict, env: dict[str, str]) -> Timing:
    """Run bench/lm_eval_runner.py ``command`` with ``config``."""
    path = Path(config["work"]) / f"{command}.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return timed([str(python), str(RUNNER), command, str(path)], env)


@dataclass(frozen=True)
class Comparison:
    n: int
    ours_correct: int
    their_correct: int
    same_answer: int  # questions whose correct answer both sides read the same
    same_prediction: int
    same_prompt: int
    max_delta: float  # largest |our log-likelihood - lm-eval's| over every choice of every question


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))


def compare(ours: dict, theirs: dict[str, dict], prompts: dict[str, list[str]]) -> Comparison:
    """``ours``: the results JSON of `python -m llm eval`; ``theirs``: the runner's output for the
    task (subject -> logprobs, targets, contexts); ``prompts``: subject -> our prompt texts."""
    by_subject: dict[str, list[dict]] = {}
    for p in ours["predictions"]:
        by_subject.setdefault(p["subject"], []).append(p)
    if sorted(by_subject) != sorted(theirs):
        raise AssertionError(f"subjects differ: ours {sorted(by_subject)}, lm-eval {sorted(theirs)}")
    n = ours_correct = their_correct = same_answer = same_pred = same_prompt = 0
    worst = 0.0
    for subject, t in theirs.items():
        mine = by_subject[subject]
        if len(mine) != len(t["logprobs"]):
            raise AssertionError(f"{subject}: {len(mine)} questions here, {len(t['logprobs'])} in lm-eval")
        for m, lp, target, context, prompt in zip(mine, t["logprobs"], t["targets"], t["contexts"], prompts[subject]):
            n += 1
            ours_correct += m["prediction"] == m["answer"]
            their_correct += _argmax(lp) == target
            same_answer += m["answer"] == target
            same_pred += m["prediction"] == _argmax(lp)
            same_prompt += context == prompt
            worst = max(worst, *(abs(a - b) for a, b in zip(m["logprobs"], lp)))
    return Comparison(n, ours_correct, their_correct, same_answer, same_pred, same_prompt, worst)
