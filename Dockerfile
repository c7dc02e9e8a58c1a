# syntax=docker/dockerfile:1
# One build, three small images: `docker build --target ingest|deliver|comagic-sandbox .`
# The runtime is distroless (glibc + CA certificates, no shell), running as a non-root user.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ingest --bin deliver --bin comagic-sandbox \
 && mkdir -p /out /state/spool /state/ledger \
 && cp target/release/ingest target/release/deliver target/release/comagic-sandbox /out/

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
# The spool and the ledger: a volume mounted here starts out owned by the service's user.
COPY --from=build --chown=65532:65532 /state /var/lib/verbox-bridge
# Both services (and `deliver dlq ...` / `deliver check` run with exec) read this config.
ENV RUST_LOG=info BRIDGE_CONFIG=/etc/verbox-bridge/bridge.toml

FROM runtime AS ingest
COPY --from=build /out/ingest /usr/local/bin/ingest
# Webhooks; metrics ([ingest] metrics_listen).
EXPOSE 8080 9094
ENTRYPOINT ["/usr/local/bin/ingest"]

FROM runtime AS deliver
COPY --from=build /out/deliver /usr/local/bin/deliver
EXPOSE 9091
ENTRYPOINT ["/usr/local/bin/deliver"]

FROM runtime AS comagic-sandbox
COPY --from=build /out/comagic-sandbox /usr/local/bin/comagic-sandbox
EXPOSE 8099
ENTRYPOINT ["/usr/local/bin/comagic-sandbox", "--config", "/etc/comagic-sandbox/sandbox.toml", "--listen", "0.0.0.0:8099"]
