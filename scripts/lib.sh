# Shared shell functions for the scripts here and in bench/. Source it, do not run it.
# The scripts work on a fresh Debian 12 machine, as root or as a user with sudo.

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The repository root (this file lives in <root>/scripts).
repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }

# Runs a command as root: directly when we are root, else through sudo when there is one.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

APT_UPDATED=
apt_install() {
    log "installing Debian packages: $*"
    if [ -z "$APT_UPDATED" ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

# The real servers and tools the test lab starts (see tests/src/lib.rs).
ensure_lab_tools() {
    local missing=()
    command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1 \
        || missing+=(openssh-client)
    [ -x /usr/sbin/sshd ] || [ -x /usr/local/sbin/sshd ] || missing+=(openssh-server)
    # The key file tests make PKCS#8 keys with openssl.
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    local pgbin=/usr/lib/postgresql/15/bin tool
    for tool in initdb postgres pg_ctl; do
        command -v "$tool" >/dev/null 2>&1 || [ -x "$pgbin/$tool" ] || { missing+=(postgresql-15); break; }
    done
    for tool in psql pgbench; do
        command -v "$tool" >/dev/null 2>&1 || { missing+=(postgresql-client-15); break; }
    done
    # The probe tests run a real MariaDB (mariadbd is in /usr/sbin).
    command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server mariadb-client)
    # bench/run's recovery figures keep OpenSSH's ssh up with autossh.
    command -v autossh >/dev/null 2>&1 || missing+=(autossh)
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)  # the admin endpoint tests
    # The second SSH server of the interop tests (dropbear is in /usr/sbin).
    { command -v dropbear >/dev/null 2>&1 || [ -x /usr/sbin/dropbear ]; } \
        && command -v dropbearkey >/dev/null 2>&1 || missing+=(dropbear-bin)
    if [ "$(id -u)" -eq 0 ]; then
        # As root the lab runs PostgreSQL as a system user through runuser, and adds the
        # user with useradd (both in Debian's essential packages, checked for clarity).
        command -v runuser >/dev/null 2>&1 || missing+=(util-linux)
        command -v useradd >/dev/null 2>&1 || missing+=(passwd)
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
    # The third SSH server of the interop tests: AsyncSSH, a Python package from PyPI, at the
    # release the tests were written against (they read its debug log's wording).
    ensure_python_package asyncssh 'asyncssh>=2.24.1,<2.25'
}

# Makes sure python3 imports the module $1, installing the PyPI requirement $2 (default: the
# package of the same name) with pip if not. A Debian python3 refuses pip installs outside a
# virtualenv (PEP 668): only then is pip told to go ahead anyway.
ensure_python_package() {
    local module=$1 package=${2:-$1} out
    command -v python3 >/dev/null 2>&1 || apt_install python3
    python3 -c "import $module" >/dev/null 2>&1 && return 0
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    log "installing the Python package $package"
    if ! out=$(python3 -m pip install -q "$package" 2>&1); then
        case "$out" in
            *externally-managed-environment*)
                python3 -m pip install -q --break-system-packages "$package" \
                    || die "pip could not install $package" ;;
            *) printf '%s\n' "$out" >&2; die "pip could not install $package" ;;
        esac
    fi
    python3 -c "import $module" || die "python3 cannot import $module after installing $package"
}

# cargo subcommands the checks use.
ensure_rust_tools() {
    command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust (https://rustup.rs)"
    if ! cargo fmt --version >/dev/null 2>&1; then
        log "installing rustfmt"; rustup component add rustfmt
    fi
    if ! cargo clippy --version >/dev/null 2>&1; then
        log "installing clippy"; rustup component add clippy
    fi
    if ! cargo nextest --version >/dev/null 2>&1; then
        log "installing cargo-nextest"; cargo install cargo-nextest --locked
    fi
}
