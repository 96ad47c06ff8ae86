"""Benchmarks of command inspection and the approval broker (issue 4).

1. Enter-to-target delay: a real interactive bash in a pseudo-terminal, lines typed through
   the shell gate with a realistic rule set. For each allowed line, the time from the Enter
   reaching the gate to the Enter being written to bash: the delay inspection adds. Baseline in
   the same run: bash's own round trip for the same Enter written directly (Enter to the first
   byte of its answer), so the added delay can be read against what the user already waits.
2. Hold push latency: a hold created in the approval service, to the event arriving at a client
   subscribed on the control socket (a separate connection, msgpack over a UNIX socket).

    python bench/policy.py [--lines 300] [--holds 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import pty
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from proxy.holds.broker import ApprovalBroker, Person
from proxy.holds.control import ControlClient, ControlServer, socket_path
from proxy.holds.enforcement import Outcome
from proxy.holds.service import ApprovalService
from proxy.line_detector import CommandLine, LineDetector
from proxy.policy import Caller, Verdict, decide_command_line, parse_policy
from proxy.shell_gate import GuardGate
from storage.sqlite_state import SqliteState
from storage.state import Hold

POLICY = parse_policy(
    {
        "rules": [
            {"name": "no-recursive-delete", "shell": "rm -rf *", "action": "deny"},
            {"name": "no-mkfs", "shell": "mkfs*", "action": "deny"},
            {"name": "no-dd-disks", "shell": "dd * of=/dev/*", "action": "deny"},
            {
                "name": "restarts",
                "shell": "systemctl restart *",
                "action": "review",
                "approvers": ["oncall"],
            },
            {"name": "no-shutdown", "shell": "shutdown *", "action": "deny"},
        ]
    },
    "bench",
)
ALICE = Caller("alice", frozenset({"dev"}))
LINES = [  # {n} makes every line new, so no verdict comes from a cache
    "ls -la /tmp/{n} | grep -v cache | head -n 3",
    'echo "$(date +%s)" {n} && true',
    "for i in 1 2 {n}; do echo $i; done",
    "cat /etc/hostname /dev/null{n} 2>/dev/null; uname -s",
    "sudo -n true {n} 2>/dev/null || echo no-sudo",
    "bash -c 'echo nested {n}'",
    # plain lines, the most common kind typed at a prompt
    "ls -la /var/log/app{n}",
    "tail -n 50 /var/log/syslog.{n}",
    "systemctl status nginx-{n}",
    "df -h /srv/{n}",
    "id -u {n}",
    "ps aux --sort=-rss",
]


async def _held(service: ApprovalService, **request: Any) -> Hold:
    """Hold a command and wait for its outcome, as a held session does."""
    return await service.wait_for(await service.request_hold(**request))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Bash:
    def __init__(self) -> None:
        env = {"PATH": os.environ["PATH"], "TERM": "xterm", "PS1": "$ ", "INPUTRC": "/dev/null"}
        self.pid, self.master = pty.fork()
        if self.pid == 0:
            os.chdir(tempfile.mkdtemp(prefix="hoop-bench-"))  # whatever is typed lands here
            os.execvpe("bash", ["bash", "--norc", "--noprofile", "-i"], env)
        os.set_blocking(self.master, False)
        self.output = asyncio.Event()
        self.buffer = bytearray()
        self.on_output = lambda data: None
        asyncio.get_running_loop().add_reader(self.master, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:
            data = b""
        if data:
            self.on_output(data)
            self.buffer += data
            self.output.set()

    async def settle(self) -> None:
        while True:
            self.output.clear()
            try:
                await asyncio.wait_for(self.output.wait(), 0.05)
            except TimeoutError:
                return

    async def prompt(self) -> None:
        """Wait for bash's prompt after a command, so typing starts where a user's would."""
        for _ in range(200):
            if self.buffer.endswith(b"$ "):
                return
            self.output.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.output.wait(), 0.05)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)
        os.kill(self.pid, 9)
        os.waitpid(self.pid, 0)


async def enter_delay(lines: int) -> tuple[list[float], list[float]]:
    bash = Bash()
    await bash.settle()
    added: list[float] = []
    entered_at = 0.0

    def to_target(data: bytes) -> None:
        if data == b"\r":
            added.append(time.perf_counter() - entered_at)
        os.write(bash.master, data)

    def decide(line: CommandLine) -> Verdict | None:
        return decide_command_line(POLICY, ALICE, "web1", line)

    async def enforce(command: str, verdict: Verdict, notify: object) -> Outcome:
        return Outcome(verdict.action.value == "allow")

    gate = GuardGate(
        LineDetector(120),
        decide=decide,
        enforce=enforce,
        to_target=to_target,
        to_caller=lambda data: None,
    )
    bash.on_output = gate.output
    direct: list[float] = []
    for number in range(lines):
        text = LINES[number % len(LINES)].format(n=number)
        await bash.prompt()
        gate.input(text.encode())
        await bash.settle()
        entered_at = time.perf_counter()
        gate.input(b"\r")
        await bash.settle()
        # Baseline: the same line again, Enter written straight to bash.
        gate.detector.line_finished()
        await bash.prompt()
        os.write(bash.master, text.encode())
        await bash.settle()
        bash.output.clear()
        started = time.perf_counter()
        os.write(bash.master, b"\r")
        await bash.output.wait()
        direct.append(time.perf_counter() - started)
        await bash.settle()
        progress(f"enter delay {number + 1}/{lines}")
    await gate.close()
    bash.close()
    return added, direct


async def hold_push(holds: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        control = ControlServer(
            socket_path(data_dir), {getpass.getuser(): Person("bob", frozenset({"oncall"}))}.get
        )
        service = ApprovalService(ApprovalBroker(SqliteState.in_data_dir(data_dir), "gw"), control)
        await control.start()
        await service.start()
        client = await ControlClient.connect(socket_path(data_dir))
        await client.call("subscribe", topics=["holds"])
        events = client.events()
        latencies: list[float] = []
        for number in range(holds):
            started = time.perf_counter()
            waiting = asyncio.ensure_future(
                _held(
                    service,
                    session_id="s",
                    user="alice",
                    target="web1",
                    command=f"cmd {number}",
                    rule="r",
                    approvers=["oncall"],
                    approvals=1,
                    timeout_s=600,
                )
            )
            while (await anext(events))["event"] != "hold.created":
                pass
            latencies.append(time.perf_counter() - started)
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
            await anext(events)  # the withdrawal
            progress(f"hold push {number + 1}/{holds}")
        await client.close()
        await service.stop()
        await control.stop()
        return latencies


def progress(text: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{text}\x1b[K")
        sys.stderr.flush()


def report(label: str, values: list[float], goal_ms: float | None = None) -> str:
    p50, p99 = statistics.median(values) * 1000, percentile(values, 0.99) * 1000
    line = f"{label:<46} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms"
    if goal_ms is not None:
        line += f"   goal p99 < {goal_ms:g} ms: {'met' if p99 < goal_ms else 'NOT met'}"
    return line


async def main_async(args: argparse.Namespace) -> None:
    added, direct = await enter_delay(args.lines)
    pushed = await hold_push(args.holds)
    progress("")
    print(report("Enter -> target, added by inspection", added, 2.0))
    print(report("baseline: bash's own answer to an Enter", direct))
    ratio = statistics.median(added) / statistics.median(direct)
    print(f"{'added delay / bash round trip (medians)':<46} {ratio:.2f}x")
    print(report("hold created -> subscriber has the event", pushed, 50.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=300, help="allowed lines to time")
    parser.add_argument("--holds", type=int, default=300, help="holds to time")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
