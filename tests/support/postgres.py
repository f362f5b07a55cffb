"""A throwaway PostgreSQL cluster for tests, made from the installed server binaries.

One cluster per test session lives in a fresh folder under /tmp: initdb, `pg_ctl -w start`, one
database per test, `pg_ctl -m immediate stop` and the folder deleted at the end. It listens on
a Unix socket inside that folder only (no TCP port, so parallel sessions never collide) and runs
with durability off, because a test database is thrown away anyway.

PostgreSQL refuses to run as root, and CI runs as root: then every server command runs as the
unprivileged user `nobody` (subprocess's `user=`/`group=`, done in C between fork and exec, so
no Python runs in a forked child of a process that may hold gRPC threads). The folder is made
with `tempfile.mkdtemp` directly under /tmp (world-traversable) and chowned to that user.

This module knows nothing about pytest; tests/conftest.py wraps it in fixtures.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import IO, Any

#: Where Debian/Ubuntu install the server binaries, one folder per major version.
DEFAULT_PG_ROOT = "/usr/lib/postgresql"
#: Set to a folder holding initdb and pg_ctl to use other binaries.
BINDIR_ENV = "TASKGRID_PG_BINDIR"
#: The user the server runs as when the tests run as root.
UNPRIVILEGED_USER = "nobody"
#: Cluster folders are /tmp/<prefix><random>; stale ones left by a killed session are swept.
DIR_PREFIX = "taskgrid-pg-"
DEFAULT_BASE_DIR = "/tmp"
DEFAULT_PORT = 5432
DEFAULT_START_TIMEOUT_S = 60
OWNER_FILE = "owner.pid"

#: Server settings for tests: no TCP, no durability, little memory, enough connections for
#: several coordinators each holding a pool.
SERVER_SETTINGS: dict[str, str] = {
    "listen_addresses": "''",
    "port": str(DEFAULT_PORT),
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "huge_pages": "off",
    "autovacuum": "off",
    "log_min_messages": "warning",
    "log_checkpoints": "off",
    "log_timezone": "'UTC'",
    "timezone": "'UTC'",
}


def find_bindir() -> Path | None:
    """Return the folder holding initdb and pg_ctl, or None when PostgreSQL is not installed.

    Order: $TASKGRID_PG_BINDIR, the highest version under /usr/lib/postgresql, then PATH.
    """
    candidates: list[Path] = []
    if os.environ.get(BINDIR_ENV):
        candidates.append(Path(os.environ[BINDIR_ENV]))
    found = glob.glob(os.path.join(DEFAULT_PG_ROOT, "*", "bin"))
    candidates.extend(sorted((Path(p) for p in found), key=_version_key, reverse=True))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def _version_key(bindir: Path) -> tuple[int, ...]:
    """Sort key for /usr/lib/postgresql/<version>/bin: numeric, so 15 sorts above 9.6."""
    return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name)) or (0,)


def server_version(bindir: Path) -> str:
    """Return `postgres --version` of the binaries in `bindir` (for the test report header)."""
    out = subprocess.run(
        [str(bindir / "pg_ctl"), "--version"], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or out.stderr.strip()


def _is_root() -> bool:
    return os.geteuid() == 0


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PostgresCluster:
    """One initdb'd cluster in a temp folder, started and stopped as a whole.

    Use as a context manager, or call start() and stop(). stop() is idempotent and is also
    registered with atexit, so an interrupted session does not leave a server running.
    """

    def __init__(self, bindir: Path, base_dir: str = DEFAULT_BASE_DIR) -> None:
        self.bindir = bindir
        self.base_dir = base_dir
        self.port = DEFAULT_PORT
        self.dir: Path | None = None
        self.start_duration_s: float | None = None
        self._running = False
        self._admin: Any = None  # psycopg.Connection, imported lazily
        if _is_root():
            entry = pwd.getpwnam(UNPRIVILEGED_USER)
            self.os_user = entry.pw_name
            self._uid: int | None = entry.pw_uid
            self._gid: int | None = entry.pw_gid
        else:
            self.os_user = pwd.getpwuid(os.geteuid()).pw_name
            self._uid = self._gid = None
        #: The superuser initdb creates; trust auth lets any local client connect as it.
        self.superuser = self.os_user

    # -- paths -------------------------------------------------------------------------------

    @property
    def socket_dir(self) -> Path:
        """The folder holding the server's Unix socket (the cluster folder itself)."""
        assert self.dir is not None, "cluster not started"
        return self.dir

    @property
    def data_dir(self) -> Path:
        """The PGDATA folder."""
        return self.socket_dir / "data"

    @property
    def log_path(self) -> Path:
        """The server's log file (pg_ctl -l)."""
        return self.socket_dir / "postgres.log"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """initdb a fresh cluster in a new folder and start it; returns once it accepts logins."""
        started = time.monotonic()
        sweep_stale_clusters(self.bindir, self.base_dir)
        self.dir = Path(_make_dir(self.base_dir))
        (self.dir / OWNER_FILE).write_text(str(os.getpid()))
        if self._uid is not None:
            os.chown(self.dir, self._uid, self._gid if self._gid is not None else -1)
        atexit.register(self.stop)
        self._run(
            "initdb",
            "-D", str(self.data_dir),
            "-U", self.superuser,
            "-A", "trust",
            "-E", "UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        )  # fmt: skip
        settings = dict(SERVER_SETTINGS, unix_socket_directories=f"'{self.socket_dir}'")
        lines = "".join(f"{key} = {value}\n" for key, value in settings.items())
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# taskgrid test settings\n" + lines)
        self._running = True
        self._run(
            "pg_ctl",
            "-D", str(self.data_dir),
            "-l", str(self.log_path),
            "-w", "-t", str(DEFAULT_START_TIMEOUT_S),
            "start",
        )  # fmt: skip
        self.start_duration_s = time.monotonic() - started

    def stop(self) -> None:
        """Stop the server at once (no checkpoint: the data is thrown away) and delete it all."""
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()
            self._admin = None
        if self.dir is None:
            return
        if self._running:
            self._running = False
            with contextlib.suppress(RuntimeError):
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- databases ---------------------------------------------------------------------------

    def url(self, dbname: str) -> str:
        """SQLAlchemy URL for psycopg 3 over the Unix socket."""
        return (
            f"postgresql+psycopg://{self.superuser}@/{dbname}"
            f"?host={self.socket_dir}&port={self.port}"
        )

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a random name when none is given) and return its name."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        # FILE_COPY: 0.07 s instead of WAL_LOG's 0.33 s for the small template, per test
        self._admin_connection().execute(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, closing its sessions first (a killed coordinator may leave some)."""
        self._admin_connection().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def connect_kwargs(self, dbname: str = "postgres") -> dict[str, Any]:
        """Keyword arguments for psycopg.connect to reach this cluster."""
        return {
            "host": str(self.socket_dir),
            "port": self.port,
            "user": self.superuser,
            "dbname": dbname,
        }

    def _admin_connection(self) -> Any:
        if self._admin is None or self._admin.closed:
            import psycopg

            self._admin = psycopg.connect(**self.connect_kwargs(), autocommit=True)
        return self._admin

    # -- running server commands -------------------------------------------------------------

    def _run(self, tool: str, *args: str) -> None:
        """Run a server binary as the cluster's OS user; raise with its output on failure."""
        assert self.dir is not None
        out_path = self.dir / f"{tool}.out"
        with open(out_path, "ab") as out:
            code = _run_as(
                [str(self.bindir / tool), *args], self.dir, out, uid=self._uid, gid=self._gid
            )
        if code != 0:
            output = out_path.read_text(errors="replace")[-4000:]
            log = ""
            if self.log_path.exists():
                log = self.log_path.read_text(errors="replace")[-4000:]
            raise RuntimeError(
                f"{tool} {' '.join(args)} exited {code}\n--- output ---\n{output}"
                f"\n--- server log ---\n{log}"
            )


def _make_dir(base_dir: str) -> str:
    import tempfile

    path = tempfile.mkdtemp(prefix=DIR_PREFIX, dir=base_dir)
    # mkdtemp makes 0700; the server user needs to enter it (it owns it after chown anyway,
    # but 0755 also lets a non-root developer's other tools read the log).
    os.chmod(path, 0o755)
    return path


def _run_as(argv: list[str], cwd: Path, out: IO[bytes], *, uid: int | None, gid: int | None) -> int:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PG")
        and key not in {"HOME", "LANG", "LANGUAGE"}
        and not key.startswith("LC_")
    }
    env.update(HOME=str(cwd), LC_ALL="C", LANG="C")
    drop: dict[str, Any] = {}
    if uid is not None:
        drop = {"user": uid, "group": gid, "extra_groups": []}
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        check=False,
        timeout=DEFAULT_START_TIMEOUT_S + 30,
        **drop,
    )
    return proc.returncode


def sweep_stale_clusters(bindir: Path, base_dir: str = DEFAULT_BASE_DIR) -> None:
    """Stop and delete clusters left by test sessions that died without cleaning up.

    A cluster folder records the pid of the session that made it; only folders whose session
    is gone are touched, so concurrent sessions keep their clusters.
    """
    uid = gid = None
    if _is_root():
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
        uid, gid = entry.pw_uid, entry.pw_gid
    for folder in glob.glob(os.path.join(base_dir, DIR_PREFIX + "*")):
        owner = Path(folder) / OWNER_FILE
        try:
            pid = int(owner.read_text().strip())
        except (OSError, ValueError):
            continue
        if _process_alive(pid):
            continue
        data = Path(folder) / "data"
        if (data / "postmaster.pid").exists():
            with open(os.devnull, "wb") as sink:
                _run_as(
                    [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                    Path(folder),
                    sink,
                    uid=uid,
                    gid=gid,
                )
        shutil.rmtree(folder, ignore_errors=True)
