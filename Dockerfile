# syntax=docker/dockerfile:1
#
# rollout-controller image: `rollout serve` on 0.0.0.0:8080, as uid 65532, on distroless.
#
#   docker build -t rollout-controller:dev .
#   docker run --rm -p 8080:8080 -e ROLLOUT_ADMIN_TOKENS=ann:some-long-secret rollout-controller:dev
#
# Layers are ordered for the build cache: dependencies are compiled from Cargo.toml/Cargo.lock
# alone, so editing the sources only recompiles the crate itself.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_NET_RETRY=5 \
    CARGO_INCREMENTAL=0

# 1. Dependencies only, built against a stub crate; reused until Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
# The manifest names its criterion benches, so they get stubs too.
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && for bench in $(sed -n '/^\[\[bench\]\]/,/^$/s/^name = "\(.*\)"/\1/p' Cargo.toml); do \
        echo 'fn main() {}' > "benches/$bench.rs"; \
    done \
 && cargo build --release --locked \
 && rm -rf src benches \
           target/release/rollout \
           target/release/.fingerprint/rollout-controller-* \
           target/release/deps/rollout-* \
           target/release/deps/rollout_controller-* \
           target/release/deps/librollout_controller-*

# 2. The crate itself (.dockerignore keeps target/, .git/ and the like out of the context).
COPY . .
# The commit `rollout_build_info` reports (.git stays out of the context):
#   docker build --build-arg ROLLOUT_BUILD_COMMIT=$(git rev-parse --short=12 HEAD) …
ARG ROLLOUT_BUILD_COMMIT=unknown
RUN cargo build --release --locked \
 && install -D -m 0755 target/release/rollout /usr/local/bin/rollout \
 && /usr/local/bin/rollout --help >/dev/null

# Runtime: glibc + libgcc + CA certificates, no shell, no package manager, non-root by default.
FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="rollout-controller" \
      org.opencontainers.image.description="Staged feature rollouts with guard rails" \
      org.opencontainers.image.licenses="MIT"
COPY --from=builder /usr/local/bin/rollout /usr/local/bin/rollout
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/rollout"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
