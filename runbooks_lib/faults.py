"""How a failover drill breaks a node and brings it back: one small interface, three ways.

:class:`FaultInjector` has ``preflight()`` (read-only: can this injector act
here?), ``inject(node, address, mode)`` and ``restore(node, address, mode)``.
Implementations:

``LabFaults``      the embedded lab's machines (:class:`runbooks_lib.lab.machines.Lab`):
                   hard/graceful power-off, freeze, or a partition from every other
                   machine; restore powers on, resumes or heals.
``CommandFaults``  argv templates for a provider's API (``{node}``, ``{address}``,
                   ``{mode}`` are substituted in each argument, never through a shell).
``ManualFaults``   asks the operator to do it and waits for them to type ``done``;
                   refuses a headless run (no stdin), where a command is needed.

:func:`injector` picks one by name, as the runbook's ``fault_injector``
parameter does. Modes: :data:`MODES`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from runbooks_lib import errors, local
from runbooks_lib.gate import _is_no_stdin

MODES: tuple[str, ...] = ("hard", "graceful", "freeze", "partition")
KINDS: tuple[str, ...] = ("lab", "command", "manual")
PLACEHOLDERS = ("node", "address", "mode")


class FaultNotInjected(errors.CommandFailed):
    """The fault could not be injected: the drill stops (and tears down) instead of measuring nothing."""


class FaultInjector(Protocol):
    """Breaks one node and brings it back."""

    kind: str

    def preflight(self, node: str, mode: str) -> None:
        """Raise PreconditionFailed when this injector cannot act on ``node``; change nothing."""

    def describe(self, node: str, address: str, mode: str) -> tuple[str, str]:
        """(fault, restore) in plain words, for the plan."""

    def inject(self, node: str, address: str, mode: str) -> None:
        """Break ``node``; raise :class:`FaultNotInjected` when that did not happen. Rollback: restore."""

    def restore(self, node: str, address: str, mode: str) -> None:
        """Undo :meth:`inject` (power on, resume, heal). Idempotent."""


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise errors.BadParameters(f"unknown fault mode {mode!r}", fix=f"use one of {', '.join(MODES)}")


@dataclass
class LabFaults:
    """Faults on the embedded lab's machines (needs root, like every lab action)."""

    lab: Any
    kind: str = "lab"

    def preflight(self, node: str, mode: str) -> None:
        _check_mode(mode)
        try:
            self.lab.require_machine(node)
        except errors.RunbookError as exc:
            raise errors.PreconditionFailed(f"the lab has no machine {node!r}: {exc}",
                                            fix="pick fault_node from the lab's machines") from None

    def describe(self, node: str, address: str, mode: str) -> tuple[str, str]:
        if mode == "partition":
            return (f"lab: drop every packet between {node} ({address}) and the other machines",
                    "lab: heal the partition")
        if mode == "freeze":
            return f"lab: freeze {node} ({address}): processes stopped, frames dropped", f"lab: resume {node}"
        return f"lab: {mode} power-off of {node} ({address})", f"lab: power {node} on"

    def inject(self, node: str, address: str, mode: str) -> None:
        _check_mode(mode)
        try:
            if mode == "partition":
                for other in self.lab.machine_names():
                    if other != node:
                        self.lab.partition(node, other)
            else:
                self.lab.poweroff(node, mode=mode)
        except errors.RunbookError as exc:
            raise FaultNotInjected(f"the lab could not {mode}-fault {node}: {exc}",
                                   fix="read the lab's error; `runbooks lab status` shows the machines") from exc

    def restore(self, node: str, address: str, mode: str) -> None:
        if mode == "partition":
            self.lab.heal()
        else:
            self.lab.poweron(node)


def render(template: Sequence[str], *, node: str, address: str, mode: str) -> list[str]:
    """Substitute ``{node}``, ``{address}``, ``{mode}`` in each argument. Raises BadParameters on others."""
    out = []
    for arg in template:
        try:
            out.append(arg.format(node=node, address=address, mode=mode))
        except (KeyError, IndexError, ValueError) as exc:
            raise errors.BadParameters(f"argument {arg!r}: unknown placeholder {exc}",
                                       fix=f"use only {{{'}, {'.join(PLACEHOLDERS)}}}") from None
    return out


