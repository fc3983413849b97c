# The Valkey auth token, from Secrets Manager into a file only root reads (no tracing here).
install -d -m 0700 {{STORE_ENV_DIR}}
store_password=$(retry aws secretsmanager get-secret-value --region {{REGION}} \
  --secret-id '{{STORE_SECRET_ID}}' --query SecretString --output text)
(umask 077 && printf 'LOGD_STORE_PASSWORD=%s\n' "$store_password" >{{STORE_ENV_FILE}})
unset store_password

