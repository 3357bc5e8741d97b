"""A real Apache Kafka broker (KRaft, one combined broker+controller) on free ports.

The jars come from scripts/ensure-kafka.sh (Maven Central, cached in .cache/kafka); Java
is Debian's. Each server lives in its own temporary folder and starts empty; every topic
is created on first use with `partitions` partitions (the broker's auto-create), so a
test or a bench scenario picks the partition count of `prompts` by starting its broker.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from testbed.net import free_port, wait_until
from testbed.reap import kill, terminate

__all__ = ["KafkaServer", "kafka_libs", "start_kafka"]

REPO_ROOT = Path(__file__).resolve().parents[1]
STARTED_LINE = "Kafka Server started"
# The broker's heap: ample for tests, small beside the 1 GB Kafka's scripts default to.
HEAP = "-Xmx384m"

_LOG4J2 = """\
rootLogger.level=WARN
rootLogger.appenderRef.stdout.ref=STDOUT
logger.server.name=kafka.server.KafkaRaftServer
logger.server.level=INFO
logger.broker.name=kafka.server.BrokerServer
logger.broker.level=INFO
appender.stdout.type=Console
appender.stdout.name=STDOUT
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
"""


def kafka_libs() -> Path:
    """The folder of Kafka's jars: $KAFKA_LIBS, else what scripts/ensure-kafka.sh fetches."""
    configured = os.environ.get("KAFKA_LIBS")
    if configured:
        return Path(configured)
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "ensure-kafka.sh")],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return Path(result.stdout.strip())


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java is not installed: run `bash scripts/ensure-kafka.sh`")
    return java


@dataclass
class KafkaServer:
    """One KRaft node; `restart` brings it back on the same ports with the same data."""

    workdir: Path
    libs: Path
    port: int
    controller_port: int
    partitions: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "kafka.log"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _classpath(self) -> str:
        return f"{self.libs}/*"

    def _jvm(self, main: str, *args: str) -> list[str]:
        return [
            _java(),
            HEAP,
            "-XX:+UseSerialGC",  # two shared cores: no parallel collector threads
            "-XX:TieredStopAtLevel=1",  # starts seconds sooner; fast enough for tests
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            self._classpath(),
            main,
            *args,
        ]

    def _write_config(self) -> Path:
        data = self.workdir / "data"
        config = self.workdir / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={data}",
                    f"num.partitions={self.partitions}",
                    "auto.create.topics.enable=true",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    # A consumer group forms as soon as its first member joins.
                    "group.initial.rebalance.delay.ms=0",
                ]
            )
            + "\n"
        )
        (self.workdir / "log4j2.properties").write_text(_LOG4J2)
        return config

    def format(self) -> None:
        config = self._write_config()
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        result = subprocess.run(
            # One argument with "=": a random id may begin with "-", like an option.
            self._jvm(
                "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(config)
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kafka storage format failed:\n{result.stdout.decode()}")

    def start(self) -> None:
        config = self.workdir / "server.properties"
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self._jvm("kafka.Kafka", str(config)), stdout=log, stderr=subprocess.STDOUT
            )
        process = self.process

        def ready() -> bool:
            if process.poll() is not None:
                return True
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return STARTED_LINE.encode() in log.read() and self.accepts()

        try:
            wait_until(
                ready,
                timeout=90,
                what=f"Kafka on port {self.port}",
                interval=0.2,
                on_timeout=self.logs,
            )
        except BaseException:
            self.stop()
            raise
        if process.poll() is not None:
            raise RuntimeError(f"Kafka exited early:\n{self.logs()}")

    def accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def group_members(self, group: str) -> int:
        """Members of a consumer group holding partitions now (Kafka's own group tool)."""
        result = subprocess.run(
            self._jvm(
                "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
                *("--bootstrap-server", self.bootstrap, "--describe", "--members"),
                *("--group", group),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
            text=True,
        )
        # A header line, then one line per member: GROUP CONSUMER-ID HOST CLIENT-ID #PARTITIONS
        rows = [line.split() for line in result.stdout.splitlines()]
        return sum(
            1
            for row in rows
            if len(row) >= 5 and row[0] == group and row[-1].isdigit() and int(row[-1]) > 0
        )

    def stop(self) -> None:
        terminate(self.process, 30)

    def kill(self) -> None:
        kill(self.process)

    def restart(self) -> None:
        """Stop (gracefully) and start again: clients see the broker go away and return."""
        self.stop()
        self.start()


def start_kafka(workdir: Path, *, partitions: int = 3, libs: Path | None = None) -> KafkaServer:
    """A formatted, started KRaft broker whose topics get `partitions` partitions."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = KafkaServer(
        workdir=workdir,
        libs=libs or kafka_libs(),
        port=free_port(),
        controller_port=free_port(),
        partitions=partitions,
    )
    server.format()
    server.start()
    return server
