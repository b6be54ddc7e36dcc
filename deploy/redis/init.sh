#!/bin/sh
# Writes this pod's redis.conf and sentinel.conf into /data/conf (both rewrite their
# own files, so they cannot run from the read-only ConfigMap). The primary is the one
# the Sentinels name; only when none answers (a first start) is it pod 0.
set -eu
svc="globaldns-redis.${POD_NAMESPACE}.svc.cluster.local"
me="$(hostname).${svc}"
primary=""
for i in 0 1 2; do
  peer="globaldns-redis-${i}.${svc}"
  [ "$peer" = "$me" ] && continue
  answer="$(timeout 2 redis-cli -h "$peer" -p 26379 sentinel get-master-addr-by-name globaldns 2>/dev/null | head -n 1 || true)"
  if [ -n "$answer" ]; then
    primary="$answer"
    break
  fi
done
[ -n "$primary" ] || primary="globaldns-redis-0.${svc}"
mkdir -p /data/conf
{
  # The shipped redis.conf names the ACL file and the replication login as a plain
  # install has them; here both come from the optional Secret.
  grep -v -e '^aclfile ' -e '^masteruser ' -e '^masterauth ' /etc/redis/redis.conf
  echo "dir /data"
  echo "replica-announce-ip ${me}"
  [ "$primary" = "$me" ] || echo "replicaof ${primary} 6379"
  if [ -f /etc/redis-acl/users.acl ]; then echo "aclfile /etc/redis-acl/users.acl"; fi
  if [ -n "${REPLICATION_PASSWORD:-}" ]; then
    echo "masteruser replication"
    echo "masterauth ${REPLICATION_PASSWORD}"
  fi
} > /data/conf/redis.conf
{
  echo "sentinel resolve-hostnames yes"
  echo "sentinel announce-hostnames yes"
  echo "sentinel announce-ip ${me}"
  echo "sentinel monitor globaldns ${primary} 6379 2"
  if [ -n "${SENTINEL_PASSWORD:-}" ]; then
    echo "sentinel auth-user globaldns sentinel"
    echo "sentinel auth-pass globaldns ${SENTINEL_PASSWORD}"
  fi
  echo "dir /data"
  # The shipped sentinel.conf's monitor line and login are a plain install's: replaced
  # by the ones above.
  grep -v -e '^sentinel monitor ' -e '^sentinel auth-' -e '^dir ' /etc/redis/sentinel.conf
} > /data/conf/sentinel.conf
echo "redis: ${me}, primary ${primary}"
