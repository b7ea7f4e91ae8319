"""The bad-input harness: a table of CLI cases and one runner that checks the
contract of the ``weightspace`` command line on bad input.

A case is ``Case(id, command, kind, build, expect)``:

* ``command``: the subcommand under test (``"graph"``, ``"zoo build"``, ...),
  used for the per-command count (``python tests/robustness/report.py``);
* ``kind``: the class of bad input (``"empty"``, ``"truncated"``, ...);
* ``build(c)``: writes the case's inputs under ``c.tmp`` (copies of the
  session assets in ``c.assets``, damaged) and returns the argv. Paths the
  command may write are declared with ``c.out(name)``; marker files that must
  never appear (code smuggled into a pickle or a YAML tag) with ``c.marker()``;
* ``expect``: substrings the error line must contain, naming the file or field
  at fault. An element that is a tuple means "any one of these".

:func:`run_case` invokes ``weightspace.cli.app`` in-process with
``CliRunner.invoke(..., catch_exceptions=False)`` -- an exception that escapes
the CLI's error boundary fails the test with its traceback instead of being
swallowed into ``result.exception`` -- and asserts:

1. exit code 2;
2. stderr is exactly one non-empty line, starting with ``error:``, and
   neither stdout nor stderr contains ``Traceback`` or ``internal error``;
   no warning is issued (under Python's default filters a user would see it
   on stderr beside the error);
3. the error line contains every ``expect`` substring;
4. no marker file appeared;
5. a snapshot (path -> size, mtime_ns, sha256) of the case's directory and
   of the shared assets, taken before and after, differs only inside the
   declared outputs: nothing else was created, changed or deleted.

Typer >= 0.20 vendors click 8.2+, whose ``CliRunner`` has no ``mix_stderr``:
``result.stdout`` and ``result.stderr`` are always separate and
``result.output`` interleaves them, so the runner reads stderr for the error
line and checks both streams for tracebacks.
"""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

#: Seconds one case may run. A case that is not refused up front may start
#: real work (training, a quickstart); it fails instead of hanging the suite.
CASE_TIMEOUT_S = 60


class CaseTimeout(BaseException):
    """Raised by the alarm; a ``BaseException`` so that the CLI's error
    boundary (which catches ``Exception``) cannot turn it into an exit code."""


class ReachedRealWork(BaseException):
    """Raised by stand-ins for expensive entry points (the quickstart) that a
    bad-input case must never reach."""


@dataclass(frozen=True)
class Case:
    id: str
    command: str
    kind: str
    build: Callable[["CaseCtx"], Sequence[str]]
    expect: tuple = ()

    def __repr__(self) -> str:  # pytest shows ids; keep reprs short
        return f"Case({self.id})"


@dataclass
class CaseCtx:
    """What a case builder gets: its own directory and the shared assets."""

    tmp: Path
    assets: "object"
    outputs: list[Path] = field(default_factory=list)
    markers: list[Path] = field(default_factory=list)

    def out(self, name: str) -> str:
        """A path under ``tmp`` the command may create or write."""
        p = self.tmp / name
        self.outputs.append(p)
        return str(p)

    def marker(self, name: str = "PWNED") -> Path:
        """A file that only code smuggled into an input would create."""
        p = self.tmp / name
        self.markers.append(p)
        return p

    def path(self, name: str) -> Path:
        return self.tmp / name


# ------------------------------------------------------------------ snapshot


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def snapshot(roots: Sequence[Path]) -> dict[str, tuple]:
    """``{path: (kind, size, mtime_ns, sha256)}`` of every entry under ``roots``
    (files hashed, directories and links recorded by kind)."""
    snap: dict[str, tuple] = {}
    for root in roots:
        root = Path(root)
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                st = p.lstat()
                if stat.S_ISLNK(st.st_mode):
                    snap[str(p)] = ("link", os.readlink(p))
                elif stat.S_ISDIR(st.st_mode):
                    snap[str(p)] = ("dir",)
                else:
                    snap[str(p)] = ("file", st.st_size, st.st_mtime_ns, _sha256(p))
    return snap


