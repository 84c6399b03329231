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
#   SWARM_APT_LOCK_TIMEOUT  seconds to wait for apt/dpkg locks held by another process
#                         (default 600; swarm's tests shorten it)
#   SWARM_OFFLINE         1: install Locust from the wheelhouse only (pip --no-index), never
#                         apt/dnf or the network ([bootstrap] offline = true)
#   SWARM_WHEELHOUSE      default: <remote_dir>/wheelhouse (swarm ships it there)
#   SWARM_LOCUST_EXTRAS   Locust's extras to install too, comma-separated: `otel` for
#                         [locust] otel = true (installs locust[otel]); default: none
# Output: a timestamped log on stdout; <remote_dir>/locust-path holds the
# absolute path of the locust executable to use.
#
# `bootstrap.sh --probe` changes nothing: it prints one line
# `swarm-probe python=… version=… machine=… libc=… wheelhouse=…` (the Python the install
# would use, and the digest of the wheelhouse already here), from which swarm picks the
# wheelhouse to ship; without a usable Python in offline mode it fails as the install would.
set -euo pipefail
# The caller keeps stdout as the log; tool errors (pip, apt) belong there too.
exec 2>&1

log() { printf '%s [bootstrap] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }

STEP="start"
REPORTED=0
# "bootstrap FAILED: " is what swarm looks for in the log to lead its message with the reason.
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
EXTRAS="${SWARM_LOCUST_EXTRAS:-}"
[ -n "$VERSION" ] || die "SWARM_LOCUST_VERSION is not set"
case "$EXTRAS" in *[!a-z0-9,_-]*) die "SWARM_LOCUST_EXTRAS must be extras' names (otel), got '$EXTRAS'" ;; esac
# What pip installs: locust==2.47.0, or locust[otel]==2.47.0
REQ="locust${EXTRAS:+[$EXTRAS]}==$VERSION"
case "$ROLE" in master | worker | unset) ;; *) die "SWARM_ROLE must be master or worker, got '$ROLE'" ;; esac

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REMOTE_DIR="${SWARM_REMOTE_DIR:-$(dirname "$SCRIPT_DIR")}"
VENV="$REMOTE_DIR/venv"
OFFLINE="${SWARM_OFFLINE:-0}"
WHEELHOUSE="${SWARM_WHEELHOUSE:-$REMOTE_DIR/wheelhouse}"
mkdir -p "$REMOTE_DIR"
PROBE=0
if [ "${1:-}" = "--probe" ]; then PROBE=1; fi
[ "$PROBE" = 1 ] || log "bootstrap start role=$ROLE stack=$STACK locust=$VERSION remote_dir=$REMOTE_DIR user=$(id -un)"

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

# Does the Python of the locust at $1 have every package its extras ($EXTRAS) need? Read
# from the metadata, as pip would: importing them (grpc among them) costs about a second.
has_extras() {
    local py
    [ -n "$EXTRAS" ] || return 0
    py="$(head -n 1 "$1" 2>/dev/null | sed -n 's/^#! *//p' | cut -d' ' -f1)"
    [ -n "$py" ] && [ -x "$py" ] || return 1
    timeout 60 "$py" - "$EXTRAS" >/dev/null 2>&1 <<'PY'
import importlib.metadata as m, re, sys
extras = sys.argv[1].split(",")
for req in m.requires("locust") or []:
    name, _, marker = req.partition(";")
    extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
    if extra and extra.group(1) in extras:
        m.version(re.split(r"[\s\[<>=!~(]", name.strip(), maxsplit=1)[0])  # raises if missing
PY
}

record_locust() {
    printf '%s\n' "$1" >"$REMOTE_DIR/locust-path"
    log "using locust $VERSION at $1"
}

# --- the Python to install with --------------------------------------------
# Locust 2.4x needs Python >= 3.11, newer than the default python3 on
# Ubuntu 22.04 (3.10) and Amazon Linux 2023 (3.9). Offline, the venv is made --without-pip
# and pip comes from the wheelhouse, so a Python without ensurepip (Ubuntu's python3 without
# python3-venv) will do.
usable_python() {
    local mods="sys, venv, ensurepip"
    if [ "$OFFLINE" = 1 ]; then mods="sys, venv"; fi
    "$1" -c "import $mods; sys.exit(sys.version_info < (3, 11))" >/dev/null 2>&1
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
NO_PYTHON_OFFLINE="no Python >= 3.11 on this node (python3.13, python3.12, python3.11, python3), and offline mode installs no system packages: use an image with Python 3.11+ (ubuntu-24.04 has 3.12) or set [bootstrap] offline = false"

if [ "$PROBE" = 1 ]; then
    STEP="probe"
    if [ "$OFFLINE" = 1 ]; then
        PYTHON="$(find_python)" || die "$NO_PYTHON_OFFLINE"
    else
        PYTHON="$(find_python)" || PYTHON=""
    fi
    facts=""
    if [ -n "$PYTHON" ]; then
        # The wheel tags' parts: glibc's version from the C library itself; musl has no such
        # call, its ldd says "Version 1.2.4".
        facts="$("$PYTHON" -c 'import os, platform, sys
try:
    libc = "glibc-" + os.confstr("CS_GNU_LIBC_VERSION").split()[1]
except (ValueError, OSError, AttributeError, IndexError):
    libc = "other"
print("version=%d.%d machine=%s libc=%s" % (sys.version_info[:2] + (platform.machine(), libc)))')"
        case "$facts" in *libc=other)
            musl="$(ldd 2>&1 | sed -n 's/^Version \([0-9.]*\).*/\1/p' | head -n 1)" || musl=""
            facts="${facts%other}${musl:+musl-$musl}" ;;
        esac
    fi
    shipped="$(head -c 64 "$WHEELHOUSE/SWARM-WHEELHOUSE" 2>/dev/null)" || shipped=""
    printf 'swarm-probe python=%s %s wheelhouse=%s\n' "${PYTHON:-none}" "${facts:-}" "${shipped:-none}"
    exit 0
