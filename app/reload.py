"""Reloading keywords.yaml without a restart.

A running `optline serve` or `optline worker` process reloads on SIGHUP: it reads the file
again and, only when the whole file is good (and every brand's events secret is there),
swaps the new rules in with single assignments, so a request or a send sees the old rules
or the new ones, never a mix. A bad file keeps the old rules and logs one line.

`optline reload` finds the processes by their pid files in OPTLINE_RUN_DIR (each process
writes its own, `serve --workers N` children included) and sends each a SIGHUP. `serve
--workers N` also forwards a SIGHUP it gets to its children (uvicorn's own SIGHUP would
restart them, and a child started on a bad file would not start at all).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from app.errors import ConfigError
from app.events import EventPoster, event_environ
from app.keywords import load_rules
from app.providers.registry import check_senders
from app.retire import check_rules_keep_subscribers
from app.web.state import AppState

log = logging.getLogger("optline")

RELOAD_SIGNAL = signal.SIGHUP
_LOCK = threading.Lock()  # two SIGHUPs in a row reload one after the other


def reload_rules(state: AppState) -> bool:
    """Load the keywords file again and swap it in; False (old rules kept, one line logged) when it is bad."""
    with _LOCK:
        old = state.rules
        try:
            rules = load_rules(state.settings.keywords)
            check_senders(rules, state.providers)  # a sender must name a provider this process runs
            try:  # nothing people are subscribed through may vanish unless retired on purpose
                check_rules_keep_subscribers(rules, state.reader)
            except SQLAlchemyError as exc:
                raise ConfigError(f"cannot check the subscribers it would drop ({type(exc).__name__})") from None
            poster = state.sender.event_poster if state.sender is not None else None
            if isinstance(poster, EventPoster):
                poster.reload(rules, event_environ())  # raises before anything changed
        except ConfigError as exc:
            log.error("keywords not reloaded, still using sha256 %s: %s", old.sha256[:12], exc)
            return False
        state.rules = rules
        if state.sender is not None:
            state.sender.rules = rules
        log.info("keywords reloaded from %s: sha256 %s (was %s)", rules.path, rules.sha256[:12], old.sha256[:12])
        return True


def _start_time(pid: int) -> str:
    # The process start time tells a live optline from another process that reused a stale pid.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "-"
    return stat.rsplit(")", 1)[1].split()[19]


def register(run_dir: str, role: str) -> Path:
    """Write this process's pid file (`<role>-<pid>.pid`); returns its path for `unregister`."""
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    path = folder / f"{role}-{pid}.pid"
    path.write_text(f"{pid} {_start_time(pid)}\n")
    return path


def unregister(path: Path | None) -> None:
    """Remove a pid file written by `register`."""
    if path is not None:
        path.unlink(missing_ok=True)


def running(run_dir: str) -> list[int]:
    """The pids of the optline processes registered in `run_dir`; stale files are removed."""
    alive: list[int] = []
    for path in sorted(Path(run_dir).glob("*.pid")):
        try:
            pid_text, started = path.read_text().split()
            pid = int(pid_text)
            os.kill(pid, 0)
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            continue
        if started != "-" and _start_time(pid) not in (started, "-"):
            path.unlink(missing_ok=True)  # that pid is another process now
            continue
        alive.append(pid)
    return alive


def signal_all(run_dir: str) -> list[int]:
    """Send the reload signal to every registered optline process; the pids signalled."""
    done = []
    for pid in running(run_dir):
        try:
            os.kill(pid, RELOAD_SIGNAL)
        except OSError:
            continue
        done.append(pid)
    return done


def forwarding_supervisor() -> Any:
    """uvicorn's multi-process supervisor, with SIGHUP passed on to each child instead of restarting it."""
    from uvicorn.supervisors.multiprocess import Multiprocess

    class Supervisor(Multiprocess):
        def handle_hup(self) -> None:
            log.info("SIGHUP: reloading keywords in %d worker processes", len(self.processes))
            for process in self.processes:
                if process.pid is not None:
                    try:
                        os.kill(process.pid, RELOAD_SIGNAL)
                    except OSError:
                        continue

    return Supervisor


__all__ = ["RELOAD_SIGNAL", "forwarding_supervisor", "register", "reload_rules", "running", "signal_all",
           "unregister"]
