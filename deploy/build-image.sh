#!/usr/bin/env bash
# Build stage (deploy/buildspec-build.yml): build the image of deploy/Dockerfile for one commit
# with deploy/image.sh (the same script and Dockerfile `make image` and deploy/image_test.go
# use), push it under that commit's tag, and wait for the ECR scan; stop on CRITICAL findings
# when FAIL_ON_CRITICAL is true. Tags are immutable, so a re-run of the same commit reuses the
# image it pushed. The RDS CA bundle is downloaded by image.sh from AWS's trust store.
# Needs: IMAGE_TAG IMAGE_URI REPOSITORY_NAME FAIL_ON_CRITICAL, Go, gcc with static glibc, and a
# logged-in docker.
set -euo pipefail
: "${IMAGE_TAG:?}" "${IMAGE_URI:?}" "${REPOSITORY_NAME:?}" "${FAIL_ON_CRITICAL:=true}"
cd "$(dirname "$0")/.."

if aws ecr describe-images --repository-name "$REPOSITORY_NAME" --image-ids imageTag="$IMAGE_TAG" >/dev/null 2>&1; then
  echo "$IMAGE_URI already exists (tags are immutable): not rebuilding"
else
  IMAGE="$IMAGE_URI" IMAGE_BUILDER=docker REVISION="$IMAGE_TAG" bash deploy/image.sh
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
