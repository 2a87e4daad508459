# hookwall: a small, non-root image. Build: docker build -t hookwall .
# Run:   docker run -p 8080:8080 -p 9090:9090 -e CLERK_WEBHOOK_SIGNING_SECRET=whsec_... \
#          -v $PWD/my-hookwall.toml:/etc/hookwall/hookwall.toml:ro hookwall

# Build stage: the toolchain the project is tested with.
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin hookwall

# Runtime: distroless (glibc, CA certificates, no shell), as the nonroot user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/hookwall /usr/local/bin/hookwall
COPY config/hookwall.toml /etc/hookwall/hookwall.toml
# 8080: senders (listen.addr); 9090: /metrics, /healthz, /readyz (admin.addr).
EXPOSE 8080 9090
# distroless's nonroot user, by number: Kubernetes can verify `runAsNonRoot: true` only
# against a numeric user (the sidecar example sets it).
USER 65532:65532
ENTRYPOINT ["hookwall"]
CMD ["run", "-c", "/etc/hookwall/hookwall.toml"]
