"""Starting Spark, or one line saying why it cannot start: pyspark missing (the extra), no Java,
a master that is not reachable. Checked before Spark is asked, so a bad setting costs no
start-up and nothing is written to the store."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

from feedrank.exceptions import FeedrankError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

MASTERS = "local, local[N], local[*], spark://HOST:PORT, yarn, k8s://URL"
_LOCAL = re.compile(r"^local(\[(\d+|\*)(,\d+)?\])?$")
_SPARK = re.compile(r"^spark://([^:/]+):(\d+)$")


class SparkUnavailable(FeedrankError):
    """Spark cannot start here: what to install or check."""


def check_master(master: str) -> None:
    """The master URL is of a known form, and a standalone master answers on its port."""
    if _LOCAL.match(master) or master == "yarn" or master.startswith("k8s://"):
        if master == "yarn" and not (
            os.environ.get("HADOOP_CONF_DIR") or os.environ.get("YARN_CONF_DIR")
        ):
            raise SparkUnavailable(
                "--master yarn needs HADOOP_CONF_DIR or YARN_CONF_DIR set to the cluster's "
                "configuration directory; neither is set"
            )
        return
    m = _SPARK.match(master)
    if not m:
        raise SparkUnavailable(f"--master must be one of {MASTERS}; got '{master}'")
    host, port = m.group(1), int(m.group(2))
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise SparkUnavailable(
            f"the Spark master {master} cannot be reached ({exc.strerror or exc}); check the "
            "host and port (`start-master.sh` prints them) and that this machine can reach it"
        ) from exc


def java_home() -> str:
    """The Java Spark will use: JAVA_HOME, else `java` on PATH. Spark 4 needs Java 17 or 21."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.path.exists(java):
        raise SparkUnavailable(
            "Spark needs Java 17 or 21 and none was found (JAVA_HOME is "
            f"{'set to ' + home if home else 'unset'} and `java` is not on PATH): install one "
            "(Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    found = re.search(r'version "(\d+)', out)
    major = int(found.group(1)) if found else 0
    if major not in (17, 21):
        raise SparkUnavailable(
            f"Spark needs Java 17 or 21; {java} is Java {major or '(unknown)'}: set JAVA_HOME "
            "to a Java 17 or 21 installation"
        )
    return os.path.dirname(os.path.dirname(os.path.realpath(java)))


def spark_session(
    master: str = "local[2]",
    driver_memory: str | None = None,
    app_name: str = "feedrank",
) -> SparkSession:
    """A SparkSession on `master` (reused when one is running), with UTC as its time zone so
    hours and days agree with the local feature code."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise SparkUnavailable(
            "the Spark engine needs pyspark: pip install 'feedrank[spark]'"
        ) from exc
    check_master(master)
    os.environ["JAVA_HOME"] = java_home()
    # Executors run this interpreter (so this feedrank) unless PYSPARK_PYTHON says otherwise.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        # A few partitions on a small machine: the default 200 would be 200 tiny tasks per step.
        .config("spark.sql.shuffle.partitions", os.environ.get("FEEDRANK_SPARK_PARTITIONS", "8"))
    )
    if driver_memory:
        builder = builder.config("spark.driver.memory", driver_memory)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # py4j / JVM start-up: any failure means Spark could not start
        raise SparkUnavailable(
            f"Spark could not start on '{master}': {str(exc).splitlines()[0] if str(exc) else type(exc).__name__} "
            "(check Java, memory and the master; --debug shows the whole error)"
        ) from exc
    spark.sparkContext.setLogLevel("ERROR")
    return spark
