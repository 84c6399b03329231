#!/usr/bin/env bash
# Prepares a host to run Locust for swarm. Runs over SSH as the login user on
# fresh Ubuntu 22.04/24.04 or Amazon Linux 2023 hosts, and again on every
# `swarm` run, so each step checks before it changes anything.
#
# Environment in:
#   SWARM_LOCUST_VERSION  required, e.g. 2.47.0
#   SWARM_ROLE            master | worker (only reported)
#   SWARM_STACK           stack name (only reported)
#   SWARM_REMOTE_DIR      default: parent of this script's directory
#   SWARM_SKIP_LIMITS     set to 1 to leave /etc/security alone
# Output: a timestamped log on stdout; <remote_dir>/locust-path holds the
# absolute path of the locust executable to use.
set -euo pipefail
# The caller keeps stdout as the log; tool errors (pip, apt) belong there too.
exec 2>&1

log() { printf '%s [bootstrap] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }

STEP="start"
REPORTED=0
die() {
    log "bootstrap FAILED: $*"
    REPORTED=1
    exit 1
}
# set -e can stop us anywhere; make sure the last log line still says why.
on_exit() {
    local rc=$?
    if [ "$rc" -ne 0 ] && [ "$REPORTED" -eq 0 ]; then
        log "bootstrap FAILED during step '$STEP' (exit code $rc)"
    fi
}
trap on_exit EXIT

VERSION="${SWARM_LOCUST_VERSION:-}"
ROLE="${SWARM_ROLE:-unset}"
STACK="${SWARM_STACK:-unset}"
[ -n "$VERSION" ] || die "SWARM_LOCUST_VERSION is not set"
case "$ROLE" in master | worker | unset) ;; *) die "SWARM_ROLE must be master or worker, got '$ROLE'" ;; esac

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REMOTE_DIR="${SWARM_REMOTE_DIR:-$(dirname "$SCRIPT_DIR")}"
VENV="$REMOTE_DIR/venv"
mkdir -p "$REMOTE_DIR"
log "bootstrap start role=$ROLE stack=$STACK locust=$VERSION remote_dir=$REMOTE_DIR user=$(id -un)"

