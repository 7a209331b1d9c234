#!/bin/sh
# pciehp-exporter: run the zipapp with the Python 3 this image has (3.6 or newer, stdlib only):
# `python3` on the PATH, else RHEL 8's /usr/libexec/platform-python (python3 is not installed there
# by default, but the platform interpreter always is).
PYZ=/usr/lib/pciehp-exporter/pciehp-exporter.pyz
for py in python3 /usr/libexec/platform-python; do
    if command -v "$py" >/dev/null 2>&1; then
        exec "$py" "$PYZ" "$@"
    fi
done
echo "pciehp-exporter: no python3 on PATH and no /usr/libexec/platform-python" >&2
exit 127
