"""Per-job isolation on Linux: namespaces, an unprivileged uid, rlimits, a private work dir, a scrubbed environment.

Everything here runs in a freshly forked child (or a subprocess's preexec hook) of a render worker, never in the
trainer. When the process is not root the namespace and uid steps are skipped and `capabilities()` says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import resource
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 0x1, 0x2, 0x4, 0x8, 0x20
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
# uids far above any real account. Each pool takes its own block of UIDS_PER_POOL (slot i runs its jobs as
# block start + i), so killing "everything of a job uid" never touches another pool's jobs.
JOB_UID_BASE = 970_000
POOL_UID_BASE = JOB_UID_BASE + 65_536  # below it: fixed uids of other worker kinds (e.g. trace workers)
UIDS_PER_POOL = 256
UID_BLOCKS = 2_000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


@dataclass(frozen=True)
class Limits:
    """Resource limits of one job. `address_space_mb` is headroom added to what the forked worker already maps."""

    cpu_s: int = 12
    address_space_mb: int = 3072
    file_size_mb: int = 64
    nproc: int = 64
    tmpfs_mb: int = 64  # each python job's private /tmp, /var/tmp, /dev/shm
    job_dirs_mb: int = 512  # a worker's job dirs live on a tmpfs of this size: a job cannot fill the host's disk


def is_root() -> bool:
    return os.geteuid() == 0


def capabilities() -> dict[str, bool]:
    """Which isolation steps this process can apply; the README explains what each one buys."""
    root = is_root()
    return {"namespaces": root, "separate_uid": root, "rlimits": True, "scrubbed_env": True, "private_dir": True}


def scrubbed_env(home: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A minimal environment: no tokens, keys or proxy settings of the parent survive."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    env.update(extra or {})
    return env


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


_OWN_PID_NS: int | None = None


def fork_into_new_pid_namespace() -> int:
    """os.fork(), the child becoming pid 1 of a fresh pid namespace, in one fork of this process (not a fork
    that unshares and forks again: each fork of a warm worker holding the python stack costs ~7-14 ms of CPU).
    The calling thread's namespace for new children is set back to its own right after, so nothing else it starts
    (TeX, Chromium, a replacement) lands in the job's namespace. Raises OSError when the namespace cannot be made."""
    global _OWN_PID_NS
    if _OWN_PID_NS is None:
        _OWN_PID_NS = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    unshare(CLONE_NEWPID)  # applies to this thread's next child only
    try:
        pid = os.fork()
    except BaseException:
        setns(_OWN_PID_NS, CLONE_NEWPID)
        raise
    if pid != 0:
        setns(_OWN_PID_NS, CLONE_NEWPID)
    return pid


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def prctl(option: int, arg: int) -> None:
    _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0)


def die_with_parent() -> None:
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def vm_size_bytes() -> int:
    """Current virtual size of this process (a forked child starts with the same mappings)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def apply_rlimits(limits: Limits, address_space_bytes: int | None = None) -> None:
    """Hard caps so a runaway job hits a wall (MemoryError, SIGXCPU, EFBIG, EAGAIN) instead of the machine."""
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_mb << 20,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if address_space_bytes is None:
        address_space_bytes = vm_size_bytes() + (limits.address_space_mb << 20)
    resource.setrlimit(resource.RLIMIT_AS, (address_space_bytes,) * 2)
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.nproc,) * 2)


def drop_privileges(uid: int) -> None:
    """Become an unprivileged uid with no groups and no way back (no_new_privs).

    Changing credentials clears the parent-death signal, so it is set again afterwards."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    die_with_parent()


def kill_uid(uid: int) -> None:
    """SIGKILL every process running as `uid` (a worker slot's job uid), whatever session or namespace it is in."""
    if not is_root():
        return
    pid = os.fork()
    if pid == 0:
        try:
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)  # every process this uid may signal, except the caller
        except OSError:
            pass
        os._exit(0)
    os.waitpid(pid, 0)


SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def collapse(paths: list[str]) -> list[str]:
    """Existing directories, resolved, with nested entries folded into their outermost parent."""
    real = sorted({os.path.realpath(p) for p in paths if p and os.path.isdir(p)})
    roots: list[str] = []
    for path in real:
        if not any(_under(path, root) for root in roots):
            roots.append(path)
    return roots


def runtime_roots(candidates: list[str] | None = None) -> list[str]:
    """Directories a job must be able to read: the interpreter's prefixes and stdlib, the site-packages, the
    renderers package itself and the rest of the import path. The project checkout around the package is not one
    of them (only `renderers/` is), so a job sees no other file of the checkout."""
    if candidates is None:
        return list(_default_roots())
    return collapse(candidates)


@functools.cache
def _default_roots() -> tuple[str, ...]:
    """runtime_roots() of this process, computed once (the worker calls it before forking its jobs)."""
    import site
    import sysconfig

    project_parent = os.path.realpath(os.path.dirname(_PACKAGE_DIR))
    site_dirs = [*site.getsitepackages(), site.getusersitepackages()]
    paths = sysconfig.get_paths()
    candidates = [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix, _PACKAGE_DIR, *site_dirs]
    candidates += [paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths]
    in_site = any(_under(project_parent, os.path.realpath(d)) for d in site_dirs if d)
    candidates += [p for p in sys.path if in_site or os.path.realpath(p or ".") != project_parent]
    return tuple(collapse(candidates))


def traversal_blocker(path: str) -> str | None:
    """The outermost proper ancestor of `path` that a uid with no groups cannot search (e.g. /root, mode 0700)."""
    parts = os.path.realpath(path).strip("/").split("/")
    for depth in range(1, len(parts)):
        ancestor = "/" + "/".join(parts[:depth])
        try:
            mode = os.stat(ancestor).st_mode
        except OSError:
            return None
        if not mode & 0o001:
            return ancestor
    return None


