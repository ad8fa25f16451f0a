"""Where the loop's CPU goes: each process's user+system time, from ``/proc`` (Linux).

The loop shares this machine's cores between the producer, the broker and the worker's
roles; the CPU-microseconds each one spends per decision, added up, give the most
decisions per second the machine's cores allow, whatever the code does between them.

>>> cpu_seconds(os.getpid()) > 0
True
"""

from __future__ import annotations

import os
from pathlib import Path

from adaptloop.roles import ROLES, process_name

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (its threads included), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is fields[0]
    return (int(fields[11]) + int(fields[12])) / TICKS


def _stat(pid: str) -> tuple[str, int] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.index("(") + 1 : stat.rindex(")")], int(
        stat[stat.rindex(")") + 2 :].split()[1]
    )


def loop_processes(worker_pids: list[int]) -> dict[str, int]:
    """The processes of a loop run: the workers' roles (by process name), the broker, and this
    process."""
    roles = {process_name(role): role for role in ROLES}
    found = {"bench (producer, model client)": os.getpid()}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(entry.name)
        if stat is None:
            continue
        comm, parent = stat
        if parent in worker_pids and comm in roles:
            found[roles[comm]] = int(entry.name)
        elif comm == "java":
            try:
                if b"kafka.Kafka" in (entry / "cmdline").read_bytes():
                    found["broker"] = int(entry.name)
            except OSError:
                pass
    return found


def cpu_of(processes: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process (those that are gone are left out)."""
    return {
        name: seconds
        for name, pid in processes.items()
        if (seconds := cpu_seconds(pid)) is not None
    }
