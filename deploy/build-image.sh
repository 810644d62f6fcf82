#!/usr/bin/env bash
# Build stage (deploy/buildspec-build.yml): build deploy/Dockerfile for one commit, push it under
# that commit's tag, and wait for the ECR scan; stop on CRITICAL findings when FAIL_ON_CRITICAL
# is true. Tags are immutable, so a re-run of the same commit reuses the image it pushed.
# Needs: IMAGE_TAG IMAGE_URI REPOSITORY_NAME GO_IMAGE FAIL_ON_CRITICAL, and a logged-in docker.
set -euo pipefail
: "${IMAGE_TAG:?}" "${IMAGE_URI:?}" "${REPOSITORY_NAME:?}" "${GO_IMAGE:?}" "${FAIL_ON_CRITICAL:=true}"
cd "$(dirname "$0")/.."

if aws ecr describe-images --repository-name "$REPOSITORY_NAME" --image-ids imageTag="$IMAGE_TAG" >/dev/null 2>&1; then
  echo "$IMAGE_URI already exists (tags are immutable): not rebuilding"
else
  DOCKER_BUILDKIT=1 docker build -f deploy/Dockerfile --build-arg GO_IMAGE="$GO_IMAGE" \
    --label org.opencontainers.image.revision="$IMAGE_TAG" -t "$IMAGE_URI" .
  docker push "$IMAGE_URI"
fi

aws ecr wait image-scan-complete --repository-name "$REPOSITORY_NAME" --image-id imageTag="$IMAGE_TAG"
aws ecr describe-image-scan-findings --repository-name "$REPOSITORY_NAME" --image-id imageTag="$IMAGE_TAG" \
  --query 'imageScanFindings.findingSeverityCounts' --output table || true
critical=$(aws ecr describe-image-scan-findings --repository-name "$REPOSITORY_NAME" --image-id imageTag="$IMAGE_TAG" \
  --query 'imageScanFindings.findingSeverityCounts.CRITICAL' --output text)
if [ "$critical" != "None" ] && [ "$critical" -gt 0 ]; then
  if [ "$FAIL_ON_CRITICAL" = "true" ]; then
    echo "$critical CRITICAL findings in $IMAGE_URI: stopping (details in the ECR console)"
    exit 1
  fi
  echo "warning: $critical CRITICAL findings in $IMAGE_URI (FAIL_ON_CRITICAL=$FAIL_ON_CRITICAL)"
fi
