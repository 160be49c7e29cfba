# shellcheck shell=bash
# Shared by scripts/test and scripts/demo: make sure the system packages and
# the Python venv that forge's tests and demo use are present.
#
# As root, missing Debian packages are installed with apt-get; otherwise the
# exact command is printed and the script stops.

forge_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# binary -> Debian package that provides it
declare -A FORGE_PKG_OF=(
  [redis-server]=redis-server
  [slapd]=slapd
  [ldapsearch]=ldap-utils
  [mariadbd]=mariadb-server
  [chromium]=chromium
  [chromedriver]=chromium-driver
  [curl]=curl
  [python3]=python3
  [redis-cli]=redis-tools
  [puppet]=puppet
  [puppet-lint]=puppet-lint
  [systemd-analyze]=systemd
  [dpkg-deb]=dpkg
  [strip]=binutils
  [ssh-keygen]=openssh-client
  [openssl]=openssl
  [oidentd]=oidentd
  [useradd]=passwd
  [sudo]=sudo
  [lighttpd]=lighttpd
  [php-cgi]=php-cgi
  [uwsgi]=uwsgi
  [sge_qmaster]=gridengine-master
  [sge_execd]=gridengine-exec
  [qsub]=gridengine-client
  [qconf]=gridengine-client
  [promtool]=prometheus
)

# file -> Debian package, for what has no binary of its own
declare -A FORGE_PKG_OF_FILE=(
  [/usr/lib/uwsgi/plugins/python3_plugin.so]=uwsgi-plugin-python3
)

# ensure_binaries BIN... : installs the packages for missing binaries (and
# for the missing files of FORGE_PKG_OF_FILE).
ensure_binaries() {
  local missing=() bin pkg file
  for bin in "$@"; do
    if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ]; then
      pkg=${FORGE_PKG_OF[$bin]:-$bin}
      [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
    fi
  done
  for file in "${!FORGE_PKG_OF_FILE[@]}"; do
    if [ ! -e "$file" ]; then
      pkg=${FORGE_PKG_OF_FILE[$file]}
      [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  # Grid Engine: the tests bring up cells of their own; the package must not
  # configure (and start) a default cell.
  if [[ " ${missing[*]} " == *" gridengine-"* ]] && [ "$(id -u)" -eq 0 ]; then
    printf '%s\n' \
      'gridengine-common shared/gridengineconfig boolean false' \
      'gridengine-master shared/gridengineconfig boolean false' \
      'gridengine-client shared/gridengineconfig boolean false' \
      'gridengine-exec shared/gridengineconfig boolean false' \
      'gridengine-common shared/gridenginecell string default' \
      'gridengine-common shared/gridenginemaster string localhost' | debconf-set-selections
  fi
  local cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then
    echo "==> installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "forge needs these Debian packages: ${missing[*]}" >&2
    echo "install them as root with:" >&2
    echo "  sudo sh -c '$cmd'" >&2
    exit 1
  fi
}

# ensure_pyvenv : a venv with python-rq (for interop tests and benchmarks);
# exports FORGE_TEST_PYTHON.
ensure_pyvenv() {
  local venv=${FORGE_PY_VENV:-$forge_root/target/pyvenv}
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import rq' >/dev/null 2>&1; then
    echo "==> creating Python venv with rq at $venv"
    python3 -m venv "$venv" || {
      echo "python3 -m venv failed: install the venv module (apt-get install python3-venv)" >&2
      exit 1
    }
    "$venv/bin/pip" install -q --disable-pip-version-check 'rq>=3,<4'
  fi
  export FORGE_TEST_PYTHON="$venv/bin/python"
}
