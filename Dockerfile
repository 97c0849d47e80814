# syntax=docker/dockerfile:1
# Build stage: the full toolchain, with the dependency layer cached apart from our code.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
# The manifest names the benchmark targets, so cargo needs their files to read it.
COPY benches ./benches
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && mkdir migrations && cargo build --release --locked \
    && rm -rf src migrations
COPY src ./src
COPY migrations ./migrations
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
ENV LOG_FORMAT=json HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/user-sync"]
CMD ["run"]
