"""Cold start: a fresh interpreter imports each handler module and builds its settings and
clients, timed from outside (interpreter start included), as a ratio to a fresh interpreter
doing `import boto3; boto3.client("dynamodb")`. All runs interleaved, so load drift hits
both sides alike; the median of N is reported. Our code is imported as `sam build` ships it:
copied and compiled by infra/lambda/Makefile's `code` target (dependencies come from the venv,
compiled by pip at install, as the baseline's boto3 is)."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import REGION, ROOT, Row, median, module_exists, not_measured

if TYPE_CHECKING:
    from jobtracker_local.template import FunctionSpec

TARGET_RATIO = 1.3
BASELINE = 'import boto3; boto3.client("dynamodb")'

_CLIENT = 'import botocore.session; botocore.session.Session().create_client("dynamodb")\n'
_POWERTOOLS = "from aws_lambda_powertools import Logger, Metrics\n"
_BATCH = "from aws_lambda_powertools.utilities.batch import BatchProcessor\n"
_ONE_MODEL = "from pydantic import BaseModel\nclass M(BaseModel):\n    x: int\nM(x=1)\n"
#: What DESIGN.md's stack costs before any code of ours (the functions build a botocore client,
#: use Powertools and validate with pydantic models), beside the functions in the same run: a
#: function's ratio minus its floor's is what its own code and models cost.
FLOORS = {
    "botocore client + Powertools Logger/Metrics + pydantic with one model": _CLIENT
    + _POWERTOOLS
    + _ONE_MODEL,
    "the same + Powertools BatchProcessor (the stream consumers)": _CLIENT
    + _POWERTOOLS
    + _BATCH
    + _ONE_MODEL,
}

#: Imports the handler module, then calls every zero-argument cached builder it defines
#: (`@lru_cache`/`@cache` functions such as `service()`), which is how handlers build their
#: settings and clients once per process, plus the builders named in BUILT_ELSEWHERE (argv[3:],
#: "module:function"). Prints what it built.
PROBE = """
import functools, importlib, inspect, json, os, sys
mod = importlib.import_module(sys.argv[1])
built = []
for name, obj in sorted(vars(mod).items()):
    if isinstance(obj, functools._lru_cache_wrapper) and getattr(obj, "__module__", "") == mod.__name__:
        params = inspect.signature(obj).parameters.values()
        if all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
            obj()
            built.append(name)
for spec in sys.argv[3:]:
    module, _, name = spec.partition(":")
    getattr(importlib.import_module(module), name)()
    built.append(spec)
handler = getattr(mod, sys.argv[2], None)
info = {"built": built, "handler": callable(handler), "file": mod.__file__}
if os.environ.get("PROBE_MODULES"):  # tests/unit/test_cold_imports.py; not inside the timed runs
    info["modules"] = sorted(sys.modules)
