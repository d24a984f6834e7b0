"""Kubespray: find the checkout, build ansible-playbook command lines, run them.

Runs are always ``cwd = the Kubespray directory`` (its ansible.cfg holds the
fact cache that ``facts.yml`` then ``--limit`` relies on) and ``-b``. Prompts
would block a headless run, so remove-node gets ``-e skip_confirmation=yes``
and reset ``-e reset_confirmation=yes``. Output is streamed line by line to a
callback and a log file; the PLAY RECAP and the failed tasks are parsed from it.

Host keys are always verified against the cluster's known_hosts file (a
required argument), whatever the checkout's ansible.cfg says: Kubespray's own
turns host_key_checking off and sets ``UserKnownHostsFile=/dev/null``. The
run's environment overrides both (ANSIBLE_HOST_KEY_CHECKING, ANSIBLE_SSH_ARGS:
the checkout's ssh_args with its host-key options replaced); the checkout is
never edited. A host whose key is unknown or changed fails the run with a
HostKeyError before any task runs on it.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runbooks_lib import errors, knownhosts, local
from runbooks_lib.inventory import ssh_pins
from runbooks_lib.runbook import redact

# Logical name -> file names, preferred first. facts.yml moved to playbooks/ in
# v2.22; v2.30+ also ship underscore names next to the dashed ones.
PLAYBOOKS: dict[str, tuple[str, ...]] = {
    "cluster": ("cluster.yml",),
    "facts": ("playbooks/facts.yml", "facts.yml"),
    "scale": ("scale.yml",),
    "remove-node": ("remove-node.yml", "remove_node.yml"),
    "reset": ("reset.yml",),
    "upgrade-cluster": ("upgrade-cluster.yml", "upgrade_cluster.yml"),
    "recover-control-plane": ("recover-control-plane.yml", "recover_control_plane.yml"),
}
# Extra vars that keep a playbook from waiting at a prompt (papermill has no stdin).
NO_PROMPT_VARS: dict[str, dict[str, str]] = {
    "remove-node": {"skip_confirmation": "yes"},
    "reset": {"reset_confirmation": "yes"},
}

OUTPUT_TAIL_CHARS = 8000
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Checkout:
    """A Kubespray directory and the playbook files it has."""

    path: Path
    version: str  # "v2.19.0", "v2.26.1-12-gabcdef0" or "unknown"
    version_source: str  # "git", "galaxy.yml" or "unknown"
    playbooks: Mapping[str, Path] = field(default_factory=dict)

    @property
    def release(self) -> tuple[int, int] | None:
        """(major, minor), e.g. (2, 19), or None when unknown."""
        match = _VERSION.match(self.version)
        return (int(match[1]), int(match[2])) if match else None

    def playbook(self, name: str) -> Path:
        """Path (relative to the checkout) of a logical playbook such as ``facts``."""
        if name in self.playbooks:
            return self.playbooks[name]
        if name.endswith(".yml") and (self.path / name).is_file():
            return Path(name)
        wanted = PLAYBOOKS.get(name, (name,))
        raise errors.PreconditionFailed(
            f"Kubespray at {self.path} ({self.version}) has no {' or '.join(wanted)}",
            fix="check out a Kubespray release that has this playbook, or check kubespray_dir",
        )


def detect(path: str | Path, *, git: str = "git", timeout: float = 15.0) -> Checkout:
    """Inspect a Kubespray checkout. Read-only (runs ``git describe --tags``).

    Raises BadParameters when ``path`` is missing or is not a Kubespray
    directory (no cluster.yml).
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise errors.BadParameters(
            f"Kubespray directory {root} does not exist",
            fix="clone it (git clone https://github.com/kubernetes-sigs/kubespray; git checkout vX.Y.Z) "
                "and pass its path as kubespray_dir",
        )
    if not (root / "cluster.yml").is_file():
        raise errors.BadParameters(
            f"{root} is not a Kubespray checkout: it has no cluster.yml",
            fix="pass the top directory of the Kubespray checkout (the one with cluster.yml and ansible.cfg)",
        )
    playbooks: dict[str, Path] = {}
    for name, candidates in PLAYBOOKS.items():
        for candidate in candidates:
            if (root / candidate).is_file():
                playbooks[name] = Path(candidate)
                break
    version, source = "unknown", "unknown"
    if (root / ".git").exists():
        try:
            res = local.run([git, "-C", str(root), "describe", "--tags"], timeout=timeout, check=False)
        except errors.RunbookError:
            res = None  # git missing: fall back to the files
        if res is not None and res.ok and res.stdout.strip():
            version, source = res.stdout.strip(), "git"
    if source == "unknown" and (root / "galaxy.yml").is_file():
        match = re.search(r"^version:\s*['\"]?([0-9][^'\"\s]*)", (root / "galaxy.yml").read_text(), re.MULTILINE)
        if match:
            version, source = f"v{match[1]}", "galaxy.yml"
    # Absolute, symbolic links kept: the path the operator named is the one shown (and run from).
    return Checkout(Path(os.path.abspath(root)), version, source, playbooks)


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class PlaybookCommand:
    """An ansible-playbook invocation: argument list and the directory to run it in."""

    argv: tuple[str, ...]
    cwd: Path
    playbook: str  # file name relative to cwd, e.g. "playbooks/facts.yml"
    known_hosts: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # the host-key settings the run needs

    def __str__(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return f"cd {shlex.quote(str(self.cwd))} && {env + ' ' if env else ''}{shlex.join(self.argv)}"


def checkout_ssh_args(path: str | Path) -> str | None:
    """``[ssh_connection] ssh_args`` of the ansible.cfg in ``path`` (None when unset or no file)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False, inline_comment_prefixes=(";",))
    try:
        parser.read(Path(path) / "ansible.cfg")
    except configparser.Error as exc:
        raise errors.BadParameters(f"cannot read {Path(path) / 'ansible.cfg'}: {exc}",
                                   fix="check the Kubespray checkout's ansible.cfg") from None
    return parser.get("ssh_connection", "ssh_args", fallback=None)


def host_key_env(checkout: Checkout, known_hosts: str | Path) -> dict[str, str]:
    """Environment that makes ansible-playbook in ``checkout`` verify host keys against ``known_hosts``.

    ANSIBLE_HOST_KEY_CHECKING=True and ANSIBLE_SSH_ARGS = the checkout's
    ssh_args (ControlMaster, ControlPersist, ConnectionAttempts... kept) with
    UserKnownHostsFile=KNOWN_HOSTS, GlobalKnownHostsFile=/dev/null and
    StrictHostKeyChecking=yes instead of its own host-key options. Raises
    BadParameters when ``known_hosts`` does not exist. Reads ansible.cfg only.
    """
    path = Path(known_hosts).expanduser()
    if not path.is_file():
        raise errors.BadParameters(
            f"known_hosts file {path} does not exist",
            fix="pass the cluster's known_hosts (the file the ssh module uses) with every host's key pinned; "
                "host keys are always verified")
    return {"ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_SSH_ARGS": knownhosts.ssh_args(checkout_ssh_args(checkout.path), path)}


def _extra_var(key: str, value: object) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise errors.BadParameters(f"extra var name {key!r} is not a valid Ansible variable name",
                                   fix="use letters, digits and underscores")
    # key=value keeps the command readable (as Kubespray's docs write it); JSON keeps
    # the type of non-strings and survives spaces and quotes in strings.
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_.,:/@%+-]*", value):
        return f"{key}={value}"
    return json.dumps({key: value}, separators=(",", ":"))


def command(
    checkout: Checkout,
    playbook: str,
    *,
    inventory: str | Path,
    known_hosts: str | Path,
    ansible_playbook: str | Path = "ansible-playbook",
    limit: str | Sequence[str] | None = None,
    extra_vars: Mapping[str, object] | None = None,
    become: bool = True,
    verbosity: int = 0,
    answer_prompts: bool = True,
    tags: str | Sequence[str] | None = None,
) -> PlaybookCommand:
    """Build ``ansible-playbook -i INV -b PLAYBOOK [--limit ...] [--tags ...] [-e k=v ...]``.

    ``playbook`` is a logical name (``facts``, ``remove-node``...) or a file in
    the checkout. The no-prompt vars of remove-node/reset are added unless
    ``answer_prompts`` is False (then the playbook asks, as on a terminal).
    ``known_hosts`` is the cluster's known_hosts file: the command carries the
    environment that verifies every host key against it (:func:`host_key_env`).
    Raises BadParameters for a missing inventory or known_hosts,
    PreconditionFailed for a playbook the checkout lacks. Nothing is run.
    """
    inv = Path(inventory).expanduser()
    if not inv.is_absolute():
        inv = Path.cwd() / inv  # cwd becomes the checkout: resolve against the caller's cwd now
    if not inv.exists():
        raise errors.BadParameters(f"inventory {inv} does not exist", fix="pass the inventory path (inventory parameter)")
    book = checkout.playbook(playbook)
    argv: list[str] = [str(ansible_playbook), "-i", str(inv)]
    if become:
        argv.append("-b")
    argv.append(str(book))
    if limit:
        argv.append(f"--limit={limit if isinstance(limit, str) else ','.join(limit)}")
    if tags:
        argv.append(f"--tags={tags if isinstance(tags, str) else ','.join(tags)}")
    logical = next((n for n, files in PLAYBOOKS.items() if str(book) in files), playbook)
    no_prompt = NO_PROMPT_VARS.get(logical, {}) if answer_prompts else {}
    merged: dict[str, object] = {**no_prompt, **dict(extra_vars or {})}
    for key, value in merged.items():
        argv += ["-e", _extra_var(key, value)]
    if verbosity:
        argv.append("-" + "v" * verbosity)
    env = host_key_env(checkout, known_hosts)
    return PlaybookCommand(tuple(argv), checkout.path, str(book), Path(known_hosts).expanduser().resolve(), env)


# --------------------------------------------------------------------------- output parsing


@dataclass(frozen=True)
class HostStats:
    """One PLAY RECAP line."""

    host: str
    ok: int = 0
    changed: int = 0
    unreachable: int = 0
    failed: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0

    @property
    def good(self) -> bool:
        return self.unreachable == 0 and self.failed == 0


@dataclass(frozen=True)
class FailedTask:
    """A task that failed (or could not reach its host) and why."""

    task: str
    host: str
    status: str  # "failed" | "unreachable"
    message: str


def strip_colors(text: str) -> str:
    return _ANSI.sub("", text)


_RECAP_LINE = re.compile(r"^(?P<host>\S+)\s*:\s*(?P<stats>(?:\w+=\d+\s*)+)$")
_TASK = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(?P<name>.*)\]\s*\**\s*$")
_FAIL = re.compile(
    r"^(?:fatal|failed): \[(?P<host>[^\]]+?)(?: -> [^\]]+)?\]:? (?:\(item=.*?\) )?"
    r"(?:(?P<status>FAILED|UNREACHABLE)! )?=> (?P<body>.*)$"
)


def parse_recap(output: str) -> dict[str, HostStats]:
    """Per-host stats from the last PLAY RECAP in ``output`` (colours are ignored)."""
    lines = strip_colors(output).splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("PLAY RECAP")]
    if not starts:
        return {}
    recap: dict[str, HostStats] = {}
    for line in lines[starts[-1] + 1:]:
        match = _RECAP_LINE.match(line.strip())
        if not match:
            if recap and line.strip():
                break
            continue
        stats = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match["stats"])}
        known = {k: v for k, v in stats.items() if k in HostStats.__dataclass_fields__}
        recap[match["host"]] = HostStats(match["host"], **known)
    return recap


def _message(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()
    if not isinstance(data, dict):
        return str(data)
    parts = [str(data.get("msg", "")).strip()]
    stderr = str(data.get("stderr", "") or "").strip()
    if stderr and stderr not in parts[0]:
        parts.append(f"stderr: {errors.tail(stderr, 3)}")
    return " | ".join(p for p in parts if p) or body.strip()[:500]


def parse_failures(output: str) -> list[FailedTask]:
    """Failed and unreachable tasks, in order; failures followed by ``...ignoring`` are left out."""
    lines = strip_colors(output).splitlines()
    found: list[FailedTask] = []
    task = "(before the first task)"
    for i, line in enumerate(lines):
        header = _TASK.match(line)
        if header:
            task = header["name"]
            continue
        match = _FAIL.match(line)
        if not match:
            continue
        following = next((ln.strip() for ln in lines[i + 1:] if ln.strip()), "")
        if following == "...ignoring":
            continue
        status = (match["status"] or "failed").lower()  # loop items print "failed: [h] (item=x) => {...}"
        found.append(FailedTask(task, match["host"], status, redact(_message(match["body"]))))
    return found


def _last_task(output: str) -> str | None:
    names = [m["name"] for m in map(_TASK.match, strip_colors(output).splitlines()) if m]
    return names[-1] if names else None


def _error_lines(output: str) -> list[str]:
    return [ln.strip() for ln in strip_colors(output).splitlines() if ln.startswith(("ERROR!", "[ERROR]"))]


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class PlaybookRun:
    """The outcome of one ansible-playbook run (``rc`` is None for a dry run)."""

    command: PlaybookCommand
    rc: int | None
    recap: Mapping[str, HostStats]
    failed_tasks: tuple[FailedTask, ...]
    log_path: Path | None
    duration: float
    dry_run: bool = False
    timed_out: bool = False
    output_tail: str = field(default="", repr=False)  # the last lines of output, colours stripped, redacted
    host_key_failures: tuple[knownhosts.HostKeyFailure, ...] = ()  # hosts refused for their SSH host key

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out

    @property
    def cwd(self) -> Path:
        return self.command.cwd

    @property
    def failed_hosts(self) -> list[str]:
        return [h for h, s in self.recap.items() if s.failed] or sorted(
            {t.host for t in self.failed_tasks if t.status == "failed"})

    @property
    def unreachable_hosts(self) -> list[str]:
        return [h for h, s in self.recap.items() if s.unreachable] or sorted(
            {t.host for t in self.failed_tasks if t.status == "unreachable"})


def _failure(run: PlaybookRun, output: str) -> errors.RunbookError:
    book = run.command.playbook
    where = f"; log: {run.log_path}" if run.log_path else ""
    if run.timed_out:
        last = _last_task(output)
        return errors.WaitTimedOut(
            f"ansible-playbook {book} did not finish within {run.duration:.0f}s and was killed"
            # A task's banner can appear only with its first host result (display_skipped_hosts=no),
            # so this is the last task shown, not necessarily the one that hung.
            + (f"; last task shown: [{last}]" if last else "; no task had started"),
            command=list(run.command.argv),
            stderr=errors.tail(strip_colors(output), 10),
            fix=f"find why that task hangs (unreachable host? drain waiting?){where}; Kubespray playbooks are "
                "idempotent: rerun the same command, with a longer timeout if it was progressing",
        )
    lines = [f"ansible-playbook {book} failed (exit {run.rc})"]
    for task in run.failed_tasks:
        lines.append(f"  task [{task.task}] {task.status} on {task.host}: {task.message[:400]}")
    tail = None
    if not run.failed_tasks:
        found = _error_lines(output)[-5:]
        lines += [f"  {e}" for e in found]
        if not found:  # neither a failed task nor an ERROR line: show how the output ended
            tail = errors.tail(strip_colors(output), 10)
    fix = f"read the failing task's message{where}, fix the cause on the host and rerun the same command"
    if run.unreachable_hosts:
        fix = (f"{', '.join(run.unreachable_hosts)} unreachable: check the host is up and SSH works with the "
               "inventory's user and key; every Kubespray play is any_errors_fatal, so a dead host must be "
               f"removed from the inventory's groups before rerunning{where}")
    failed = run.failed_hosts
    return errors.PlaybookFailed(
        "\n".join(lines),
        command=list(run.command.argv),
        host=", ".join(failed + [h for h in run.unreachable_hosts if h not in failed]) or None,
        exit_code=run.rc,
        stderr=redact(tail) if tail else None,
        fix=fix,
    )


def _host_key_error(run: PlaybookRun) -> errors.HostKeyError:
    """One HostKeyError for every host refused for its key: both fingerprints where known, and the fix."""
    known = str(run.command.known_hosts or "the known_hosts file")
    lines, fixes, hosts = [], [], []
    for failure in run.host_key_failures:
        hosts.append(failure.host)
        where = f"{failure.host} ({failure.address})" if failure.address else failure.host
        pins = knownhosts.pinned(known, failure.address) if failure.address else ()
        offered = [failure.presented] if failure.presented else []
        if not offered and failure.address:
            offered = [str(k) for k in knownhosts.scan(failure.address)]  # unverified: shown, never pinned
        pinned_text = ", ".join(map(str, pins)) if pins else "no key"
        offered_text = " / ".join(offered) if offered else "(not known: the host did not answer ssh-keyscan)"
        state = "REMOTE HOST IDENTIFICATION HAS CHANGED" if failure.changed or pins else "host key not pinned"
        lines.append(f"  {where}: {state}: {known} pins {pinned_text}; the host presented {offered_text}")
        if failure.address:
            fixes.append(f"ssh-keygen -R {shlex.quote(failure.address)} -f {shlex.quote(known)}; "
                         f"ssh-keyscan -t ed25519 {shlex.quote(failure.address)} >> {shlex.quote(known)}")
    book = run.command.playbook
    return errors.HostKeyError(
        f"ansible-playbook {book} refused to connect to {', '.join(hosts)}: the SSH host key is not the one "
        f"pinned in {known}, so no task ran there\n" + "\n".join(lines),
        host=", ".join(hosts),
        command=list(run.command.argv),
        exit_code=run.rc,
        fix=("if the machine was reinstalled, confirm its new fingerprint out of band (on its console: "
             "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), then pin it deliberately: "
             + "; ".join(fixes or [f"remove the old line from {known} with ssh-keygen -R and append the new key"])
             + " (compare the appended key's fingerprint, `ssh-keygen -lf` on that line, with the console's "
             "before rerunning); otherwise do not connect: someone may be intercepting the connection"),
    )


def check_ssh_pins(inventory: str | Path, ansible_env: Mapping[str, str] | None = None, *,
                   known_hosts: str | Path | None = None, trusted_ssh: tuple[str, ...] = ()) -> None:
    """Raise PreconditionFailed when the inventory or ``ansible_env`` would undo the pinned host keys.

    Lists every offending setting (:func:`runbooks_lib.inventory.ssh_pins.problems`:
    ansible_ssh_args, host-key options in ansible_ssh_common_args/extra_args,
    ansible_host_key_checking, an ansible_connection other than ssh, in the
    inventory, group_vars/ or host_vars/; ANSIBLE_SSH_ARGS and the like in
    ``ansible_env``). ``known_hosts``: the run's file, which UserKnownHostsFile
    may name; ``trusted_ssh``: ssh wrappers the caller vouches for. Reads files only; :func:`run` calls it first.
    """
    found = ssh_pins.problems(inventory, ansible_env, known_hosts=known_hosts, trusted_ssh=trusted_ssh)
    if found:
        raise errors.PreconditionFailed(
            f"{len(found)} setting(s) would undo the pinned SSH host keys; nothing was run:\n"
            + "\n".join(f"  - {line}" for line in found),
            fix="remove each setting named above from the inventory, its group_vars/host_vars or ansible_env "
                "(ssh options such as ProxyJump belong in ansible_ssh_common_args, without host-key options); "
                "host keys are always verified against the pinned known_hosts",
        )


def _inventory_of(cmd: PlaybookCommand) -> str:
    argv = list(cmd.argv)
    for i, word in enumerate(argv):
        if word in ("-i", "--inventory", "--inventory-file") and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith("--inventory="):
            return word.split("=", 1)[1]
    raise errors.BadParameters(f"no inventory (-i) in {shlex.join(argv)}",
                               fix="build the command with kubespray.command(..., inventory=...)")


def run(
    cmd: PlaybookCommand,
    *,
    timeout: float,
    on_line: Callable[[str], None] | None = None,
    log_path: str | Path | None = None,
    check: bool = True,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
    trusted_ssh: tuple[str, ...] = (),
) -> PlaybookRun:
    """Run an ansible-playbook command in the checkout, streaming its output.

    Every output line (colours stripped, secrets redacted) goes to ``on_line``
    and to ``log_path``. The whole process group is killed after ``timeout``
    seconds. ``dry_run`` returns the command without running anything.
    First, in dry runs too (so a dry run shows what a real one would refuse),
    :func:`check_ssh_pins` raises PreconditionFailed when the inventory or
    ``env`` would undo the pinned host keys (``trusted_ssh``: ssh wrappers the
    caller vouches for in ANSIBLE_SSH_EXECUTABLE); nothing is started then.
    Raises PlaybookFailed naming the failed task(s), host(s) and message, or
    WaitTimedOut naming the playbook and the task it was stuck in;
    HostKeyError (before PlaybookFailed) when a host's SSH key is unknown or
    changed, naming the host, the pinned and the presented fingerprints and
    how to pin the new key; ``check=False`` returns the PlaybookRun instead
    (``host_key_failures`` set). Side effects: whatever
    the playbook does; the log file is appended.
    """
    check_ssh_pins(_inventory_of(cmd), env, known_hosts=cmd.known_hosts, trusted_ssh=trusted_ssh)
    log = Path(log_path) if log_path is not None else None
    if dry_run:
        return PlaybookRun(cmd, None, {}, (), log, 0.0, dry_run=True)

    def show(line: str) -> None:
        if on_line is not None:
            on_line(strip_colors(line))

    # Unbuffered Python so lines arrive as they are printed; no colours in the log.
    # The host-key settings come last: nothing passed in can switch verification off.
    run_env = {"PYTHONUNBUFFERED": "1", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", **dict(env or {}),
               **dict(cmd.env)}
    start = time.monotonic()
    result = local.run(cmd.argv, timeout=timeout, check=False, cwd=cmd.cwd, env=run_env,
                       on_line=show, log_path=log)
    output = result.stdout + "\n" + result.stderr
    outcome = PlaybookRun(
        command=cmd,
        rc=result.exited,
        recap=parse_recap(result.stdout),
        failed_tasks=tuple(parse_failures(result.stdout)),
        log_path=log,
        duration=time.monotonic() - start,
        timed_out=result.timed_out,
        output_tail=redact(strip_colors(output[-OUTPUT_TAIL_CHARS:])),
        host_key_failures=tuple(knownhosts.failures_in_ansible_output(strip_colors(result.stdout))),
    )
    if check and not outcome.ok:
        if outcome.host_key_failures:
            error = _host_key_error(outcome)
            error.run = outcome  # type: ignore[attr-defined]  # recap and log for the caller
            raise error
        raise _failure(outcome, output)
    return outcome


# --------------------------------------------------------------------------- remove-node's variables


@dataclass(frozen=True)
class RemoveNodeVars:
    """The extra vars of ``remove-node.yml`` for some nodes, alive or dead.

    ``node`` is always set: v2.19 without it removes every kube_node host. A
    dead node gets ``reset_nodes=false`` (no play connects to it: with
    ConnectionAttempts=100 that would hang for many minutes) and
    ``allow_ungraceful_removal=true`` (a drain that cannot finish does not fail
    the run), with a bounded ``drain_timeout`` and drain grace period.
    Booleans are passed only to turn things on, as strings: upstream tests
    ``allow_ungraceful_removal`` without ``|bool`` in places, so a ``false``
    string would act as true; ``reset_nodes`` is read with ``|bool``.
    ``skip_confirmation`` is added by :func:`command` (``answer_prompts``).
    """

    nodes: tuple[str, ...]
    dead: bool = False
    drain_timeout_s: int = 60
    drain_grace_period_s: int = 10

    def __post_init__(self) -> None:
        if not self.nodes or any(not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", n) for n in self.nodes):
            raise errors.BadParameters(f"remove-node needs node names, got {list(self.nodes)!r}",
                                       fix="name the inventory hosts to remove")
        if self.drain_timeout_s <= 0 or self.drain_grace_period_s < 0:
            raise errors.BadParameters("drain_timeout_s must be positive and drain_grace_period_s not negative",
                                       fix="bound the drain, e.g. 60 s and a 10 s grace period")

    def extra_vars(self) -> dict[str, str]:
        """``-e`` values in the order they are written on the command line."""
        out = {"node": ",".join(self.nodes)}
        if self.dead:
            out |= {"reset_nodes": "false", "allow_ungraceful_removal": "true"}
        out |= {"drain_timeout": f"{self.drain_timeout_s}s", "drain_grace_period": str(self.drain_grace_period_s)}
        return out
