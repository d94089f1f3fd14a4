#!/bin/sh
# kvminfo-hook-relay: this hook is kvminfo's (deploy/cleanup removes it and kvminfo.d/).
# NFD hook (source.d, NFD <= 0.16), installed by kvminfo's hook-relay
# DaemonSet. nfd-worker's image has no Python, so this only relays the
# labels `kvminfo features-file` wrote next to it: key=value lines, with
# comments and the expiry directive removed (old NFD hook parsers do not
# know them) after checking the expiry here. Missing, unreadable or
# expired data: no labels, one line on stderr (NFD logs it), exit 0.
data=${KVMINFO_RELAY_FILE:-${0%/*}/kvminfo.d/labels}
if [ ! -r "$data" ]; then
    echo "kvminfo relay: $data missing or unreadable: is the kvminfo-hook-relay DaemonSet running on this node?" >&2
    exit 0
fi
expiry=$(sed -n 's/^#[[:space:]]*+expiry-time=//p' "$data" | head -n 1)
if [ -n "$expiry" ]; then
    # 2026-01-02T03:04:05Z -> "2026-01-02 03:04:05", which GNU and busybox date both parse as UTC with -u
    expires=$(date -u -d "$(printf '%s' "$expiry" | sed 's/T/ /; s/Z$//')" +%s 2>/dev/null)
    if [ -z "$expires" ]; then
        echo "kvminfo relay: $data: cannot read expiry-time '$expiry'; relaying nothing" >&2
        exit 0
    fi
    if [ "$(date -u +%s)" -ge "$expires" ]; then
        echo "kvminfo relay: $data expired at $expiry; relaying nothing (is the writer stuck?)" >&2
        exit 0
    fi
fi
grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$data"
exit 0
