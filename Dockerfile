# syntax=docker/dockerfile:1
# Build stage: the full toolchain, with the dependency layer cached apart from our code.
# .ci/docker-context replays this stage's COPY and RUN lines in a temp directory, so a
# file the build needs but no COPY brings in fails CI, not the next image build.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The dependency layer: the manifest, the lock and build.rs only, with stand-in targets.
# The manifest names the benchmarks, and cargo refuses a manifest whose targets have no
# file, so they are stubs: the image never builds them, and editing a benchmark (or any
# source) leaves this layer, the slow one, cached.
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir -p src benches/drain migrations \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/drain/main.rs \
    && echo 'fn main() {}' > benches/soak.rs \
    && cargo build --release --locked \
    && rm -rf src migrations
COPY src ./src
COPY migrations ./migrations
# The revision that --version and user_sync_build_info name (.git is not sent): pass
# --build-arg USER_SYNC_REVISION=$(git rev-parse --short=12 HEAD). After the dependency
# layer, which a new value would otherwise rebuild.
ARG USER_SYNC_REVISION
# touch: the copied files may be older than the stand-ins' build, and cargo goes by mtime.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

# Runtime stage: a slim image with CA roots (amqps://, sslmode=verify-full) and no shell
# tooling beyond Debian's base, running as an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin usersync
COPY --from=build /src/target/release/user-sync /usr/local/bin/user-sync
USER 10001:10001
# 8791: a port of its own, clear of the backend's in a shared Pod (see README, Probes).
ENV LOG_FORMAT=json HTTP_ADDR=0.0.0.0:8791
EXPOSE 8791
# The binary asks its own /healthz (no curl in the image): 0 when the worker's loops make
# progress, whatever the broker or the database do. start-period covers the migrations.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/user-sync", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/user-sync"]
CMD ["run"]
