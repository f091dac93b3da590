# volpool-controller image: one static binary, no shell, no package manager, non-root.
# Build from the repository root:
#   docker build -f deploy/images/controller.Dockerfile -t volpool-controller:0.1.0 .
FROM rust:1.89-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p volpool-controller --target x86_64-unknown-linux-musl \
 && install -D -m 0755 target/x86_64-unknown-linux-musl/release/volpool-controller /out/volpool-controller

# The controller needs no CA bundle: it trusts the cluster CA from its ServiceAccount mount.
FROM scratch
COPY --from=build /out/volpool-controller /volpool-controller
USER 65532:65532
ENTRYPOINT ["/volpool-controller"]
