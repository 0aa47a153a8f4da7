# syntax=docker/dockerfile:1
# Static secretsync binary on a distroless base: CA certificates, non-root, no shell.

FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools cmake clang \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The musl target goes onto the toolchain rust-toolchain.toml pins (installed here if the
# base image carries another patch release), not only onto the image's default one.
COPY rust-toolchain.toml ./
RUN rustup toolchain install && rustup target add x86_64-unknown-linux-musl
COPY . .
# aws-lc-sys builds C code; musl-gcc links it statically.
ENV CC_x86_64_unknown_linux_musl=musl-gcc
RUN cargo build --release --locked -p secretsync --target x86_64-unknown-linux-musl \
    && cp target/x86_64-unknown-linux-musl/release/secretsync /secretsync

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /secretsync /usr/local/bin/secretsync
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/secretsync"]
CMD ["run"]