print(json.dumps(info))
"""

#: Handlers whose settings and clients are built by a cached builder of another module of their
#: package. The API builds its collaborators on the first request that needs one (every routed
#: request: `authenticate` provisions the caller), so a cold start that skipped them would
#: measure less than the first request pays.
BUILT_ELSEWHERE: dict[str, list[str]] = {"api.handler": ["api.deps:_from_environment"]}

MAKEFILE = ROOT / "infra" / "lambda" / "Makefile"
LAYER_CODE = ROOT / "layers" / "common"


def build_code(folder: Path, into: Path, runtime_path: str = "/var/task", *make_args: str) -> Path:
    """One CodeUri/ContentUri folder's packages as the build ships them (copied, bytecode);
    `runtime_path` is where Lambda will find them (/opt/python for the layer); `make_args`
    override the Makefile's variables. RuntimeError with make's message when the build fails."""
    done = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-f",
            str(MAKEFILE),
            "code",
            f"ARTIFACTS_DIR={into}",
            f"LAMBDA_PYTHON={sys.executable}",
            f"RUNTIME_PATH={runtime_path}",
            *make_args,
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"make code in {folder}: {done.stderr.strip()[-500:]}")
    return into


class _FakeAttributes(dict[str, str]):
    """GetAtt values for any resource: plausible ARNs, never real ones."""

    def __init__(self, types: dict[str, str]) -> None:
        super().__init__()
        self._types = types

    def __contains__(self, key: object) -> bool:
        return True

    def __bool__(self) -> bool:  # `resolve` treats an empty mapping as "none given"
        return True

    def __missing__(self, key: str) -> str:
        logical_id, _, attribute = key.partition(".")
        kind = self._types.get(logical_id, "")
        if kind.endswith("::Role"):
            return f"arn:aws:iam::123456789012:role/{logical_id}"
        if kind.endswith("::Function"):
            return f"arn:aws:lambda:{REGION}:123456789012:function:{logical_id}"
        if kind.endswith("::Queue") and attribute != "Arn":
            return f"https://sqs.{REGION}.amazonaws.com/123456789012/{logical_id}"
        service = kind.split("::")[1].lower() if "::" in kind else "bench"
        suffix = "" if attribute == "Arn" else f"/{attribute}"
        return f"arn:aws:{service}:{REGION}:123456789012:{logical_id}{suffix}"


def _env(function_env: dict[str, Any]) -> dict[str, str]:
    from jobtracker_local.template import load_template, resolve

    template = load_template()
    refs: dict[str, Any] = {
        **dict(template.parameter_defaults().items()),
        **{logical_id: logical_id for logical_id in template.resources},
        "AWS::Region": REGION,
        "AWS::AccountId": "123456789012",
        "AWS::StackName": "jobtracker",
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
    }
    attrs = _FakeAttributes({k: v["Type"] for k, v in template.resources.items()})
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and k not in ("POWERTOOLS_LOG_LEVEL", "LOG_LEVEL")
    }
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
        PYTHONDONTWRITEBYTECODE="1",
    )
    for key, raw in function_env.items():
        try:
            value = resolve(raw, refs, attrs)
        except KeyError:
            value = "bench"
        env[key] = "" if value is None else str(value)
    return env


def probe(spec: FunctionSpec, pythonpath: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """Arguments (after the interpreter) and environment of one function's cold-start probe."""
    env = _env(spec.environment)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    return ["-c", PROBE, spec.module, spec.attribute, *BUILT_ELSEWHERE.get(spec.module, [])], env


def instructions(probes: dict[str, tuple[list[str], dict[str, str]]]) -> dict[str, int] | None:
    """Instructions each probe executes, counted by callgrind; None without valgrind, and a probe
    that failed or timed out under it is left out.

    Beside the wall times: on a shared machine a median of 7 still moves by 0.1-0.2x from run to
    run, while an instruction count with a fixed hash seed is the same every time (it does not see
    I/O or cache misses, so it is a cross-check, not the metric). Probes run in parallel, one per
    CPU."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None

    def count(item: tuple[str, tuple[list[str], dict[str, str]]]) -> tuple[str, int | None]:
        key, (code, env) = item
        try:
            done = subprocess.run(
                [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, *code],
                # Python salts str hashes per process, which moves the count by ~0.1%.
                env={**env, "PYTHONHASHSEED": "0"},
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
        except (subprocess.TimeoutExpired, OSError):
            return key, None
        found = re.search(r"Collected : (\d+)", done.stderr)
        return key, int(found.group(1)) if done.returncode == 0 and found else None

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return {key: n for key, n in pool.map(count, probes.items()) if n is not None}


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(code: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds (the metric), CPU seconds of the child (beside it: on a loaded machine the
    CPU ratio shows the work done, the wall ratio also how long it waited), stdout."""
    cpu_before = _cpu_children()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else "failed")
    return elapsed, _cpu_children() - cpu_before, done.stdout.strip()


def passes(wall_ratio: float, instructions_ratio: float | None) -> bool:
    """The target met: a wall-time median of 7 moves by 0.1-0.2x between runs on a shared
    machine, so a pass also needs the deterministic instruction count within the target (when
    valgrind could count it)."""
    return wall_ratio <= TARGET_RATIO and (instructions_ratio is None or instructions_ratio <= TARGET_RATIO)


def measure(repeats: int = 7) -> list[Row]:
    from jobtracker_local.template import load_template

    functions = load_template().functions()
    with tempfile.TemporaryDirectory(prefix="jobtracker-coldstart-") as work:
        return _measure(functions, Path(work), repeats)


