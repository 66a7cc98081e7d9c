#!/usr/bin/env bash
# Real brokers on loopback for development and the end-to-end tests:
# one Mosquitto (Debian package) with an anonymous, a password, a TLS and a
# mutual-TLS listener, and a single-node Apache Kafka 4 in KRaft mode run
# from the jars of tests/kafka/pom.xml with the machine's Java, with a
# plaintext listener, one that takes TLS with a user name and password
# (SASL_SSL, PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512) and one that takes TLS
# with a client certificate (SSL).
#
#   bash tests/brokers.sh up|down|status
#   bash tests/brokers.sh kafka-stop|kafka-start|mqtt-stop|mqtt-start
#   bash tests/brokers.sh kafka-kill|kafka-pause|kafka-resume
#   bash tests/brokers.sh kafka-configs --alter --entity-type clients ...
#
# `up` installs what is missing, is idempotent and waits until both brokers
# accept connections. `down` stops both and wipes Kafka's data so the next
# run starts clean. The *-stop/*-start pairs stop one broker and bring it
# back with its data, for fault tests.
#
# Ports: MQTT_PORT (1883), MQTT_AUTH_PORT (1884), MQTT_TLS_PORT (8883),
# MQTT_MTLS_PORT (8884, TLS with a client certificate required),
# KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_SASL_SSL_PORT (9094),
# KAFKA_SSL_PORT (9095).
# State, logs and the
# generated TLS files live in ${UNS_BROKERS_DIR:-<repo>/target/brokers};
# $STATE/env records the ports for the tests. Kafka's data goes there too
# unless UNS_KAFKA_DATA names another directory.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${UNS_BROKERS_DIR:-$REPO/target/brokers}
MQTT_PORT=${MQTT_PORT:-1883}
MQTT_AUTH_PORT=${MQTT_AUTH_PORT:-1884}
MQTT_TLS_PORT=${MQTT_TLS_PORT:-8883}
MQTT_MTLS_PORT=${MQTT_MTLS_PORT:-8884}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
KAFKA_SASL_SSL_PORT=${KAFKA_SASL_SSL_PORT:-9094}
KAFKA_SSL_PORT=${KAFKA_SSL_PORT:-9095}
MQTT_USER=uns
MQTT_PASSWORD=uns-secret
KAFKA_USER=uns
KAFKA_PASSWORD=uns-kafka-secret
READY_TIMEOUT=${BROKERS_READY_TIMEOUT:-120}
KAFKA_HEAP=${KAFKA_HEAP:--Xms256m -Xmx768m}
# Any valid KRaft cluster id will do: data is wiped on `down`.
KAFKA_CLUSTER_ID=dW5zLWthZmthLWUyZS1jbA

TLS_DIR=$STATE/tls
MQTT_DIR=$STATE/mosquitto
KAFKA_DIR=$STATE/kafka
KAFKA_LIBS=$STATE/kafka-libs
# Kafka's log directory. UNS_KAFKA_DATA moves it (the benchmark puts it on
# tmpfs, see README, Performance); `up` remembers the choice in
# $STATE/kafka-data-dir so later calls, `down` included, use the same one.
KAFKA_DATA=${UNS_KAFKA_DATA:-}
if [[ -z $KAFKA_DATA && -f $STATE/kafka-data-dir ]]; then
    KAFKA_DATA=$(<"$STATE/kafka-data-dir")
fi
KAFKA_DATA=${KAFKA_DATA:-$STATE/kafka-data}
KAFKA_POM=$REPO/tests/kafka/pom.xml

# Debian puts mosquitto in /usr/sbin, which a non-root PATH lacks.
export PATH=$PATH:/usr/sbin:/sbin

log() { printf 'brokers: %s\n' "$*" >&2; }
has_files() { [[ -d $1 ]] && [[ -n $(ls -A "$1") ]]; }
die() { log "error: $*"; exit 1; }