fi

# --- 0. let the machine finish booting -----------------------------------
# On EC2, SSH answers while cloud-init still runs (user data, package updates, its own apt);
# wait for it, bounded. Only while it says "running": on a machine where it never ran,
# `--wait` could wait for nothing. Exit 2 (newer cloud-init) = done with recoverable errors.
STEP="wait for cloud-init"
CLOUD_INIT_TIMEOUT=600
if command -v cloud-init >/dev/null 2>&1; then
    ci_status="$(timeout 60 cloud-init status 2>/dev/null | sed -n 's/^status: *//p')" || true
    if [ "$ci_status" = "running" ]; then
        ci_start=$SECONDS
        log "waiting for cloud-init to finish (status: running), up to ${CLOUD_INIT_TIMEOUT}s"
        ci_rc=0
        timeout "$CLOUD_INIT_TIMEOUT" cloud-init status --wait >/dev/null 2>&1 || ci_rc=$?
        ci_waited=$((SECONDS - ci_start))
        case "$ci_rc" in
            0) log "cloud-init finished after ${ci_waited}s" ;;
            2) log "cloud-init finished after ${ci_waited}s with recoverable errors (cloud-init status --long); continuing" ;;
            124) log "cloud-init still running after ${ci_waited}s; continuing without it" ;;
            *) log "cloud-init failed after ${ci_waited}s (exit $ci_rc; cloud-init status --long); continuing" ;;
        esac
    fi
fi

# --- 1. locust already there? -------------------------------------------
# Checked first so that hosts without network (or without sudo) that already
# have the right locust never touch a package manager.
STEP="check existing locust"
LOCUST_BIN=""
for candidate in "$VENV/bin/locust" "$(command -v locust 2>/dev/null || true)"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    found="$(locust_version_of "$candidate")"
    if [ "$found" = "$VERSION" ] && ! has_extras "$candidate"; then
        log "locust $VERSION at $candidate lacks the packages of its extras [$EXTRAS]"
        continue
    fi
    if [ "$found" = "$VERSION" ]; then
        LOCUST_BIN="$candidate"
        log "${REQ%==*} $VERSION already present at $candidate; skipping install"
        break
    fi
    log "found locust '${found:-unknown}' at $candidate, want $VERSION"
done

# --- apt: wait for whoever holds its locks ------------------------------------
# On a fresh EC2 host, cloud-init and unattended-upgrades run apt at boot, while SSH already
# answers. apt-get's DPkg::Lock::Timeout covers only dpkg's locks: `apt-get update` fails at
# once on the lists lock, so wait for all of them ourselves, saying who holds which.
APT_LOCKS=(/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock
    /var/cache/apt/archives/lock)
APT_LOCK_TIMEOUT="${SWARM_APT_LOCK_TIMEOUT:-600}"
case "$APT_LOCK_TIMEOUT" in '' | *[!0-9]*) die "SWARM_APT_LOCK_TIMEOUT must be whole seconds, got '$APT_LOCK_TIMEOUT'" ;; esac

