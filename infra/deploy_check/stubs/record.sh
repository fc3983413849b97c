# Sourced by the deploy-check stand-ins: one line per call in /var/log/deploy-check/calls,
# the tool's name then its arguments, each shell-quoted (printf %q).
record() {
  mkdir -p /var/log/deploy-check
  { printf '%s' "$1"; shift; printf ' %q' "$@"; printf '\n'; } >>/var/log/deploy-check/calls
}