def _inside(path: str, outputs: Sequence[Path]) -> bool:
    p = Path(path)
    return any(p == o or o in p.parents for o in outputs)


def _is_ancestor_dir(path: str, outputs: Sequence[Path]) -> bool:
    p = Path(path)
    return any(p in o.parents for o in outputs)


def snapshot_diff(before: dict, after: dict, outputs: Sequence[Path]) -> list[str]:
    """Human-readable changes outside ``outputs`` (and their parent dirs)."""
    problems = []
    for k in sorted(set(before) | set(after)):
        if _inside(k, outputs):
            continue
        if k not in after:
            problems.append(f"deleted {k}")
        elif k not in before:
            if not (after[k] == ("dir",) and _is_ancestor_dir(k, outputs)):
                problems.append(f"created {k}")
        elif before[k] != after[k]:
            problems.append(f"changed {k}")
    return problems


# ------------------------------------------------------------------- runner


def _alarm(signum, frame):  # pragma: no cover - only on a hang
    raise CaseTimeout(f"case ran longer than {CASE_TIMEOUT_S}s: the bad input was not refused up front")


@dataclass
class Outcome:
    argv: list
    exit_code: int
    stdout: str
    stderr: str
    error_line: str | None
    problems: list[str]


def invoke(argv: Sequence[str]):
    """``CliRunner().invoke(app, argv, catch_exceptions=False)`` with a
    timeout and without ``WEIGHTSPACE_DEBUG``; returns ``(result, warnings)``."""
    from typer.testing import CliRunner

    from weightspace.cli import app

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_TIMEOUT_S)
    try:
        with warnings.catch_warnings(record=True) as caught:
            # Python's default filters, as a user's shell sees them (pytest's
            # capture would otherwise hide warnings printed before the error)
            warnings.resetwarnings()
            warnings.simplefilter("default")
            for cat in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", cat)
            res = CliRunner().invoke(
                app, [str(a) for a in argv], catch_exceptions=False,
                env={"WEIGHTSPACE_DEBUG": None, "COLUMNS": "200"},
            )
        return res, [f"{w.category.__name__}: {w.message}" for w in caught]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def check(case: Case, ctx: CaseCtx, roots: Sequence[Path]) -> Outcome:
    """Build ``case`` in ``ctx``, run it, and return what broke the contract
    (an empty ``problems`` list means the case passed)."""
    argv = list(case.build(ctx))
    before = snapshot(roots)
    try:
        res, warned = invoke(argv)
    except (CaseTimeout, ReachedRealWork) as exc:
        return Outcome(argv, -1, "", "", None, [f"{type(exc).__name__}: {exc}"])
    after = snapshot(roots)
    problems: list[str] = [f"a warning is printed beside the error ({w[:150]})" for w in warned]
    if res.exit_code != 2:
        problems.append(f"exit code {res.exit_code}, expected 2")
    both = res.stdout + res.stderr
    for bad in ("Traceback", "internal error"):
        if bad in both:
            problems.append(f"output contains {bad!r}")
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    error_line = next((ln for ln in lines if ln.startswith("error:")), None)
    if len(lines) != 1:
        problems.append(f"stderr has {len(lines)} non-empty lines, expected exactly one 'error: ...' line")
    elif error_line is None:
        problems.append("the stderr line does not start with 'error:'")
    text = error_line or ""
    for want in case.expect:
        options = want if isinstance(want, tuple) else (want,)
        if not any(o in text for o in options):
            problems.append(f"the error line does not name {' or '.join(map(repr, options))}")
    for m in ctx.markers:
        if m.exists():
            problems.append(f"marker {m.name} exists: code in the input was executed")
    problems += snapshot_diff(before, after, ctx.outputs)
    return Outcome(argv, res.exit_code, res.stdout, res.stderr, error_line, problems)


def describe(case: Case, out: Outcome) -> str:
    """The failure message of a case: what broke, the argv and both streams."""
    return (f"{case.id}: " + "; ".join(out.problems)
            + f"\n--- argv ---\nweightspace {' '.join(map(str, out.argv))}"
            + f"\n--- stdout ---\n{out.stdout[-2000:]}\n--- stderr ---\n{out.stderr[-2000:]}")
