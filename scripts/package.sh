#!/usr/bin/env bash
# Builds the Debian package dist/synckit_VERSION_ARCH.deb (amd64 here): syncctl as a system service.
#
#   bash scripts/package.sh                      # uses (or builds) the release binary
#   SYNCCTL=/path/to/syncctl bash scripts/package.sh   # packages that binary, builds nothing
#
# What goes in (files from packaging/deb/, the rest generated here):
#   /usr/bin/syncctl                          the release binary (static Swift runtime), stripped
#   /lib/systemd/system/synckit.service       runs `syncctl run --config /etc/synckit/config.yaml`
#                                             as the system user synckit, sandboxed
#   /lib/systemd/system/synckit@.service      one user's own folder: synckit@alice
#   /etc/synckit/{config.yaml,peers,trusted-ids}   conffiles (kept on upgrade if edited)
#   /usr/share/man/man1/syncctl.1.gz          rendered from `syncctl --experimental-dump-help`
#                                             by scripts/gen-manpage.py
#   bash, zsh and fish completions            from `syncctl --generate-completion-script`
#   /usr/share/doc/synckit/{copyright,changelog.gz}, /usr/share/lintian/overrides/synckit
#   DEBIAN/{control,conffiles,md5sums,postinst,prerm,postrm}
#
# The version is `git describe --tags` when the repository has a tag, else syncctl's own
# version plus the commit's date and hash (0.1.0+git20261203.30647a1). The build is
# reproducible for a given binary: every date is the commit's (SOURCE_DATE_EPOCH).
# Needs dpkg-deb, binutils (strip), python3 and gzip. LINTIAN=1 also runs lintian on the result.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PKG=synckit
# The machine's own architecture: the binary is built here, for it (amd64 in CI).
ARCH=$(dpkg --print-architecture)
# Progress on stderr; stdout gets only the package's path (last line), for scripts.
log() { echo "package: $*" >&2; }

# ---- the binary ----
# CI built it earlier (compose/test.sh, scripts/simulate.sh share .build-release): use that one
# as it is; build only when it is missing.
if [[ -z ${SYNCCTL:-} ]]; then
    source scripts/setup.sh >&2
    flags=(-c release --static-swift-stdlib --scratch-path .build-release)
    SYNCCTL="$(swift build "${flags[@]}" --show-bin-path)/syncctl"
    if [[ ! -x $SYNCCTL ]]; then
        log "no release build yet: building syncctl (release, static Swift runtime)"
        swift build "${flags[@]}" --product syncctl 2>&1 | tail -n 1 >&2
    elif [[ -n $(find Sources Package.swift -newer "$SYNCCTL" -type f -print -quit) ]]; then
        log "note: sources changed since $SYNCCTL was built; packaging it as it is"
        log "      (rebuild first: swift build ${flags[*]} --product syncctl)"
    fi
fi
[[ -x $SYNCCTL ]] || { log "no syncctl binary at $SYNCCTL"; exit 1; }

# ---- version and dates ----
bin_version=$("$SYNCCTL" --version)
if tag=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
    # v1.2.0-3-gabc1234 -> 1.2.0+3.gabc1234 (Debian versions must start with a digit).
    VERSION=$(sed -E 's/^v//; s/-([0-9]+)-g/+\1.g/' <<<"$tag")
elif commit=$(git rev-parse --short=7 HEAD 2>/dev/null); then
    VERSION="$bin_version+git$(git log -1 --format=%cd --date=format:%Y%m%d).$commit"
else
    VERSION=$bin_version
fi
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
MAINTAINER=${MAINTAINER:-$(git log -1 --format='%an <%ae>' 2>/dev/null || echo "SyncKit maintainers <synckit@localhost>")}
log "syncctl $bin_version from $SYNCCTL, package version $VERSION"

