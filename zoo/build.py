"""Building a zoo from a recipe: parallel training, single-writer storage, resume.

:func:`build_zoo` expands the recipe into members, skips those already in the
output zoo's index, trains the rest on a backend and writes each finished
member from the calling process (the only sqlite writer). Killing a build and
running the same call again resumes it: finished members are kept, members
that were being trained or written are trained again (the files their
interrupted write left are removed first), and nothing is duplicated. Nothing
the build did not write is ever removed (see :mod:`zoo.store`).

Backends:

``"local"`` (default)
    ``concurrent.futures.ProcessPoolExecutor`` with the ``spawn`` context;
    each worker runs ``torch.set_num_threads(1)``.
``"serial"``
    in the calling process, one member after another (debugging, tiny zoos).
``"ray"``
    Ray tasks (``num_cpus=1`` each) on a local Ray instance, or on an existing
    cluster when ``address`` is given (``"auto"`` or ``"ray://host:10001"``).
    Needs ``pip install ray`` (the ``ray`` extra) and ``zoo`` importable on
    the workers. Results come back to the driver, which writes them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from weightspace.io import check_count
from zoo.errors import ZooError
from zoo.recipe import MemberSpec, Recipe, load_recipe
from zoo.store import Zoo, ZooWriter
from zoo.train import train_member

__all__ = ["build_zoo", "BuildReport", "BACKENDS"]

BACKENDS = ("local", "serial", "ray")


@dataclass
class BuildReport:
    """What a :func:`build_zoo` call did.

    Attributes:
        path: the zoo directory.
        total: members the recipe asks for (after ``max_members``).
        skipped: members already in the index (not retrained).
        trained: members trained and written by this call.
        removed: what unfinished writes of this zoo left (directories with
            the writer's ``.writing`` marker, its temp files), removed on open.
        unknown: entries under ``weights/`` the writer did not write (left alone).
        wall_time: seconds for the whole call.
        train_time: summed per-member training seconds (this call).
    """

    path: Path
    total: int
    skipped: int
    trained: int
    removed: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    wall_time: float = 0.0
    train_time: float = 0.0
    backend: str = "local"
    workers: int = 1

    @property
    def members_per_minute(self) -> float:
        return 60.0 * self.trained / self.wall_time if self.wall_time > 0 else float("nan")

    def open(self):
        """The built :class:`~zoo.store.Zoo`."""
        return Zoo(self.path)

    def to_dict(self) -> dict:
        return {
            "path": str(self.path), "total": self.total, "skipped": self.skipped,
            "trained": self.trained, "removed": list(self.removed), "unknown": list(self.unknown),
            "wall_time": self.wall_time,
            "train_time": self.train_time, "members_per_minute": self.members_per_minute,
            "backend": self.backend, "workers": self.workers,
        }


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def build_zoo(
    recipe: "Recipe | str | Path | Mapping[str, Any]",
    out: str | Path,
    *,
    workers: int | None = None,
    backend: str = "local",
    address: str | None = None,
    max_members: int | None = None,
    progress: bool = True,
    on_member: Callable[[Any], None] | None = None,
) -> BuildReport:
    """Train every member of ``recipe`` that ``out`` does not hold yet.

    Args:
        recipe: a :class:`~zoo.recipe.Recipe`, a dict, a recipe file, or the
            name of a shipped recipe.
        out: zoo directory (created if needed; an existing zoo of the same
            recipe is resumed or, for random search with more members, grown).
        workers: parallel workers (>= 1; default: the CPUs this process may use).
        backend: ``"local"``, ``"serial"`` or ``"ray"``.
        address: Ray cluster address (``backend="ray"`` only).
        max_members: only the first ``max_members`` members of the recipe (>= 1).
        progress: show a tqdm progress bar (with ETA) on stderr.
        on_member: called with each :class:`~zoo.train.MemberResult` after it
            is written (in the calling process).

    Returns:
        a :class:`BuildReport`; ``report.open()`` gives the :class:`~zoo.store.Zoo`.

    Raises:
        ZooError: a member failed to train (members written before stay; run
            again after fixing the cause to resume), or the output directory
            holds a different zoo.
        ZooFormatError: the output's index is missing, empty or unreadable
            while checkpoint files exist (``weightspace zoo repair OUT``).
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    check_count(max_members, "max_members")
    check_count(workers, "workers")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if address is not None and backend != "ray":
        raise ValueError("address= is only meaningful with backend='ray'")
    r = load_recipe(recipe)
    specs = r.members()
    if max_members is not None:
        specs = specs[: int(max_members)]
    workers = int(workers or _default_workers())
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    info = {
        "name": r.name,
        "source": "recipe",
        "recipe": r.to_dict(),
        "recipe_hash": r.hash(ignore_size=True),
    }
    with ZooWriter(out, info, recipe_yaml=r.to_yaml()) as writer:
        existing = {
            int(idx): mid for mid, idx in writer.conn.execute("SELECT member_id, idx FROM members")
        }
        for s in specs:
            if s.index in existing and existing[s.index] != s.member_id:
                raise ZooError(
                    f"{writer.path}: member #{s.index} in the index is {existing[s.index]!r} but the "
                    f"recipe now gives {s.member_id!r} (was the recipe or the library's training "
                    "defaults changed?); build into a new directory"
                )
        done = set(existing.values())
        todo = [s for s in specs if s.member_id not in done]
        report = BuildReport(
            path=writer.path, total=len(specs), skipped=len(specs) - len(todo), trained=0,
            removed=list(writer.removed_orphans), unknown=list(writer.unknown_entries),
            backend=backend, workers=workers,
        )
        bar = tqdm(
            total=len(specs), initial=report.skipped, desc=f"zoo {r.name}", unit="member",
            disable=not progress, dynamic_ncols=True,
        )
        try:
            if todo:
                runner = {"serial": _run_serial, "local": _run_local, "ray": _run_ray}[backend]
                for result in runner(todo, workers=workers, address=address):
                    writer.add_member(
                        member_id=result.member_id, index=result.index, config=result.config,
                        checkpoints=result.checkpoints, seed=result.seed,
                        config_hash=result.config_hash, status=result.status,
                        metrics=result.metrics, wall_time=result.wall_time, extra=result.extra,
                        source="build",
                    )
                    report.trained += 1
                    report.train_time += result.wall_time
                    bar.update(1)
                    if on_member is not None:
                        on_member(result)
        finally:
            bar.close()
    report.wall_time = time.perf_counter() - t0
    return report


# --------------------------------------------------------------------------- backends


def _train_one(spec: dict):
    return train_member(spec, threads=1)


#: Seconds between a pool worker's checks that its builder is still alive.
_WATCHDOG_INTERVAL = 0.2


def _worker_init(parent_pid: int | None = None) -> None:
    import torch

    torch.set_num_threads(1)
    if parent_pid is not None:
        _exit_with_parent(parent_pid)


def _exit_with_parent(parent_pid: int, interval: float = _WATCHDOG_INTERVAL) -> None:
    """End this worker process as soon as ``parent_pid`` (the builder) dies.

    A builder killed with SIGKILL cannot shut its pool down; its workers would
    wait on the pool's pipes forever (and keep the multiprocessing resource
    tracker alive with them). A daemon thread compares ``os.getppid()`` with
    the builder's pid: once the builder is gone the worker is re-parented, and
    it exits at once (``os._exit``: it holds no zoo state; only the builder
    writes). A thread rather than ``prctl(PR_SET_PDEATHSIG)``: the latter fires
    when the *thread* that spawned the worker ends, is Linux-only, and still
    needs this check for a builder that died before the call.
    """
    import threading

    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="zoo-builder-watchdog", daemon=True).start()


