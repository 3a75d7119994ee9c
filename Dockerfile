# syntax=docker/dockerfile:1
# inferq's image: the `inferq` binary and ONNX Runtime's shared library on a
# slim Debian, run as a user without privileges. Models are not in it: mount
# them and name them in the settings file (/etc/inferq/settings.yaml).
#
#   docker build -t inferq:0.1.0 .
#   docker run -v $PWD/config:/etc/inferq -p 5000:5000 inferq:0.1.0
#
# deploy/compose.yaml and deploy/kubernetes run it in go-infer's layout.
# tests/deploy_manifests.rs lints this file (hadolint) and checks that what
# the other stages hand on is where the last one expects it.

FROM rust:1.95-slim-trixie AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin inferq

# libonnxruntime.so from the onnxruntime wheel on PyPI, checked by sha256
# (the same script and pin as every other build of inferq).
FROM python:3.11-slim-trixie AS onnxruntime
WORKDIR /fetch
COPY scripts/fetch-models.sh scripts/
COPY scripts/lib/pypi.sh scripts/lib/
RUN INFERQ_MODELS_DIR=/fetch/out scripts/fetch-models.sh --runtime-only

FROM debian:trixie-slim
# ca-certificates: https to a model server (the http processor) and to OTLP.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 inferq \
    && useradd --system --uid 10001 --gid inferq --no-create-home --shell /usr/sbin/nologin inferq
COPY --from=build /src/target/release/inferq /usr/local/bin/inferq
COPY --from=onnxruntime /fetch/out/libonnxruntime.so /usr/local/lib/inferq/libonnxruntime.so
ENV ORT_DYLIB_PATH=/usr/local/lib/inferq/libonnxruntime.so
# A numeric user, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
# REST, gRPC, admin (gateway); queue gRPC, queue admin; dispatcher admin.
EXPOSE 5000 5001 5002 5100 5101 5201
ENTRYPOINT ["/usr/local/bin/inferq"]
CMD ["standalone", "--yaml", "/etc/inferq/settings.yaml"]
