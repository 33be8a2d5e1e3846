# Sourced by bash scripts that build and run Windows test binaries (x86_64-pc-windows-gnu) under
# Wine: `source scripts/lib/windows.sh`, then `cargo test --target x86_64-pc-windows-gnu` (or
# nextest), then `wine_stop`. Works under `set -euo pipefail`; prints nothing on stdout (its
# messages and the installers' go to stderr); returns 1, with a message, when something cannot
# be set up.
#
# It installs what is missing, itself: Debian's gcc-mingw-w64-x86-64 (the linker) and wine64
# (Wine 8; its loader /usr/lib/wine/wine64 is on no PATH), and the Rust target. It uses a Wine
# prefix of its own, WINEPREFIX=${TETHER_WINEPREFIX:-<repo>/target/wine-prefix}, made once, and
# builds tests/windows/bcryptprimitives.dll into that prefix's system32 (Rust's std imports
# ProcessPrng from it; Wine 8 lacks it; rebuilt only when the source is newer). It exports the
# linker and the runner (scripts/wine-run) for cargo, WINEDEBUG=-all unless set, and
# WINEDLLOVERRIDES unless set (no Mono or Gecko install prompt). A second source takes a moment.
#
# wine_stop ends the prefix's Wine processes and its wineserver: call it at the end.

tether_windows_setup() {
  local repo wine=/usr/lib/wine/wine64 wineserver="" missing=() as_root=()
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd) || return 1

  # Debian packages, installed when missing.
  command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || missing+=(gcc-mingw-w64-x86-64)
  [ -x "$wine" ] || missing+=(wine64)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "windows.sh: installing ${missing[*]} (apt-get, once)" >&2
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then as_root=(sudo); fi
    if ! { "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update >&2 &&
      "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}" >&2; }; then
      echo "windows.sh: error: could not install ${missing[*]} with apt-get (root or sudo needed); install them and retry" >&2
      return 1
    fi
    if ! command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || [ ! -x "$wine" ]; then
      echo "windows.sh: error: x86_64-w64-mingw32-gcc or $wine still missing after installing ${missing[*]}" >&2
      return 1
    fi
  fi
  if [ -x /usr/lib/wine/wineserver64 ]; then
    wineserver=/usr/lib/wine/wineserver64
  elif [ -x /usr/lib/wine/wineserver ]; then
    wineserver=/usr/lib/wine/wineserver
  else
    echo "windows.sh: error: no wineserver in /usr/lib/wine (wineserver64 or wineserver)" >&2
    return 1
  fi

  # The Rust target.
  if ! command -v rustup >/dev/null 2>&1; then
    echo "windows.sh: error: rustup is missing: the Rust target x86_64-pc-windows-gnu cannot be added" >&2
    return 1
  fi
  if ! rustup target list --installed | grep -qx x86_64-pc-windows-gnu; then
    echo "windows.sh: installing the Rust target x86_64-pc-windows-gnu (rustup target add, once)" >&2
    if ! rustup target add x86_64-pc-windows-gnu >&2; then
      echo "windows.sh: error: rustup target add x86_64-pc-windows-gnu failed" >&2
      return 1
    fi
  fi

  # The environment, for cargo, scripts/wine-run and wine_stop. WINESERVER is Wine's own
  # variable: the loader starts that server.
  export WINEPREFIX="${TETHER_WINEPREFIX:-$repo/target/wine-prefix}"
  export WINEDEBUG="${WINEDEBUG:--all}"
  export WINEDLLOVERRIDES="${WINEDLLOVERRIDES-mscoree,mshtml=}"
  export WINESERVER="$wineserver"
  export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
  export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$repo/scripts/wine-run"

  # The prefix, made once (wineboot --init, then wait for its wineserver to finish). The mark
  # is written only after a complete boot, so an interrupted one is done again.
  if [ ! -f "$WINEPREFIX/.tether-prefix-ready" ]; then
    echo "windows.sh: creating the Wine prefix $WINEPREFIX (once, ~20 s)" >&2
    mkdir -p "$WINEPREFIX" || return 1
    if ! "$wine" wineboot --init </dev/null >&2 || ! "$wineserver" -w; then
      echo "windows.sh: error: wineboot --init failed for $WINEPREFIX" >&2
      return 1
    fi
    : >"$WINEPREFIX/.tether-prefix-ready"
  fi

  # The stand-in bcryptprimitives.dll, built when missing or older than its source.
  local src="$repo/tests/windows/bcryptprimitives.c" def="$repo/tests/windows/bcryptprimitives.def"
  local dll="$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"
  if [ ! -f "$dll" ] || [ "$src" -nt "$dll" ] || [ "$def" -nt "$dll" ]; then
    echo "windows.sh: building $dll" >&2
    if ! x86_64-w64-mingw32-gcc -shared -o "$dll.tmp" "$src" "$def" -ladvapi32 >&2 ||
      ! mv -f "$dll.tmp" "$dll"; then
      rm -f "$dll.tmp"
      echo "windows.sh: error: could not build $dll" >&2
      return 1
    fi
  fi
}

# Ends every Wine process of the prefix and its wineserver, and waits until they are gone.
# Never fails (nothing running is fine).
wine_stop() {
  local wineserver="${WINESERVER:-/usr/lib/wine/wineserver64}"
  [ -x "$wineserver" ] || wineserver=/usr/lib/wine/wineserver
  [ -x "$wineserver" ] || return 0
  "$wineserver" -k >/dev/null 2>&1 || true
  "$wineserver" -w >/dev/null 2>&1 || true
  return 0
}

tether_windows_setup || return 1