# ---- the tree ----
STAGE=$(mktemp -d /tmp/synckit-deb.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT
T=$STAGE/$PKG
install -d "$T/DEBIAN" "$T/usr/bin" "$T/lib/systemd/system" "$T/etc/synckit" \
    "$T/usr/share/man/man1" "$T/usr/share/doc/$PKG" \
    "$T/usr/share/bash-completion/completions" "$T/usr/share/zsh/vendor-completions" \
    "$T/usr/share/fish/vendor_completions.d"

# Stripped: the symbols and debug info are most of the unstripped binary.
install -m 0755 "$SYNCCTL" "$T/usr/bin/syncctl"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$T/usr/bin/syncctl"
log "binary: $(du -h --apparent-size "$SYNCCTL" | cut -f1) unstripped, $(du -h --apparent-size "$T/usr/bin/syncctl" | cut -f1) stripped"
BIN="$T/usr/bin/syncctl"

install -m 0644 packaging/deb/synckit.service packaging/deb/synckit@.service "$T/lib/systemd/system/"
install -m 0644 packaging/deb/config.yaml packaging/deb/peers packaging/deb/trusted-ids "$T/etc/synckit/"
install -m 0644 packaging/deb/copyright "$T/usr/share/doc/$PKG/copyright"
install -d "$T/usr/share/lintian/overrides"
install -m 0644 packaging/deb/lintian-overrides "$T/usr/share/lintian/overrides/$PKG"
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$T/DEBIAN/"
# dpkg keeps an edited conffile on upgrade (and asks); purge removes them.
(cd "$T" && find etc -type f | sort | sed 's|^|/|') > "$T/DEBIAN/conffiles"

# The man page, from the parser's own JSON; -n keeps the gzip header free of names and dates.
"$BIN" --experimental-dump-help \
    | python3 scripts/gen-manpage.py --version "$VERSION" --append packaging/deb/syncctl.1.extra \
    | gzip -9n > "$T/usr/share/man/man1/syncctl.1.gz"

# bash-completion sources its files: no #! line (lintian: bash-completion-with-hashbang).
"$BIN" --generate-completion-script bash | sed '1{/^#!/d}' > "$T/usr/share/bash-completion/completions/syncctl"
"$BIN" --generate-completion-script zsh > "$T/usr/share/zsh/vendor-completions/_syncctl"
"$BIN" --generate-completion-script fish > "$T/usr/share/fish/vendor_completions.d/syncctl.fish"

# A changelog with one entry for this build (a native package: changelog.gz).
{
    echo "$PKG ($VERSION) unstable; urgency=medium"
    echo
    echo "  * Built from $(git log -1 --format='commit %h: %s' 2>/dev/null | cut -c1-58 || echo 'a source tree')."
    echo
    echo " -- $MAINTAINER  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n > "$T/usr/share/doc/$PKG/changelog.gz"

# ---- control ----
# The Swift runtime is inside the binary; the C libraries it links are not: ask
# dpkg-shlibdeps which packages hold them (it wants a debian/control to read), else list them.
depends=""
if command -v dpkg-shlibdeps >/dev/null; then
    mkdir -p "$STAGE/src/debian"
    printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$PKG" "$PKG" > "$STAGE/src/debian/control"
    depends=$(cd "$STAGE/src" && dpkg-shlibdeps -O "$BIN" 2>/dev/null | sed -n 's/^shlibs:Depends=//p') || depends=""
fi
[[ -n $depends ]] || depends="libc6 (>= 2.34), libgcc-s1, liblz4-1, libsqlite3-0, libstdc++6, libsystemd0"
rm -rf "$STAGE/src"
# Installed-Size as dpkg-gencontrol counts it (KiB per file rounded up, 1 per directory), not
# du, whose answer depends on the file system the tree was staged on.
installed_size=$(find "$T" -path "$T/DEBIAN" -prune -o \( -type f -printf '%s\n' \) -o \( -type d -printf '1024\n' \) \
    | awk '{ kib += int(($1 + 1023) / 1024) } END { print kib }')
cat > "$T/DEBIAN/control" <<EOF
Package: $PKG
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $installed_size
Depends: adduser, $depends
Section: net
Priority: optional
Description: peer-to-peer folder sync for a LAN (syncctl daemon)
 SyncKit keeps a folder identical on every machine of a cluster, with no
 server: every node ends with the union of all folders, and keeps it as
 files are added, edited, renamed and deleted. Links are TLS 1.3 and nodes
 are trusted by ID or by a shared cluster key; syncctl also speaks
 Syncthing's protocol (BEP), so it can join existing Syncthing devices.
 .
 This package runs syncctl as the systemd service synckit, as the system
 user synckit, syncing /var/lib/synckit/Sync (settings in
 /etc/synckit/config.yaml), and ships synckit@.service for a user's own
 folder, the syncctl(1) man page and shell completions.
EOF
(cd "$T" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | sort | xargs md5sum) > "$T/DEBIAN/md5sums"

# Every file's date is the commit's, so the archive depends only on its contents.
find "$T" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
chmod -R u=rwX,go=rX "$T"
chmod 0755 "$T/DEBIAN/postinst" "$T/DEBIAN/prerm" "$T/DEBIAN/postrm" "$BIN"

mkdir -p dist
DEB="dist/${PKG}_${VERSION}_${ARCH}.deb"
rm -f dist/"${PKG}"_*_"${ARCH}".deb
dpkg-deb --build --root-owner-group -Zxz "$T" "$DEB" >/dev/null
log "built $DEB ($(du -h --apparent-size "$DEB" | cut -f1))"

# lintian takes a minute or two on this binary: only when asked (LINTIAN=1). Accepted tags
# are in packaging/deb/lintian-overrides.
if [[ ${LINTIAN:-0} == 1 ]]; then
    command -v lintian >/dev/null || { log "LINTIAN=1 but lintian is not installed (apt-get install lintian)"; exit 1; }
    lintian --tag-display-limit 0 "$DEB" >&2 || log "lintian reported problems (above)"
fi
echo "$ROOT/$DEB"
