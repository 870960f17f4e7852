"""Differential test: collab.ot against the real npm ``ot-text-unicode@4``.

The package is installed once into a cache folder outside the repository
(``$COLLAB_TEST_CACHE`` or ``~/.cache/collab-test``, reused on later runs). Thousands of seeded
random cases go to Node in one batch (``tests/ot_node/run.js``, JSON on stdin and stdout) and
every result must equal ours exactly. Skipped when node/npm are missing or the install fails.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from collab import ot
from collab.ot import Op

PACKAGE = "ot-text-unicode"
MAJOR = "4"
RUN_JS = Path(__file__).parent / "ot_node" / "run.js"
SEED = 20240517
CASES_PER_KIND = 700

# Astral characters, a skin-tone modifier, combining marks, ZWJ, CJK.
CHARS = ["a", "b", "c", " ", "\n", "é", "e", "\u0301", "😀", "👍", "🏽", "中", "𝄞", "\u200d"]


# --------------------------------------------------------------------------- installing


def _cache_root() -> Path:
    explicit = os.environ.get("COLLAB_TEST_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "collab-test"


def _is_installed(prefix: Path) -> bool:
    manifest = prefix / "node_modules" / PACKAGE / "package.json"
    try:
        version = json.loads(manifest.read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError):
        return False
    return isinstance(version, str) and version.startswith(MAJOR + ".")


def _install(prefix: Path) -> str | None:
    """Install the package under ``prefix`` unless it is there; return why it failed, if so.

    The install goes to a scratch folder renamed into place, so an interrupted or concurrent
    install never leaves a half-filled cache behind.
    """
    if _is_installed(prefix):
        return None
    prefix.parent.mkdir(parents=True, exist_ok=True)
    scratch = prefix.with_name(f"{prefix.name}.tmp-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    command = [
        "npm",
        "install",
        "--prefix",
        str(scratch),
        f"{PACKAGE}@{MAJOR}",
        "--no-audit",
        "--no-fund",
        "--no-save",
        "--loglevel=error",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        return f"`{' '.join(command)}` failed: {exc}"
    if done.returncode != 0 or not _is_installed(scratch):
        shutil.rmtree(scratch, ignore_errors=True)
        return f"`{' '.join(command)}` failed ({done.returncode}): {done.stderr.strip()[-500:]}"
    if prefix.exists() and not _is_installed(prefix):
        shutil.rmtree(prefix, ignore_errors=True)  # a broken leftover
    try:
        scratch.rename(prefix)
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)  # someone else finished first
    return None if _is_installed(prefix) else f"{PACKAGE} did not end up in {prefix}"


@pytest.fixture(scope="module")
def node_prefix() -> Path:
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` is not on PATH; cannot compare with npm {PACKAGE}@{MAJOR}")
    prefix = _cache_root() / PACKAGE
    problem = _install(prefix)
    if problem is not None:
        pytest.skip(f"could not install npm {PACKAGE}@{MAJOR}: {problem}")
    return prefix


# --------------------------------------------------------------------------- random cases


def random_text(rng: random.Random, max_len: int = 4) -> str:
    return "".join(rng.choice(CHARS) for _ in range(rng.randint(1, max_len)))


def random_doc(rng: random.Random) -> str:
    return "".join(rng.choice(CHARS) for _ in range(rng.randint(0, 24)))


def random_raw_op(rng: random.Random, doc: str) -> Op:
    """A valid op for ``doc``, often not in normal form."""
    op: Op = []
    pos = 0
    while rng.random() > 0.15:
        remaining = len(doc) - pos
        action = rng.choice(
            ["insert", "skip", "delete", "delete_text"] if remaining else ["insert"]
        )
        if action == "insert":
            op.append(random_text(rng))
            continue
        n = rng.randint(1, min(remaining, 6))
        if action == "skip":
            op.append(n)
        elif action == "delete":
            op.append({"d": n})
        else:
            op.append({"d": doc[pos : pos + n]})
        pos += n
    return op


def random_op(rng: random.Random, doc: str) -> Op:
    return ot.normalize(random_raw_op(rng, doc))


def make_cases(rng: random.Random) -> list[dict[str, Any]]:
    """Cases as {"fn", "args"} in the JS API's terms; all ops passed to JS are in normal form,
    except normalize's input."""
    cases: list[dict[str, Any]] = []
    for _ in range(CASES_PER_KIND):
        doc = random_doc(rng)
        a = random_op(rng, doc)
        b = random_op(rng, doc)
        after_a = ot.apply(doc, a)
        cases += [
            {"fn": "apply", "args": [doc, a]},
            {"fn": "transform", "args": [a, b, "left"]},
            {"fn": "transform", "args": [a, b, "right"]},
            {"fn": "compose", "args": [a, random_op(rng, after_a)]},
            {"fn": "normalize", "args": [random_raw_op(rng, doc)]},
            {"fn": "transformPosition", "args": [rng.randint(0, len(doc) + 2), a]},
        ]
        if rng.random() < 0.2:
            # ops made for documents of different lengths: both sides still define a result
            other = random_op(rng, random_doc(rng))
            cases += [
                {"fn": "transform", "args": [a, other, rng.choice(["left", "right"])]},
                {"fn": "compose", "args": [a, other]},
            ]
    return cases


