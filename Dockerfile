# syntax=docker/dockerfile:1
# uns-kafka: host binary + default transform component in a slim, non-root image.
#
#   docker build -t uns-kafka .
#   docker run -p 8080:8080 -v $PWD/conf:/app/conf:ro \
#     -e UNS_MQTT__HOST=broker -e UNS_KAFKA__CONFIG__BOOTSTRAP_SERVERS=kafka:9092 uns-kafka
#
# (conf/settings.yaml says localhost, which inside the container is the
# container itself.)
#
# Stage 1 builds the native host and the wasm component; stage 2 carries only
# what runs: the binary, the component, and the default configuration.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p uns-kafka \
 && cargo build --release --locked -p uns-default --target wasm32-wasip2

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 uns \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin uns
COPY --from=build /src/target/release/uns-kafka /usr/local/bin/uns-kafka
# The host looks for the default component here when settings name none.
COPY --from=build /src/target/wasm32-wasip2/release/uns_default.wasm /usr/local/share/uns-kafka/uns_default.wasm
COPY conf/settings.yaml conf/.secrets_template.yaml /app/conf/
WORKDIR /app
# Compiled components are cached here, so a restart does not recompile.
ENV XDG_CACHE_HOME=/app/cache \
    UNS_BRIDGE__HEALTH_LISTEN=0.0.0.0:8080
RUN mkdir -p /app/cache && chown -R 10001:10001 /app
# By number: Kubernetes' runAsNonRoot cannot check a user name.
USER 10001:10001
VOLUME /app/conf
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["uns-kafka", "health", "--url", "http://127.0.0.1:8080/health"]
ENTRYPOINT ["uns-kafka"]
CMD ["run", "--config", "/app/conf"]
