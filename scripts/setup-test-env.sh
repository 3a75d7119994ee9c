#!/usr/bin/env bash
# Installs what the tests need beyond cargo, idempotently, into .cache/:
# redis-server and nginx (Debian packages; the tests start their own on
# ephemeral ports, never the system services), a Python venv with the independent client
# implementations (gmssl for SM2),
# pinned and checked by sha256 (tests/python/requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cache="$root/.cache"
mkdir -p "$cache"

# rustfmt and clippy come with rustup's default profile; add them if the
# toolchain was installed without them.
for c in rustfmt clippy; do
  cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 || rustup component add "$c" || {
    echo "setup: the Rust toolchain has no $c and rustup cannot add it"; exit 1; }
done

# Debian packages the tests need (a bare machine may lack them).
need_apt=()
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v kill >/dev/null || need_apt+=(procps)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
# Java runs sklearn2pmml and jpmml-evaluator (the PMML tests' tools).
command -v java >/dev/null || need_apt+=(default-jre-headless)
# Prometheus and promtool: the operations test scrapes a deployment with it.
command -v prometheus >/dev/null || need_apt+=(prometheus)
# deploy/local-cluster: namespaces and veth (ip), its CA (openssl), probes (curl).
command -v ip >/dev/null || need_apt+=(iproute2)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v curl >/dev/null || need_apt+=(curl)
# The compose file's check (tests/deploy_manifests.rs): Compose's own parser.
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || need_apt+=(docker-compose)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # Do not start Debian's redis or nginx service: tests run their own servers. (A
  # policy-rc.d the machine already has is left as it is.)
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    echo exit 101 | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  [ -z "$own_policy" ] || $sudo rm -f /usr/sbin/policy-rc.d
fi

# Python venv for client-side test tools.
venv="$cache/venv"
req="tests/python/requirements.txt"
ref_req="tests/python/reference-requirements.txt"
stamp="$venv/.requirements.sha256"
want=$(cat "$req" "$ref_req" | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating Python venv in $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    --cache-dir "$cache/pip" --require-hashes -r "$req"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    --cache-dir "$cache/pip" --require-hashes --no-deps -r "$ref_req"
  echo "$want" > "$stamp"
fi
# A venv of its own from a hashed requirements file, installed --no-deps
# (every package listed), made again when the file changes.
own_venv() { # folder requirements what
  local dir="$cache/$1" req="$2" stamp want
  stamp="$dir/.requirements.sha256"
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ ! -x "$dir/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: creating $3 in $dir"
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check \
      --cache-dir "$cache/pip" --require-hashes --no-deps -r "$req"
    echo "$want" > "$stamp"
  fi
}
# The PAI-EAS SDK (it needs protobuf<=3.20.3, which onnx cannot use).
own_venv venv-eas tests/python/eas-requirements.txt "the eas-prediction venv"
# scikit-learn, sklearn2pmml and jpmml-evaluator for the PMML tests
# (sklearn2pmml pins the scikit-learn versions it converts).
own_venv venv-pmml tests/python/pmml-requirements.txt "the PMML tools venv"
# grpcio with grpcio-reflection: a gRPC client that never saw inferq's protos.
own_venv venv-grpc tests/python/grpc-requirements.txt "the gRPC reflection client venv"
# kubernetes-validate: the Kubernetes schemas the manifests are checked against.
own_venv venv-k8s tests/python/k8s-requirements.txt "the Kubernetes schemas venv"
# kubectl (kustomize) and hadolint for deploy/'s offline checks.
scripts/fetch-deploy-tools.sh >/dev/null
# The ONNX Runtime library and the default embedding model (sha256-checked).
scripts/fetch-models.sh >/dev/null
echo "setup: test environment ready"