@dataclass
class CommandFaults:
    """A provider's API called through commands (e.g. a CLI that stops a VPS), one argv each way."""

    fault: tuple[str, ...]
    power_on: tuple[str, ...] = ()
    timeout: float = 120.0
    kind: str = "command"

    def preflight(self, node: str, mode: str) -> None:
        _check_mode(mode)
        if not self.fault:
            raise errors.PreconditionFailed("fault_injector is 'command' but fault_command is empty",
                                            fix="set fault_command to the argv that breaks {node}")
        render(self.fault, node=node, address="", mode=mode)
        render(self.power_on, node=node, address="", mode=mode)

    def describe(self, node: str, address: str, mode: str) -> tuple[str, str]:
        fault = " ".join(render(self.fault, node=node, address=address, mode=mode))
        back = (" ".join(render(self.power_on, node=node, address=address, mode=mode)) if self.power_on
                else "nothing: power_on_command is empty (bring the node back yourself)")
        return f"run: {fault}", f"run: {back}" if self.power_on else back

    def inject(self, node: str, address: str, mode: str) -> None:
        argv = render(self.fault, node=node, address=address, mode=mode)
        try:
            local.run(argv, timeout=self.timeout)
        except (errors.CommandFailed, errors.WaitTimedOut, OSError) as exc:
            raise FaultNotInjected(f"the fault command failed, so {node} was not faulted: {exc}",
                                   command=argv, fix="run the command by hand and fix it (credentials, node id)"
                                   ) from exc

    def restore(self, node: str, address: str, mode: str) -> None:
        if self.power_on:
            local.run(render(self.power_on, node=node, address=address, mode=mode), timeout=self.timeout)


@dataclass
class ManualFaults:
    """The operator breaks and restores the node by hand (a provider's panel) and says when it is done."""

    ask: Callable[[str], str] = field(default=input)
    say: Callable[[str], None] = field(default=print)
    kind: str = "manual"

    def _ask(self, prompt: str) -> str:
        try:
            return self.ask(prompt)
        except BaseException as exc:  # noqa: BLE001 - only the no-stdin case is handled
            if not _is_no_stdin(exc):
                raise
            raise errors.PreconditionFailed(
                "fault_injector is 'manual' but nobody can answer (headless run: papermill, nbval, a timer)",
                fix="run the notebook interactively, or use fault_injector 'command' with fault_command") from None

    def preflight(self, node: str, mode: str) -> None:
        _check_mode(mode)
        answer = self._ask(f"You will be asked to {mode}-fault {node} by hand during the drill. Type 'ready': ")
        if answer.strip().lower() != "ready":
            raise errors.PreconditionFailed(f"the operator answered {answer.strip()!r}, not 'ready'",
                                            fix="run the cell again when you can act on the node")

    def describe(self, node: str, address: str, mode: str) -> tuple[str, str]:
        return (f"you: {mode}-fault {node} ({address}) when asked, then type 'done'",
                f"you: bring {node} back when asked, then type 'done'")

    def inject(self, node: str, address: str, mode: str) -> None:
        answer = self._ask(f"NOW: {mode}-fault {node} ({address}); type 'done' once it is down: ")
        if answer.strip().lower() != "done":
            raise FaultNotInjected(f"the operator answered {answer.strip()!r}: {node} was not faulted",
                                   fix="rerun the drill when you can fault the node")

    def restore(self, node: str, address: str, mode: str) -> None:
        answer = self._ask(f"Bring {node} ({address}) back; type 'done' once it is up: ")
        if answer.strip().lower() != "done":
            self.say(f"{node} not confirmed back; the wait for Ready below will tell")


def injector(kind: str, *, lab: Any = None, fault_command: Sequence[str] = (),
             power_on_command: Sequence[str] = (), timeout: float = 120.0) -> FaultInjector:
    """The injector named ``kind`` (:data:`KINDS`); ``lab`` defaults to this host's lab (``lab`` kind only)."""
    if kind == "lab":
        if lab is None:
            from runbooks_lib.lab.machines import Lab

            lab = Lab()
        return LabFaults(lab)
    if kind == "command":
        return CommandFaults(tuple(fault_command), tuple(power_on_command), timeout)
    if kind == "manual":
        return ManualFaults()
    raise errors.BadParameters(f"unknown fault_injector {kind!r}", fix=f"use one of {', '.join(KINDS)}")