# Prints the pid holding a lock on file $1 (nothing if free), read from the kernel's table:
# /proc/locks lists fcntl locks (apt's, which `flock -n` does not see) and flock ones alike,
# and needs neither root nor a tool that might be missing (fuser, lsof).
lock_holder() {
    local dev ino key kind pid id
    read -r dev ino < <(stat -L -c '%d %i' "$1" 2>/dev/null) || return 0
    key="$(printf '%02x:%02x:%s' $(((dev >> 8) & 0xfff)) $(((dev & 0xff) | ((dev >> 12) & 0xfff00))) "$ino")"
    # "1: POSIX  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; "1: -> POSIX ..." lines are waiters.
    while read -r _ kind _ _ pid id _; do
        if [ "$kind" != "->" ] && [ "$id" = "$key" ]; then
            printf '%s' "$pid"
            return 0
        fi
    done </proc/locks
}
describe_pid() {
    local comm
    # 0 or -1: a holder in another PID namespace, or an open-file-description lock.
    case "$1" in '' | 0 | -*) printf 'another process'; return 0 ;; esac
    comm="$(cat "/proc/$1/comm" 2>/dev/null)" || comm=""
    printf 'pid %s%s' "$1" "${comm:+ ($comm)}"
}
wait_apt_locks() {
    local start=$SECONDS lock pid held elapsed noted=-1 last=""
    while :; do
        held=""
        for lock in "${APT_LOCKS[@]}"; do
            pid="$(lock_holder "$lock")"
            if [ -n "$pid" ]; then held="$lock"; break; fi
        done
        [ -n "$held" ] || break
        elapsed=$((SECONDS - start))
        if [ "$elapsed" -ge "$APT_LOCK_TIMEOUT" ]; then
            die "apt lock $held still held by $(describe_pid "$pid") after ${elapsed}s (another apt or dpkg, e.g. unattended-upgrades): let it finish, then run \`swarm up\` again"
        fi
        # Said when the holder changes, and every 30 s: a log that shows the wait is alive.
        if [ "$noted" -lt 0 ] || [ "$held $pid" != "$last" ] || [ $((elapsed - noted)) -ge 30 ]; then
            log "waiting for apt lock $held (held by $(describe_pid "$pid")), ${elapsed}s so far, up to ${APT_LOCK_TIMEOUT}s"
            noted=$elapsed
            last="$held $pid"
        fi
        sleep 1
    done
    if [ "$noted" -ge 0 ]; then log "apt locks free after $((SECONDS - start))s"; fi
}

apt_get() {
    wait_apt_locks
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$APT_LOCK_TIMEOUT" -y -q "$@"
}

# Mirrors answer 5xx and sync, and the lists lock can be taken between our check and apt's:
# a few tries with backoff before calling it a broken network or sources.
apt_update() {
    local attempt delay=5 tries=4
    for attempt in $(seq 1 "$tries"); do
        wait_apt_locks
        log "apt-get update (attempt $attempt of $tries)"
        if apt_get update; then return 0; fi
        [ "$attempt" -lt "$tries" ] || break
        log "apt-get update failed; retrying in ${delay}s"
        sleep "$delay"
        delay=$((delay * 2))
    done
    die "apt-get update failed $tries times (no network or broken apt sources?)"
}

install_python() {
    [ "$OFFLINE" != 1 ] || die "$NO_PYTHON_OFFLINE"
    can_be_root || die "need Python >= 3.11 with venv, and cannot install it: not root and passwordless sudo is unavailable"
    if command -v apt-get >/dev/null 2>&1; then
        apt_update
        wait_apt_locks
        log "apt-get install python3 python3-venv"
        apt_get install python3 python3-venv || die "apt-get install python3-venv failed"
        if ! find_python >/dev/null; then
            log "system python3 is older than 3.11; apt-get install python3.11 python3.11-venv"
            apt_get install python3.11 python3.11-venv || die "apt-get install python3.11 failed"
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

# --- 2. otherwise install it into a venv ----------------------------------
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
        if [ "$OFFLINE" = 1 ]; then
            "$PYTHON" -m venv --without-pip "$VENV" || die "could not create venv at $VENV"
        else
            "$PYTHON" -m venv "$VENV" || die "could not create venv at $VENV"
        fi
    fi

    if [ "$OFFLINE" = 1 ]; then
        STEP="install from the wheelhouse"
        # pip itself comes from the wheelhouse too (run from its wheel, which pip supports):
        # the venv was made without it. The node's own pip config (an index, constraints) is
        # left out: the wheelhouse is the whole truth here.
        pip_wheel="$(ls "$WHEELHOUSE"/pip-*.whl 2>/dev/null | head -n 1)" || pip_wheel=""
        [ -n "$pip_wheel" ] || die "no pip wheel in the wheelhouse $WHEELHOUSE (swarm ships it there with offline = true)"
        log "installing $REQ from the wheelhouse at $WHEELHOUSE (offline: pip --no-index)"
        PIP_CONFIG_FILE=/dev/null timeout 1200 "$VENV/bin/python" "$pip_wheel/pip" install -q \
            --disable-pip-version-check --no-input --no-index --find-links "$WHEELHOUSE" \
            pip "$REQ" ||
            die "pip install $REQ from the wheelhouse $WHEELHOUSE failed (made for another Python or machine${EXTRAS:+, or without [$EXTRAS]}?)"
    else
        STEP="pip install"
        log "pip install $REQ"
        # Short network timeouts and an overall cap: a host without network must
        # fail in bounded time instead of hanging the whole `swarm` run.
        timeout 1200 "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input \
            --timeout 15 --retries 1 "$REQ" ||
            die "pip install $REQ failed (no network, or no such version?)"
    fi

    found="$(locust_version_of "$VENV/bin/locust")"
    [ "$found" = "$VERSION" ] || die "installed locust reports version '${found:-none}', expected $VERSION"
    has_extras "$VENV/bin/locust" || die "installed $REQ, yet the packages of [$EXTRAS] are missing"
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
