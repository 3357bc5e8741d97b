#!/usr/bin/env bash
# Prints the folder of Apache Kafka's jars (and nothing else on stdout), fetching them the
# first time: the broker (kafka_2.13) and kafka-tools with their dependencies, from Maven
# Central with Maven (tools/kafka/pom.xml), into .cache/kafka/<version>/libs. Installs
# Debian's Java 17 and Maven where they are missing. Tests start their own brokers.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
POM="$ROOT/tools/kafka/pom.xml"
VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
CACHE="${KAFKA_CACHE_DIR:-$ROOT/.cache/kafka}"
LIBS="$CACHE/$VERSION/libs"

if [ -f "$LIBS/.complete" ]; then
    echo "$LIBS"
    exit 0
fi

missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "ensure-kafka.sh: installing Debian's ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >&2
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

echo "ensure-kafka.sh: fetching Apache Kafka $VERSION from Maven Central (first time only)" >&2
start=$(date +%s)
rm -rf "$LIBS"
mkdir -p "$LIBS"
mvn -q -B -f "$POM" -Dmaven.repo.local="$CACHE/m2" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS" >&2
touch "$LIBS/.complete"
echo "ensure-kafka.sh: $(ls "$LIBS" | wc -l) jars in $LIBS in $(( $(date +%s) - start ))s" >&2
echo "$LIBS"
