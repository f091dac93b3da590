# volpool-agent image. Build from the repository root:
#   docker build -f deploy/images/agent.Dockerfile -t volpool-agent:0.1.0 .
# The agent chroots into the node's root (/host) to check and install the NFS client, so the
# runtime is a small Debian with the mount tools, not a shell-less image.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile agent --locked -p volpool-agent \
 && install -D -m 0755 target/agent/volpool-agent /out/volpool-agent

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates mount util-linux \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/volpool-agent /usr/local/bin/volpool-agent
ENTRYPOINT ["/usr/local/bin/volpool-agent"]
