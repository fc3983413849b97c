#!/bin/bash
# First boot of the logd host (rendered by infra/components/host_boot.py; cloud-init runs it
# once, as root). There is no internet path: Python comes from the AL2023 repositories (S3
# buckets, reached through the S3 gateway endpoint) and logd with every dependency comes
# from the wheelhouse asset. Progress: /var/log/cloud-init-output.log.
set -euo pipefail

# Network calls at first boot can fail for a moment; give them about two minutes.
retry() {
  local delay
  for delay in 5 10 20 40 60; do
    "$@" && return 0
    echo "retrying in ${delay}s: $*" >&2
    sleep "$delay"
  done
  "$@"
}

# CloudFormation waits for this host's signal (a CreationPolicy): SUCCESS once logd answers
# /healthz, FAILURE as soon as a step here fails, so a broken first boot fails the deploy.
# The signal goes through the CloudFormation interface endpoint (there is no NAT).
instance_id=$(cat {{INSTANCE_ID_FILE}})
signal() {
  retry aws cloudformation signal-resource --region {{REGION}} --stack-name '{{STACK_NAME}}' \
    --logical-resource-id '{{SIGNAL_RESOURCE}}' --unique-id "$instance_id" --status "$1"
}
trap 'status=$?; if [ "$status" -ne 0 ]; then signal FAILURE; fi' EXIT

# The compiler and headers build logd's C accept path below.
retry dnf install -y --setopt=install_weak_deps=False {{PYTHON}} {{PYTHON}}-pip \
  {{PYTHON}}-devel gcc openssl-devel

# A system user that owns nothing but logd's state directory.
id -u logd >/dev/null 2>&1 ||
  useradd --system --home-dir /var/lib/logd --no-create-home --shell /sbin/nologin logd

install -d -m 0755 {{PREFIX}}
retry aws s3 cp --only-show-errors --region {{REGION}} '{{WHEELHOUSE_URL}}' {{PREFIX}}/wheelhouse.zip
rm -rf {{PREFIX}}/wheelhouse {{VENV}}
{{PYTHON}} -m zipfile -e {{PREFIX}}/wheelhouse.zip {{PREFIX}}/wheelhouse
{{PYTHON}} -m venv {{VENV}}
# logd from its sdist, to build the C accept path for this CPU (the wheelhouse is made on
# x86-64); if that fails, its pure-Python wheel. /info shows which: udp.accept_path.
{{VENV}}/bin/pip install --no-index --find-links {{PREFIX}}/wheelhouse --no-binary logd '{{REQUIREMENT}}' ||
  {{VENV}}/bin/pip install --no-index --find-links {{PREFIX}}/wheelhouse '{{REQUIREMENT}}'

# logd asks the kernel for a large UDP receive buffer; without this the kernel caps it.
cat >/etc/sysctl.d/90-logd.conf <<'SYSCTL'
net.core.rmem_max = {{UDP_RCVBUF}}
SYSCTL
sysctl -p /etc/sysctl.d/90-logd.conf

{{STORE_PASSWORD}}cat >/etc/systemd/system/logd.service <<'UNIT'
{{UNIT}}
UNIT
systemctl daemon-reload
systemctl enable --now logd.service

# Ready when logd answers /healthz (its UDP listener is up, its secrets loaded): then SUCCESS.
for attempt in $(seq {{HEALTH_ATTEMPTS}}); do
  curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:{{HTTP_PORT}}{{HEALTH_PATH}} && break
  if [ "$attempt" -eq {{HEALTH_ATTEMPTS}} ]; then
    echo "logd did not answer {{HEALTH_PATH}} in time: see journalctl -u logd" >&2
    exit 1
  fi
  sleep 2
done
signal SUCCESS
