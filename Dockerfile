# syntax=docker/dockerfile:1
# frugal: a small runtime image, non-root (numeric UID, so Kubernetes' runAsNonRoot can
# verify it), the usage store on a /data volume, serving the embedded free-tier policy.
#
#   docker build -t frugal .
#   docker run -p 4317-4319:4317-4319 -v frugal-data:/data \
#     -e GRAFANA_CLOUD_OTLP_ENDPOINT=https://otlp-gateway-prod-<zone>.grafana.net/otlp \
#     -e GRAFANA_CLOUD_INSTANCE_ID=123456 -e GRAFANA_CLOUD_API_TOKEN=glc_... frugal
#
# In Kubernetes, mount a PersistentVolumeClaim at /data with fsGroup: 65532.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY policies policies
COPY tests tests
RUN cargo build --release --locked --bin frugal \
 && mkdir -p /out/data \
 && cp target/release/frugal /out/frugal \
 && chown 65532:65532 /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/frugal /usr/local/bin/frugal
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
VOLUME ["/data"]
# OTLP/gRPC, OTLP/HTTP, admin (/metrics, /readyz, /api/v1/usage)
EXPOSE 4317 4318 4319
ENTRYPOINT ["/usr/local/bin/frugal"]
CMD ["serve", "--data-dir", "/data"]