# Runs a command as root: directly when we are root, else via passwordless
# sudo. -n because over SSH there is nobody to type a password; without it
# sudo would hang or fail with a confusing tty error.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        return 1
    fi
}
can_be_root() { [ "$(id -u)" -eq 0 ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; }

# Prints the version of the locust at $1, or nothing if it doesn't run.
# Reads the package metadata of the Python in the script's shebang (a directory name, else
# importlib.metadata: about 0.1 s) rather than
# `locust --version`, which imports all of Locust (about 0.6 CPU-s: it adds up on small hosts
# and on many hosts); falls back to `--version` when the shebang gives no usable Python.
locust_version_of() {
    local out name version py d
    py="$(head -n 1 "$1" 2>/dev/null | sed -n 's/^#! *//p' | cut -d' ' -f1)"
    if [ -n "$py" ] && [ -x "$py" ]; then
        # Fastest: the package's metadata directory beside that Python (a venv, or any prefix
        # install); no interpreter start at all.
        for d in "$(dirname "$(dirname "$py")")"/lib/python3*/site-packages/locust-*.dist-info; do
            [ -f "$d/METADATA" ] || continue
            out="${d##*/locust-}"
            printf '%s' "${out%.dist-info}"
            return 0
        done
        out="$(timeout 60 "$py" -c 'import importlib.metadata as m; print(m.version("locust"))' 2>/dev/null)" || out=""
        if [ -n "$out" ]; then printf '%s' "$out"; return 0; fi
    fi
    out="$(timeout 120 "$1" --version 2>/dev/null)" || return 0
    read -r name version _ <<<"$out" || true
    if [ "${name:-}" = "locust" ]; then printf '%s' "${version:-}"; fi
}

record_locust() {
    printf '%s\n' "$1" >"$REMOTE_DIR/locust-path"
    log "using locust $VERSION at $1"
}

# --- 1. locust already there? -------------------------------------------
# Checked first so that hosts without network (or without sudo) that already
# have the right locust never touch a package manager.
STEP="check existing locust"
LOCUST_BIN=""
for candidate in "$VENV/bin/locust" "$(command -v locust 2>/dev/null || true)"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    found="$(locust_version_of "$candidate")"
    if [ "$found" = "$VERSION" ]; then
        LOCUST_BIN="$candidate"
        log "locust $VERSION already present at $candidate; skipping install"
        break
    fi
    log "found locust '${found:-unknown}' at $candidate, want $VERSION"
done

# --- 2. otherwise install it into a venv ----------------------------------
# Locust 2.4x needs Python >= 3.11, newer than the default python3 on
# Ubuntu 22.04 (3.10) and Amazon Linux 2023 (3.9).
usable_python() {
    "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}
find_python() {
    local py
    for py in python3.13 python3.12 python3.11 python3; do
        if command -v "$py" >/dev/null 2>&1 && usable_python "$py"; then
            command -v "$py"
            return 0
        fi
    done
    return 1
}

install_python() {
    can_be_root || die "need Python >= 3.11 with venv, and cannot install it: not root and passwordless sudo is unavailable"
    if command -v apt-get >/dev/null 2>&1; then
        # Fresh EC2 hosts run unattended-upgrades at boot; wait for the dpkg
        # lock instead of failing on it.
        local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -y -q)
        log "apt-get update"
        as_root "${apt[@]}" update || die "apt-get update failed (no network or broken apt sources?)"
        log "apt-get install python3 python3-venv"
        as_root "${apt[@]}" install python3 python3-venv || die "apt-get install python3-venv failed"
        if ! find_python >/dev/null; then
            log "system python3 is older than 3.11; apt-get install python3.11 python3.11-venv"
            as_root "${apt[@]}" install python3.11 python3.11-venv || die "apt-get install python3.11 failed"
        fi
    elif command -v dnf >/dev/null 2>&1; then
        log "dnf install python3 python3-pip"
        as_root dnf install -y -q python3 python3-pip || die "dnf install python3 failed"
        if ! find_python >/dev/null; then
            log "system python3 is older than 3.11; dnf install python3.11 python3.11-pip"
            as_root dnf install -y -q python3.11 python3.11-pip || die "dnf install python3.11 failed"
        fi
    else
        die "no apt-get or dnf found; install Python >= 3.11 with venv support by hand"
    fi
}

if [ -z "$LOCUST_BIN" ]; then
    STEP="find python"
    if ! PYTHON="$(find_python)"; then
        log "no Python >= 3.11 with venv support found; installing"
        STEP="install python"
        install_python
        PYTHON="$(find_python)" || die "still no Python >= 3.11 with venv support after installing packages"
    fi
    log "using $PYTHON ($("$PYTHON" -c 'import platform; print(platform.python_version())'))"

    STEP="create venv"
    # A venv left half-made by an interrupted run, or built on another
    # Python, is cheaper to rebuild than to diagnose.
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1 && usable_python "$VENV/bin/python"; then
        log "reusing venv at $VENV"
    else
        log "creating venv at $VENV"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV" || die "could not create venv at $VENV"
    fi

    STEP="pip install"
    log "pip install locust==$VERSION"
    # Short network timeouts and an overall cap: a host without network must
    # fail in bounded time instead of hanging the whole `swarm` run.
    timeout 1200 "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input \
        --timeout 15 --retries 1 "locust==$VERSION" ||
        die "pip install locust==$VERSION failed (no network, or no such version?)"

    found="$(locust_version_of "$VENV/bin/locust")"
    [ "$found" = "$VERSION" ] || die "installed locust reports version '${found:-none}', expected $VERSION"
    LOCUST_BIN="$VENV/bin/locust"
    log "installed locust $VERSION at $LOCUST_BIN"
fi
record_locust "$LOCUST_BIN"

# --- 3. open-file limit ----------------------------------------------------
# Each simulated user holds a socket; the usual 1024 limit caps a worker far
# below what the box can drive. limits.d only affects new login sessions,
# which is what later `swarm` SSH commands are. Best effort: never fatal.
STEP="raise open-file limit"
LIMITS_FILE=/etc/security/limits.d/90-swarm.conf
LIMITS_TEXT='# written by swarm bootstrap: locust needs many sockets
*    soft nofile 65535
*    hard nofile 65535
root soft nofile 65535
root hard nofile 65535'
if [ "${SWARM_SKIP_LIMITS:-0}" = "1" ]; then
    log "SWARM_SKIP_LIMITS=1; not touching $LIMITS_FILE"
elif [ ! -d "$(dirname "$LIMITS_FILE")" ]; then
    log "no $(dirname "$LIMITS_FILE") (pam_limits not installed?); skipped raising the open-file limit"
elif [ -f "$LIMITS_FILE" ] && [ "$(cat "$LIMITS_FILE" 2>/dev/null)" = "$LIMITS_TEXT" ]; then
    log "open-file limit already set in $LIMITS_FILE"
elif can_be_root && printf '%s\n' "$LIMITS_TEXT" | as_root tee "$LIMITS_FILE" >/dev/null 2>&1; then
    log "wrote $LIMITS_FILE (nofile 65535)"
else
    log "cannot write $LIMITS_FILE (not root, no passwordless sudo); skipped raising the open-file limit"
fi

STEP="done"
log "bootstrap done role=$ROLE stack=$STACK"
