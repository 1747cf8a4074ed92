#!/usr/bin/env bash
# Dawn (the Node tests' WebGPU) refuses lavapipe older than Mesa 25, and Debian 12 ships 22.3.6,
# which the native tests keep using (Mesa 25's lavapipe runs them several times slower). This
# unpacks Debian's bookworm-backports lavapipe (25.0.7) into target/lavapipe25/ for the Node tests
# only; web/test.sh points Dawn at it. Needs root for apt (CI); on a machine whose own Mesa is
# 25 or newer, skip it.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/target/lavapipe25"
[ -f "$out/lvp_icd.json" ] && exit 0
if ! apt-cache policy mesa-vulkan-drivers | grep -q bpo12; then
    cat > /etc/apt/sources.list.d/chunkwise-backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update
fi
rm -rf "$out" && mkdir -p "$out/debs"
(cd "$out/debs" && apt-get download mesa-vulkan-drivers/bookworm-backports \
    libdrm2/bookworm-backports libdrm-amdgpu1/bookworm-backports)
for deb in "$out"/debs/*.deb; do dpkg -x "$deb" "$out/root"; done
cat > "$out/lvp_icd.json" <<JSON
{"file_format_version": "1.0.0",
 "ICD": {"api_version": "1.4.305", "library_path": "$out/root/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so"}}
JSON
echo "lavapipe 25 for Dawn in $out"
