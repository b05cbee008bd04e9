# syntax=docker/dockerfile:1
#
# The taskfleet image: one `taskfleet` binary that runs as the scheduler (`scheduler`), a
# worker (`worker`) or a client (`submit`, `status`, `cancel`, `workers`, `run` ...).
#
#   docker build -t taskfleet .
#   docker run --rm taskfleet --help
#
# See docs/deploy.md and docker-compose.yml for a whole fleet.

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

# --- build ----------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
# Every workspace member's manifest must be present to build one of them, so the whole
# (small) source tree is copied; the caches below keep dependencies compiled between builds.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p taskfleet-cli \
    && install -m 0755 target/release/taskfleet /usr/local/bin/taskfleet
# The release profile keeps line tables for backtraces; compressing them keeps the line
# numbers and makes the binary about a third of its size.
RUN objcopy --compress-debug-sections=zlib /usr/local/bin/taskfleet

# --- runtime --------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim

# ca-certificates: amqps:// brokers (rustls with the system's roots). tini: PID 1, so SIGTERM
# reaches taskfleet and orphaned task processes are reaped. procps: `ps` to inspect running
# tasks. SQLite is compiled in and TLS is rustls: no other runtime library is needed.
# Versions are not pinned: bookworm's security updates replace them in place.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini procps \
    && rm -rf /var/lib/apt/lists/*

# An unprivileged user owns the state directory. /tmp/taskfleet-etl is where the ETL example
# passes files between its tasks; it exists here so a shared volume mounted on it (see
# docker-compose.yml) belongs to this user.
RUN groupadd --system --gid 10001 taskfleet \
    && useradd --system --uid 10001 --gid taskfleet --home-dir /var/lib/taskfleet \
        --no-create-home --shell /usr/sbin/nologin taskfleet \
    && install -d -o taskfleet -g taskfleet -m 0750 /var/lib/taskfleet \
    && install -d -o taskfleet -g taskfleet -m 0755 /tmp/taskfleet-etl

COPY --from=builder /usr/local/bin/taskfleet /usr/local/bin/taskfleet
COPY examples /opt/taskfleet/examples

# Defaults for a container: the API listens on every interface and the scheduler's store
# lives in the volume. Flags, other TASKFLEET_* variables and a config file still apply.
ENV TASKFLEET_DB=sqlite:///var/lib/taskfleet/state.sqlite \
    TASKFLEET_LISTEN=0.0.0.0:8080

# Numeric, so runtimes that require a non-root user (runAsNonRoot) can check it.
USER 10001:10001
WORKDIR /var/lib/taskfleet
# The scheduler's SQLite store (state.sqlite and its -wal/-shm files).
VOLUME ["/var/lib/taskfleet"]
EXPOSE 8080

ENTRYPOINT ["/usr/bin/tini", "--", "taskfleet"]
CMD ["--help"]