def _measure(functions: dict[str, Any], work: Path, repeats: int) -> list[Row]:
    base_env = _env({})
    layer = build_code(LAYER_CODE, work / "layer", "/opt/python")
    builds = {
        uri: build_code(uri, work / f"function-{n}")
        for n, uri in enumerate(sorted({s.code_uri for s in functions.values()}))
    }
    probes: dict[str, tuple[list[str], dict[str, str]]] = {}
    rows: list[Row] = []
    for logical_id, spec in sorted(functions.items()):
        label = f"cold start {logical_id} ({spec.handler})"
        if not module_exists(spec.module):
            rows.append(
                not_measured(label, f"<= {TARGET_RATIO}x", f"module {spec.module} does not exist yet", "x")
            )
            continue
        # Lambda's order: /var/task, then the layer's /opt/python, then the runtime's packages.
        probes[logical_id] = probe(spec, [str(builds[spec.code_uri]), str(layer)])

    # Warm the file cache once so the first sample is not an outlier.
    _run(["-c", BASELINE], base_env)
    failures: dict[str, str] = {}
    built: dict[str, str] = {}
    baseline: list[float] = []
    baseline_cpu: list[float] = []
    samples: dict[str, list[float]] = {k: [] for k in probes}
    cpu: dict[str, list[float]] = {k: [] for k in probes}
    floors: dict[str, list[float]] = {k: [] for k in FLOORS}
    for _ in range(repeats):
        seconds, cpu_seconds, _ = _run(["-c", BASELINE], base_env)
        baseline.append(seconds)
        baseline_cpu.append(cpu_seconds)
        for name, floor in FLOORS.items():
            floors[name].append(_run(["-c", floor], base_env)[0])
        for logical_id, (code, env) in probes.items():
            if logical_id in failures:
                continue
            try:
                seconds, cpu_seconds, out = _run(code, env)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                failures[logical_id] = str(exc)
                continue
            samples[logical_id].append(seconds)
            cpu[logical_id].append(cpu_seconds)
            info = json.loads(out.splitlines()[-1])
            if not info["file"].startswith(str(work)):
                failures[logical_id] = f"imported {info['file']}, not the built copy"
                continue
            built[logical_id] = ", ".join(f"{b}()" for b in info["built"]) or "import only"

    base = median(baseline)
    base_cpu = median(baseline_cpu)
    rows.insert(
        0,
        Row(
            "cold start baseline: import boto3; boto3.client('dynamodb')",
            round(base * 1000, 1),
            "ms",
            "reference",
            None,
            f"median of {repeats}; CPU {base_cpu * 1000:.0f} ms",
        ),
    )
    counted = instructions(
        {"baseline": (["-c", BASELINE], base_env)}
        | {name: (["-c", floor], base_env) for name, floor in FLOORS.items()}
        | {k: v for k, v in probes.items() if k not in failures}
    )

    def instruction_ratio(key: str) -> float | None:
        if counted is None or key not in counted or "baseline" not in counted:
            return None
        return counted[key] / counted["baseline"]

    def by_instructions(key: str) -> str:
        if counted is None:
            return "instructions not counted (no valgrind)"
        if (ratio := instruction_ratio(key)) is None:
            return "instructions not counted (callgrind failed)"
        return f"instructions {ratio:.2f}x (callgrind, deterministic)"

    for position, (name, times) in enumerate(floors.items(), start=1):
        value = median(times)
        rows.insert(
            position,
            Row(
                f"cold start floor of the stack: {name}",
                round(value / base, 2),
                "x",
                "reference",
                None,
                f"{value * 1000:.0f} ms vs {base * 1000:.0f} ms; {by_instructions(name)}; no code of ours",
            ),
        )
    for logical_id, (_, _) in probes.items():
        spec = functions[logical_id]
        label = f"cold start {logical_id} ({spec.handler})"
        if logical_id in failures:
            rows.append(
                Row(label, None, "x", f"<= {TARGET_RATIO}x", False, f"failed: {failures[logical_id]}")
            )
            continue
        value = median(samples[logical_id])
        ratio = value / base
        instructions_ratio = instruction_ratio(logical_id)
        rows.append(
            Row(
                label,
                round(ratio, 2),
                "x",
                f"<= {TARGET_RATIO}x",
                passes(ratio, instructions_ratio),
                f"{value * 1000:.0f} ms vs {base * 1000:.0f} ms; CPU ratio "
                f"{median(cpu[logical_id]) / base_cpu:.2f}; {by_instructions(logical_id)}; "
                f"built {built.get(logical_id, '?')}; code compiled as sam build ships it",
            )
        )
    return rows