def _failed(spec: dict, exc: BaseException) -> ZooError:
    err = ZooError(f"member {spec['member_id']} (#{spec['index']}) failed: {type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err


def _run_serial(todo: list[MemberSpec], *, workers: int, address: str | None) -> Iterator[Any]:
    for s in todo:
        spec = s.to_dict()
        try:
            result = _train_one(spec)
        except Exception as e:
            raise _failed(spec, e) from e
        yield result


def _run_local(todo: list[MemberSpec], *, workers: int, address: str | None) -> Iterator[Any]:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    queue = [s.to_dict() for s in todo]
    queue.reverse()  # pop() from the end keeps recipe order
    max_in_flight = 2 * workers
    ctx = mp.get_context("spawn")
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(queue)), mp_context=ctx,
        initializer=_worker_init, initargs=(os.getpid(),),  # workers exit when this process dies
    )
    pending: dict[Any, dict] = {}
    try:
        while queue or pending:
            while queue and len(pending) < max_in_flight:
                spec = queue.pop()
                pending[pool.submit(_train_one, spec)] = spec
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            # Yield in recipe order among the finished ones (stable output).
            for fut in sorted(finished, key=lambda f: pending[f]["index"]):
                spec = pending.pop(fut)
                exc = fut.exception()
                if exc is not None:
                    raise _failed(spec, exc) from exc
                yield fut.result()
    finally:
        # Do not wait for the workers' interpreter teardown (seconds with torch
        # loaded); they hold no zoo state and exit on their own.
        pool.shutdown(wait=False, cancel_futures=True)


def _run_ray(todo: list[MemberSpec], *, workers: int, address: str | None) -> Iterator[Any]:
    try:
        import ray
    except ImportError:
        raise ZooError(
            "backend='ray' needs Ray: pip install 'ray[default]' (or the weightspace[ray] extra)"
        ) from None
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
        if address is not None:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = workers
            kwargs["include_dashboard"] = False
        ray.init(**kwargs)
        started = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(_train_one)
        queue = [s.to_dict() for s in todo]
        queue.reverse()
        max_in_flight = 2 * workers
        pending: dict[Any, dict] = {}
        try:
            while queue or pending:
                while queue and len(pending) < max_in_flight:
                    spec = queue.pop()
                    pending[remote.remote(spec)] = spec
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    spec = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as e:
                        raise _failed(spec, e) from e
                    yield result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
    finally:
        if started:
            ray.shutdown()
