#!/usr/bin/env bash
# Migrate stage (deploy/buildspec-migrate.yml): register a revision of the migration task
# definition that runs IMAGE_URI, run it once on Fargate in the tasks' subnets and security group
# (MySQL admits no one else), wait for it to stop, print its log, and fail unless
# `dispatchd migrate` exited 0. The services are deployed only after this succeeds.
# Needs: IMAGE_URI CLUSTER MIGRATE_FAMILY MIGRATE_LOG_GROUP SUBNETS (comma-separated) SECURITY_GROUP.
set -euo pipefail
: "${IMAGE_URI:?}" "${CLUSTER:?}" "${MIGRATE_FAMILY:?}" "${MIGRATE_LOG_GROUP:?}" "${SUBNETS:?}" "${SECURITY_GROUP:?}"
timeout_s=${MIGRATE_TIMEOUT_SECONDS:-1200}

current=$(aws ecs describe-task-definition --task-definition "$MIGRATE_FAMILY" --query taskDefinition --output json)
next=$(jq --arg image "$IMAGE_URI" '
  .containerDefinitions |= map(if .name == "dispatchd" then .image = $image else . end)
  | {family, taskRoleArn, executionRoleArn, networkMode, containerDefinitions, volumes,
     requiresCompatibilities, cpu, memory, runtimePlatform}
  | with_entries(select(.value != null))' <<<"$current")
arn=$(aws ecs register-task-definition --cli-input-json "$next" --query taskDefinition.taskDefinitionArn --output text)
echo "migration task definition: $arn"

run=$(aws ecs run-task --cluster "$CLUSTER" --task-definition "$arn" --launch-type FARGATE \
  --started-by codepipeline-migrate \
  --network-configuration "awsvpcConfiguration={subnets=[$SUBNETS],securityGroups=[$SECURITY_GROUP],assignPublicIp=DISABLED}" \
  --output json)
task=$(jq -r '.tasks[0].taskArn // empty' <<<"$run")
[ -n "$task" ] || { echo "run-task failed: $(jq -c .failures <<<"$run")"; exit 1; }
echo "migration task: $task"

deadline=$(( $(date +%s) + timeout_s ))
while :; do
  status=$(aws ecs describe-tasks --cluster "$CLUSTER" --tasks "$task" --query 'tasks[0].lastStatus' --output text)
  [ "$status" = STOPPED ] && break
  if [ "$(date +%s)" -ge "$deadline" ]; then
    aws ecs stop-task --cluster "$CLUSTER" --task "$task" --reason "migrate stage timed out" >/dev/null
    echo "migration still $status after ${timeout_s}s: stopped it"
    exit 1
  fi
  sleep 10
done

aws logs get-log-events --log-group-name "$MIGRATE_LOG_GROUP" \
  --log-stream-name "migrate/dispatchd/${task##*/}" --start-from-head \
  --query 'events[].message' --output text || echo "(no log events)"
code=$(aws ecs describe-tasks --cluster "$CLUSTER" --tasks "$task" \
  --query 'tasks[0].containers[?name==`dispatchd`].exitCode | [0]' --output text)
if [ "$code" != "0" ]; then
  reason=$(aws ecs describe-tasks --cluster "$CLUSTER" --tasks "$task" --query 'tasks[0].stoppedReason' --output text)
  echo "dispatchd migrate did not succeed: exit code $code ($reason)"
  exit 1
fi
echo "schema is current"