@dataclass(frozen=True)
class MountPlan:
    """What a job's mount namespace gets: empty tmpfs over `masks`, then `read_only` roots bound back at their paths.

    Masks are the scratch dirs plus every unsearchable ancestor of a root (so a venv, a checkout or a pyenv under
    a 0700 home stays importable by the job uid while the rest of that home stays hidden)."""

    masks: tuple[str, ...]
    read_only: tuple[str, ...]


def mount_plan(job_dir: str, roots: list[str] | None = None) -> MountPlan:
    roots = runtime_roots() if roots is None else roots
    # never the job dir's ancestors (the pool's work root holds other jobs' dirs) nor its descendants
    roots = [r for r in roots if not _under(r, job_dir) and not _under(job_dir, r)]
    scratch = [d for d in SCRATCH_DIRS if os.path.isdir(d) and not os.path.islink(d)]
    blockers = set()
    for root in roots:
        if not any(_under(root, d) for d in scratch):
            blocker = traversal_blocker(root)
            if blocker is not None:
                blockers.add(blocker)
    masks = collapse([*scratch, *blockers])
    kept = [r for r in roots if any(_under(r, m) and r != m for m in masks)]
    return MountPlan(masks=tuple(masks), read_only=tuple(kept))


def isolate_filesystem(job_dir: str, limits: Limits, plan: MountPlan | None = None) -> None:
    """In a new mount namespace: private propagation, empty tmpfs over the scratch dirs and over every unsearchable
    ancestor of a runtime root, the job dir (read-write) and the runtime roots (read-only) bound back in through
    fds opened beforehand, and a fresh /proc. Nothing else under a masked directory is visible to the job."""
    plan = plan or mount_plan(job_dir)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    keep = {job_dir: (os.open(job_dir, os.O_PATH | os.O_DIRECTORY), False)}
    for root in plan.read_only:
        keep[root] = (os.open(root, os.O_PATH | os.O_DIRECTORY), True)
    try:
        for mask in plan.masks:
            scratch = mask in SCRATCH_DIRS
            mode = "1777" if scratch else "0755"
            size = limits.tmpfs_mb if scratch else 1
            mount("tmpfs", mask, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size}m,mode={mode}")
            for path, (fd, read_only) in sorted(keep.items()):
                if _under(path, mask) and path != mask:
                    _make_mountpoint(mask, path)
                    mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
                    if read_only:
                        mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC | MS_NOSUID | MS_NODEV)
            if not scratch:  # the skeleton of a masked home is not the job's to write
                mount(None, mask, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    finally:
        for fd, _ in keep.values():
            os.close(fd)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _make_mountpoint(mask: str, path: str) -> None:
    """Directories from `mask` down to `path` inside the fresh tmpfs, searchable by the job uid."""
    current = mask
    for part in os.path.relpath(path, mask).split("/"):
        current = os.path.join(current, part)
        if not os.path.isdir(current):
            os.mkdir(current)
            os.chmod(current, 0o755)


def isolate_worker(job_root: str, limits: Limits) -> None:
    """For a whole render worker: an empty network namespace, and a mount namespace in which its job root is a
    tmpfs of `limits.job_dirs_mb` (a job that fills its dir gets ENOSPC; the host's disk is untouched)."""
    unshare(CLONE_NEWNET | CLONE_NEWNS)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", job_root, "tmpfs", MS_NOSUID | MS_NODEV, f"size={limits.job_dirs_mb}m,mode=0711")


def close_inherited_fds(keep: tuple[int, ...]) -> None:
    """Detach from the worker's pipes (to the pool, to Chromium) so a job cannot talk to them."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd not in keep:
            os.dup2(devnull, fd)
    fds = sorted(int(name) for name in os.listdir("/proc/self/fd"))
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def make_job_dir(root: str, uid: int | None) -> str:
    """A fresh private directory for one job, owned by the job's uid and closed to everyone else."""
    path = tempfile.mkdtemp(prefix="job-", dir=root)
    if uid is not None and is_root():
        os.chown(path, uid, uid)
    os.chmod(path, 0o700)
    return path


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def tool_command(argv: list[str], limits: Limits, uid: int | None, address_space_bytes: int) -> list[str] | None:
    """`argv` wrapped in util-linux `prlimit` + `setpriv`, so a tool starts under the job's limits and uid without a
    Python preexec hook. A preexec hook forces a full fork() of the warm worker (~14 ms for a worker holding the
    python stack, per call); without one the child is spawned with vfork. None when the wrappers are missing."""
    prlimit, setpriv = shutil.which("prlimit"), shutil.which("setpriv")
    dropping = uid is not None and is_root()
    if prlimit is None or (dropping and setpriv is None):
        return None
    fsize, space = limits.file_size_mb << 20, address_space_bytes
    wrapped = [prlimit, f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}", f"--fsize={fsize}:{fsize}", "--core=0:0",
               f"--as={space}:{space}", f"--nproc={limits.nproc}:{limits.nproc}", "--"]  # fmt: skip
    if dropping:
        wrapped += [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--nnp", "--pdeathsig=KILL", "--"]
    elif setpriv is not None:
        wrapped += [setpriv, "--pdeathsig=KILL", "--"]
    return wrapped + list(argv)


def subprocess_preexec(limits: Limits, uid: int | None, address_space_bytes: int):
    """A preexec_fn for tools (pdflatex, pdftoppm): own session, limits, unprivileged uid, die with the worker."""

    def preexec() -> None:
        os.setsid()
        die_with_parent()
        apply_rlimits(limits, address_space_bytes)
        if uid is not None and is_root():
            drop_privileges(uid)  # re-arms the parent-death signal

    return preexec