PYTHON: dict[str, Callable[..., Any]] = {
    "apply": ot.apply,
    "transform": ot.transform,
    "compose": ot.compose,
    "normalize": ot.normalize,
    "transformPosition": ot.transform_position,
}


def run_python(case: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"ok": PYTHON[case["fn"]](*case["args"])}
    except ot.InvalidOp as exc:
        return {"error": str(exc)}


def run_node(prefix: Path, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    done = subprocess.run(
        ["node", str(RUN_JS), str(prefix)],
        input=json.dumps(cases, ensure_ascii=False),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"node failed ({done.returncode}): {done.stderr[-2000:]}"
    results: list[dict[str, Any]] = json.loads(done.stdout)
    assert len(results) == len(cases)
    return results


@pytest.fixture(scope="module")
def comparison(node_prefix: Path) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(case, node result, python result) for every case; node runs once for the module."""
    cases = make_cases(random.Random(SEED))
    node = run_node(node_prefix, cases)
    return [(case, expected, run_python(case)) for case, expected in zip(cases, node, strict=True)]


@pytest.mark.parametrize("fn", sorted(PYTHON))
def test_matches_ot_text_unicode(
    fn: str, comparison: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]
) -> None:
    relevant = [row for row in comparison if row[0]["fn"] == fn]
    assert len(relevant) >= CASES_PER_KIND
    errors = [case for case, expected, _ in relevant if "ok" not in expected]
    assert not errors, f"ot-text-unicode rejected generated cases, e.g. {errors[:3]}"
    mismatches = [
        {"args": case["args"], "node": expected["ok"], "python": got}
        for case, expected, got in relevant
        if got != expected
    ]
    shown = json.dumps(mismatches[:5], ensure_ascii=False, indent=1)
    assert not mismatches, f"{len(mismatches)} of {len(relevant)} {fn} cases differ:\n{shown}"


def test_both_json_encodings_round_trip(node_prefix: Path) -> None:
    """Astral characters reach Node intact whether Python escapes them or not."""
    case = {"fn": "apply", "args": ["a😀\u0301", [1, {"d": "😀"}, "𝄞"]]}
    for ensure_ascii in (True, False):
        done = subprocess.run(
            ["node", str(RUN_JS), str(node_prefix)],
            input=json.dumps([case], ensure_ascii=ensure_ascii),
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=60,
            check=True,
        )
        assert json.loads(done.stdout) == [{"ok": "a𝄞\u0301"}]
        assert ot.apply("a😀\u0301", [1, {"d": "😀"}, "𝄞"]) == "a𝄞\u0301"
