# syntax=docker/dockerfile:1
# burstgate's image: `docker build -t <registry>/burstgate:<tag> .` (BuildKit), then set the image
# in deploy/kustomization.yaml (`kustomize edit set image burstgate=<registry>/burstgate:<tag>`).
# Two stages: the Rust toolchain builds the one binary; the runtime is distroless (glibc, CA
# certificates, no shell), running as the non-root user 65532 with only the binary and the
# default policies (which deploy/ replaces by mounting the ConfigMap burstgate-policies).

ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# C toolchain pieces some crypto crates build with (ring, aws-lc-sys).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake=3.25.* clang=1:14.* \
 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin burstgate \
 && install -D -m 0755 target/release/burstgate /out/burstgate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/burstgate /usr/local/bin/burstgate
COPY policies/*.yaml /etc/burstgate/policies/
ENV BURSTGATE_POLICY_DIR=/etc/burstgate/policies
USER 65532:65532
# 9090: /metrics and /healthz; 10250: the kubelet API.
EXPOSE 9090 10250
ENTRYPOINT ["/usr/local/bin/burstgate"]
CMD ["run"]
