#!/usr/bin/env bash
# Regenerates Sources/ProtocolBEP/Generated/bep.pb.swift from Proto/bep.proto.
#
# Not part of the build or CI: the generated file is committed, because building
# swift-protobuf's code generator takes about ten minutes. Run this only after changing the
# .proto file. Needs Debian's protobuf-compiler (protoc); builds protoc-gen-swift from the same
# swift-protobuf version the package depends on, in .build-protoc (kept out of git).
set -euo pipefail
cd "$(dirname "$0")/.."
version=1.39.0
work=.build-protoc
if ! command -v protoc >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null
fi
if [ ! -x "$work/plugin/.build/release/protoc-gen-swift" ]; then
    rm -rf "$work/plugin"
    mkdir -p "$work"
    git clone -q --depth 1 --branch "$version" https://github.com/apple/swift-protobuf.git "$work/plugin"
    (cd "$work/plugin" && swift build -c release --product protoc-gen-swift)
fi
mkdir -p Sources/ProtocolBEP/Generated
protoc --plugin=protoc-gen-swift="$work/plugin/.build/release/protoc-gen-swift" \
    --swift_out=Sources/ProtocolBEP/Generated --swift_opt=Visibility=Public \
    --proto_path=Proto Proto/bep.proto
echo "wrote Sources/ProtocolBEP/Generated/bep.pb.swift"