as_root() {
    if [[ $EUID -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root (or sudo) to run: $*"
    fi
}

install_missing() {
    local pkgs=()
    command -v mosquitto >/dev/null || pkgs+=(mosquitto)
    command -v mosquitto_pub >/dev/null || pkgs+=(mosquitto-clients)
    command -v mosquitto_passwd >/dev/null || pkgs+=(mosquitto)
    command -v openssl >/dev/null || pkgs+=(openssl)
    command -v java >/dev/null || pkgs+=(default-jre-headless)
    command -v mvn >/dev/null || pkgs+=(maven)
    if ((${#pkgs[@]})); then
        log "installing ${pkgs[*]}"
        # Twice on failure: one dropped connection should not fail a run.
        as_root apt-get update -qq || { sleep 10; as_root apt-get update -qq; }
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null ||
            { sleep 10; as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null; }
        # On a machine with systemd the package starts its own Mosquitto on
        # 1883, which ours needs.
        if [[ " ${pkgs[*]} " == *" mosquitto "* ]] && command -v systemctl >/dev/null; then
            as_root systemctl disable --now mosquitto >/dev/null 2>&1 || true
        fi
    fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_of() { # name -> pid of a live process we started, or nothing
    local f=$STATE/$1.pid pid
    [[ -f $f ]] || return 1
    pid=$(<"$f")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    # A pid file left by a machine that has since rebooted may name
    # another process now: never take it for our broker, nor stop it.
    local conf=$MQTT_DIR/mosquitto.conf
    [[ $1 == kafka ]] && conf=$KAFKA_DIR/server.properties
    grep -qaF -- "$conf" "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

# Starts a command in its own session (so it outlives this shell and a
# terminal's job control) with output to $STATE/<name>.log. The log starts
# empty (readiness is read from it); what the previous run wrote is kept in
# $STATE/<name>.history.log, for the post-mortem of a fault test that
# restarted the broker after the failure it looks for.
spawn() { # name cmd...
    local name=$1; shift
    if [[ -s $STATE/$name.log ]]; then
        cat "$STATE/$name.log" >>"$STATE/$name.history.log"
    fi
    : >"$STATE/$name.log"
    # fd 9 closed: scripts/test.sh holds its one-run-at-a-time lock there,
    # and a broker outliving a killed run must not keep the next one waiting.
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$STATE/$name.pid" "$@" \
        >>"$STATE/$name.log" 2>&1 </dev/null 9>&- &
    local i
    for i in $(seq 50); do [[ -s $STATE/$name.pid ]] && return 0; sleep 0.1; done
    die "$name did not start"
}

stop() { # name
    local name=$1 pid i
    if pid=$(pid_of "$name"); then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name did not stop in 30 s, killing it"
            kill -KILL "$pid" 2>/dev/null || true
            for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        log "$name stopped"
    fi
    rm -f "$STATE/$name.pid"
}

# Sends a signal to a broker we started: KILL for a crash, STOP/CONT for a
# black hole (the socket stays open, nothing answers).
signal() { # name signal
    local pid
    pid=$(pid_of "$1") || die "$1 is not running"
    kill -"$2" "$pid"
    if [[ $2 == KILL ]]; then
        local i
        for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    log "$1: sent SIG$2"
}

fail_with_log() { # name message
    log "error: $2"
    log "last lines of $STATE/$1.log:"
    tail -n 60 "$STATE/$1.log" >&2 || true
    exit 1
}

# Waits until `check` succeeds, failing early when the process dies.
wait_ready() { # name check...
    local name=$1; shift
    local deadline=$((SECONDS + READY_TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        pid_of "$name" >/dev/null || fail_with_log "$name" "$name exited while starting"
        ((SECONDS < deadline)) || fail_with_log "$name" "$name not ready after ${READY_TIMEOUT} s"
        sleep 0.5
    done
}

# --- TLS material: a CA, a server certificate for localhost/127.0.0.1 (for
# Mosquitto and Kafka) and a client certificate, kept across runs (only
# `rm -rf $STATE` renews them).
make_tls() {
    [[ -s $TLS_DIR/client.crt ]] || make_certificates
    # Kafka's PEM key store: the server's PKCS#8 key, then its certificate.
    if [[ ! -s $TLS_DIR/server.pem ]]; then
        cat "$TLS_DIR/server.key" "$TLS_DIR/server.crt" >"$TLS_DIR/server.pem"
        chmod 600 "$TLS_DIR/server.pem"
    fi
}

make_certificates() {
    log "generating TLS CA and certificates in $TLS_DIR"
    mkdir -p "$TLS_DIR"
    local d=$TLS_DIR
    openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 3650 \
        -keyout "$d/ca.key" -out "$d/ca.crt" -subj "/CN=uns-kafka test CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    local who
    for who in server client; do
        openssl req -new -newkey rsa:2048 -nodes -sha256 \
            -keyout "$d/$who.key" -out "$d/$who.csr" \
            -subj "/CN=$([[ $who == server ]] && echo localhost || echo uns-kafka-client)" 2>/dev/null
        {
            echo "basicConstraints=critical,CA:FALSE"
            echo "keyUsage=critical,digitalSignature,keyEncipherment"
            if [[ $who == server ]]; then
                echo "extendedKeyUsage=serverAuth"
                echo "subjectAltName=DNS:localhost,IP:127.0.0.1"
            else
                echo "extendedKeyUsage=clientAuth"
            fi
        } >"$d/$who.ext"
        openssl x509 -req -sha256 -days 3650 -in "$d/$who.csr" -CA "$d/ca.crt" \
            -CAkey "$d/ca.key" -CAcreateserial -extfile "$d/$who.ext" \
            -out "$d/$who.crt" 2>/dev/null
        rm -f "$d/$who.csr" "$d/$who.ext"
    done
    chmod 600 "$d"/*.key
}

# --- Mosquitto
write_mosquitto_conf() {
    mkdir -p "$MQTT_DIR"
    rm -f "$MQTT_DIR/passwd"
    mosquitto_passwd -b -c "$MQTT_DIR/passwd" "$MQTT_USER" "$MQTT_PASSWORD" 2>/dev/null
    chmod 600 "$MQTT_DIR/passwd"
    {
        echo "# Written by tests/brokers.sh; edits are overwritten."
        # Root would otherwise drop to user mosquitto, who cannot read $STATE.
        [[ $EUID -eq 0 ]] && echo "user root"
        echo "per_listener_settings true"
        # Sessions and their queued messages survive a restart (fault tests).
        echo "persistence true"
        echo "persistence_location $MQTT_DIR/"
        echo "autosave_interval 5"
        echo "log_dest stderr"
        echo "log_type error"
        echo "log_type warning"
        echo "log_type notice"
        echo "log_type information"
        echo "log_timestamp_format %Y-%m-%dT%H:%M:%S"
        # A 10,000-message burst to a slow subscriber must be queued, not dropped.
        echo "max_queued_messages 100000"
        echo "max_queued_bytes 0"
        echo
        echo "listener $MQTT_PORT 127.0.0.1"
        echo "allow_anonymous true"
        echo
        echo "listener $MQTT_AUTH_PORT 127.0.0.1"
        echo "allow_anonymous false"
        echo "password_file $MQTT_DIR/passwd"
        echo
        echo "listener $MQTT_TLS_PORT 127.0.0.1"
        echo "allow_anonymous true"
        echo "cafile $TLS_DIR/ca.crt"
        echo "certfile $TLS_DIR/server.crt"
        echo "keyfile $TLS_DIR/server.key"
        echo "require_certificate false"
        echo
        echo "listener $MQTT_MTLS_PORT 127.0.0.1"
        echo "allow_anonymous true"
        echo "cafile $TLS_DIR/ca.crt"
        echo "certfile $TLS_DIR/server.crt"
        echo "keyfile $TLS_DIR/server.key"
        echo "require_certificate true"
    } >"$MQTT_DIR/mosquitto.conf"
}

mqtt_probe() {
    local t=uns-kafka/brokers-ready
    # Each bounded (40 s per attempt at worst): a stalled handshake must not
    # hold wait_ready's loop for ever.
    timeout 10 mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -t "$t" -m up -q 1 &&
        timeout 10 mosquitto_pub -h 127.0.0.1 -p "$MQTT_AUTH_PORT" -u "$MQTT_USER" -P "$MQTT_PASSWORD" -t "$t" -m up -q 1 &&
        timeout 10 mosquitto_pub -h localhost -p "$MQTT_TLS_PORT" --cafile "$TLS_DIR/ca.crt" -t "$t" -m up -q 1 &&
        timeout 10 mosquitto_pub -h localhost -p "$MQTT_MTLS_PORT" --cafile "$TLS_DIR/ca.crt" \
            --cert "$TLS_DIR/client.crt" --key "$TLS_DIR/client.key" -t "$t" -m up -q 1
}

mqtt_start() {
    if pid_of mosquitto >/dev/null; then log "mosquitto already running"; return 0; fi
    local p
    for p in "$MQTT_PORT" "$MQTT_AUTH_PORT" "$MQTT_TLS_PORT" "$MQTT_MTLS_PORT"; do
        port_open "$p" && die "port $p is already in use by another process (set MQTT_PORT/MQTT_AUTH_PORT/MQTT_TLS_PORT/MQTT_MTLS_PORT)"
    done
    make_tls
    write_mosquitto_conf
    spawn mosquitto mosquitto -c "$MQTT_DIR/mosquitto.conf"
    wait_ready mosquitto mqtt_probe
    log "mosquitto up: 127.0.0.1:$MQTT_PORT (anonymous), :$MQTT_AUTH_PORT ($MQTT_USER/$MQTT_PASSWORD), :$MQTT_TLS_PORT (TLS), :$MQTT_MTLS_PORT (TLS with a client certificate)"
}

# --- Kafka
kafka_jars() {
    local sum
    sum=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
    if [[ -f $KAFKA_LIBS/.pom.sha256 && $(<"$KAFKA_LIBS/.pom.sha256") == "$sum" ]]; then
        return 0
    fi
    log "fetching Kafka jars with Maven (cached in $KAFKA_LIBS and ~/.m2)"
    rm -rf "$KAFKA_LIBS"
    # A read timeout of a minute (Maven's own is half an hour) and a second
    # try: a stalled download should fail fast, a dropped one not at all.
    local mvn_fetch=(mvn -q -B -Dstyle.color=never -Dmaven.wagon.rto=60000
        -Daether.connector.requestTimeout=60000 -f "$KAFKA_POM"
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS")
    "${mvn_fetch[@]}" >&2 || { sleep 10; "${mvn_fetch[@]}" >&2; } ||
        die "mvn could not fetch the Kafka jars of $KAFKA_POM"
    echo "$sum" >"$KAFKA_LIBS/.pom.sha256"
}

write_kafka_conf() {
    mkdir -p "$KAFKA_DIR"
    cat >"$KAFKA_DIR/server.properties" <<EOF
# Written by tests/brokers.sh; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT,SSL://127.0.0.1:$KAFKA_SSL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT,SSL://127.0.0.1:$KAFKA_SSL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$KAFKA_USER="$KAFKA_PASSWORD";
# The SCRAM credentials are written into the storage when it is formatted.
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$TLS_DIR/server.pem
# Mutual TLS: a client must show a certificate the test CA signed.
listener.name.ssl.ssl.keystore.type=PEM
listener.name.ssl.ssl.keystore.location=$TLS_DIR/server.pem
listener.name.ssl.ssl.truststore.type=PEM
listener.name.ssl.ssl.truststore.location=$TLS_DIR/ca.crt
listener.name.ssl.ssl.client.auth=required
log.dirs=$KAFKA_DATA
auto.create.topics.enable=true
num.partitions=3
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
log.segment.bytes=16777216
log.retention.hours=2
EOF
    cat >"$KAFKA_DIR/log4j2.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
EOF
}

# The JVM command line for one of Kafka's main classes.
kafka_java() { # main-class args...
    local heap
    read -r -a heap <<<"$KAFKA_HEAP"
    KAFKA_CMD=(java "${heap[@]}" -XX:+UseG1GC -Djava.awt.headless=true
        -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties"
        -cp "$KAFKA_LIBS/*" "$@")
}

kafka_probe() {
    port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$STATE/kafka.log"
}

kafka_start() {
    if pid_of kafka >/dev/null; then log "kafka already running"; return 0; fi
    local p
    for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_SASL_SSL_PORT" "$KAFKA_SSL_PORT"; do
        port_open "$p" && die "port $p is already in use by another process (set KAFKA_PORT/KAFKA_CONTROLLER_PORT/KAFKA_SASL_SSL_PORT/KAFKA_SSL_PORT)"
    done
    make_tls
    kafka_jars
    write_kafka_conf
    if [[ ! -f $KAFKA_DATA/meta.properties ]]; then
        # `down` deletes this directory, so only ever take an empty one.
        if has_files "$KAFKA_DATA"; then
            die "$KAFKA_DATA is not empty and holds no Kafka data (meta.properties); name an empty or new directory in UNS_KAFKA_DATA"
        fi
        mkdir -p "$KAFKA_DATA"
        kafka_java kafka.tools.StorageTool format --ignore-formatted \
            -t "$KAFKA_CLUSTER_ID" -c "$KAFKA_DIR/server.properties" \
            --add-scram "SCRAM-SHA-256=[name=$KAFKA_USER,password=$KAFKA_PASSWORD]" \
            --add-scram "SCRAM-SHA-512=[name=$KAFKA_USER,password=$KAFKA_PASSWORD]"
        "${KAFKA_CMD[@]}" >"$STATE/kafka-format.log" 2>&1 ||
            fail_with_log kafka-format "formatting Kafka storage failed"
    fi
    printf '%s\n' "$KAFKA_DATA" >"$STATE/kafka-data-dir"
    kafka_java kafka.Kafka "$KAFKA_DIR/server.properties"
    spawn kafka "${KAFKA_CMD[@]}"
    wait_ready kafka kafka_probe
    log "kafka up: 127.0.0.1:$KAFKA_PORT, :$KAFKA_SASL_SSL_PORT (SASL_SSL PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, $KAFKA_USER/$KAFKA_PASSWORD), :$KAFKA_SSL_PORT (SSL with a client certificate)"
}

write_env() {
    cat >"$STATE/env" <<EOF
MQTT_HOST=127.0.0.1
MQTT_PORT=$MQTT_PORT
MQTT_AUTH_PORT=$MQTT_AUTH_PORT
MQTT_TLS_PORT=$MQTT_TLS_PORT
MQTT_MTLS_PORT=$MQTT_MTLS_PORT
MQTT_USER=$MQTT_USER
MQTT_PASSWORD=$MQTT_PASSWORD
KAFKA_PORT=$KAFKA_PORT
KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT
KAFKA_SASL_SSL_PORT=$KAFKA_SASL_SSL_PORT
KAFKA_SSL_PORT=$KAFKA_SSL_PORT
KAFKA_USER=$KAFKA_USER
KAFKA_PASSWORD=$KAFKA_PASSWORD
UNS_TLS_DIR=$TLS_DIR
EOF
}

status() {
    local ok=0 pid
    if pid=$(pid_of mosquitto) && port_open "$MQTT_PORT"; then
        echo "mosquitto: up (pid $pid) mqtt://127.0.0.1:$MQTT_PORT auth :$MQTT_AUTH_PORT tls :$MQTT_TLS_PORT mtls :$MQTT_MTLS_PORT"
    else
        echo "mosquitto: down"; ok=1
    fi
    if pid=$(pid_of kafka) && port_open "$KAFKA_PORT"; then
        echo "kafka: up (pid $pid) 127.0.0.1:$KAFKA_PORT sasl_ssl :$KAFKA_SASL_SSL_PORT ssl :$KAFKA_SSL_PORT"
    else
        echo "kafka: down"; ok=1
    fi
    [[ -f $STATE/env ]] && echo "env: $STATE/env"
    return $ok
}

mkdir -p "$STATE"
case ${1:-} in
    up)
        install_missing
        mqtt_start
        kafka_start
        write_env
        ;;
    down)
        stop kafka
        stop mosquitto
        # Only a directory Kafka formatted is wiped, whatever UNS_KAFKA_DATA says.
        if [[ -f $KAFKA_DATA/meta.properties ]]; then
            rm -rf "$KAFKA_DATA"
        elif has_files "$KAFKA_DATA"; then
            log "left $KAFKA_DATA alone: it holds no Kafka data (meta.properties)"
        fi
        rm -rf "$MQTT_DIR/mosquitto.db" "$STATE"/*.history.log "$STATE/kafka-data-dir"
        ;;
    status) status ;;
    kafka-stop) stop kafka ;;
    kafka-start) install_missing; kafka_start ;;
    mqtt-stop) stop mosquitto ;;
    mqtt-start) install_missing; mqtt_start ;;
    kafka-kill) signal kafka KILL; rm -f "$STATE/kafka.pid" ;;
    kafka-pause) signal kafka STOP ;;
    kafka-resume) signal kafka CONT ;;
    kafka-configs) # kafka-configs.sh without the distribution: quotas, topic configs
        shift
        kafka_java kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" "$@"
        "${KAFKA_CMD[@]}"
        ;;
    *)
        echo "usage: $0 up|down|status|kafka-stop|kafka-start|kafka-kill|kafka-pause|kafka-resume|kafka-configs ARGS|mqtt-stop|mqtt-start" >&2
        exit 2
        ;;
esac
